"""Independent SynthAV analysers: signal processing only, no learned model.

Audio (mono waveform at 22050 Hz):
  notes are segmented from a short-time RMS envelope (frame 256, hop 64 samples); a segment starts
  where the envelope rises above max(0.01, 0.1 * peak, 2.5 * noise floor) or jumps by >= 10 dB within 60 ms after at
  least 150 ms of the previous note; onset = first frame reaching half the segment's sustain level;
  loudness = median frame RMS over the frames above half the segment peak, classed against
  LEVEL_RMS at the geometric midpoints (+-3 dB); pitch = the strongest spectral peak in
  200..600 Hz of a Hann-windowed, zero-padded FFT of the sustain (with a sub-octave check),
  snapped to the nearest C-major note; timbre = nearest template of log10(A_h / A_1), h = 2..8
  (floored at 0.01), against sine / triangle (odd 1/n^2) / square (odd 1/n) / sawtooth (all 1/n).

Images (float [H, W, 3] in [0, 1]):
  object pixels = saturation > 0.45 and value > 0.2 (the background is kept below 0.12);
  8-connected components of at least 10 px; hue = saturation-weighted circular mean -> nearest of
  the 8 hues. Each component gets a soft mask alpha from its chroma (max - min of RGB, which mixes
  linearly between background and object): (chroma - background median) / (object's 90th
  percentile - background median), clipped to [0, 1], within 2 px of the component. Shape = the
  best soft-IoU template: for each of the 4 shapes, the shape with alpha's area and centroid,
  sharp or blurred by 0.8 / 1.6 px (so blurry decoder output still classifies). Size = the fitted
  template's extent (bounding-box width) against 10 / 14.1 / 20 px at the geometric midpoints;
  column = the fitted centre x // (W / 4). Fill ratio, solidity and centroid drop are reported
  for diagnostics only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .world import (CENTROID_DROP, COLUMN_WIDTH, HUES_DEG, IMAGE_SIZE, LEVEL_RMS, N_COLUMNS, NOTE_HZ,
                    SAMPLE_RATE, SHAPES, SIZE_EXTENT_PX, STAR_INNER, coverage)

# ---------------------------------------------------------------------------------------------
# audio

ENV_FRAME = 256
ENV_HOP = 64
ABS_FLOOR = 0.01            # RMS below this is silence (-40 dBFS)
REL_FLOOR = 0.1             # ... and below 0.1 x the clip's peak envelope (-20 dB)
NOISE_MARGIN = 2.5          # ... and below 8 dB above the noise floor (20th percentile of the envelope)
MIN_NOTE_S = 0.05
MIN_GAP_S = 0.15            # a new onset inside an active run: at least this long after the last
RISE_RATIO = 3.16           # ... and a 10 dB rise within RISE_S
RISE_S = 0.06
F0_RANGE = (200.0, 600.0)
N_HARMONICS = 8
HARM_FLOOR = 0.01

_LEVEL_EDGES = tuple(math.sqrt(a * b) for a, b in zip(LEVEL_RMS[:-1], LEVEL_RMS[1:]))


def _timbre_templates() -> np.ndarray:
    n = np.arange(2, N_HARMONICS + 1, dtype=np.float64)
    odd = n % 2 == 1
    t = np.stack([np.zeros_like(n), np.where(odd, 1 / n ** 2, 0), np.where(odd, 1 / n, 0), 1 / n])
    return np.log10(np.maximum(t, HARM_FLOOR))


_TIMBRE_TEMPLATES = _timbre_templates()


@dataclass
class Note:
    onset_s: float
    end_s: float
    f0_hz: float
    pitch: int              # index into NOTE_NAMES (nearest C-major note)
    pitch_err_cents: float  # f0 relative to that note
    timbre: int             # index into TIMBRES
    harmonics: tuple        # A_h / A_1 for h = 1..8
    rms: float
    loudness: int           # index into LOUDNESS
    energy: float           # sum of squares over the segment (ranks notes by strength)


def to_mono_numpy(wave, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Any [T], [1, T] or [C, T] waveform (numpy or torch) -> float64 mono at 22050 Hz."""
    if hasattr(wave, "detach"):
        wave = wave.detach().float().cpu().numpy()
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"synthav: expected a waveform [T] or [C, T], got shape {tuple(x.shape)}")
    if int(sr) != SAMPLE_RATE:
        import torch
        import torchaudio
        x = torchaudio.functional.resample(torch.from_numpy(x), int(sr), SAMPLE_RATE).numpy()
    return np.nan_to_num(x)


def rms_envelope(x: np.ndarray, frame: int = ENV_FRAME, hop: int = ENV_HOP) -> np.ndarray:
    """Centred frame RMS; frame k is centred on sample k * hop."""
    c = np.concatenate([[0.0], np.cumsum(np.concatenate([np.zeros(frame // 2), x * x, np.zeros(frame // 2)]))])
    starts = np.arange(0, len(x), hop)
    return np.sqrt(np.maximum((c[starts + frame] - c[starts]) / frame, 0.0))


def _segments(env: np.ndarray, sr: int) -> list[tuple[int, int]]:
    peak = float(env.max()) if len(env) else 0.0
    if peak < ABS_FLOOR:
        return []
    floor = float(np.percentile(env, 20))   # most of a SynthAV clip is silence: its noise floor
    thr = max(ABS_FLOOR, REL_FLOOR * peak, NOISE_MARGIN * floor)
    active = env > thr
    fps = sr / ENV_HOP
    rise = max(1, int(round(RISE_S * fps)))
    min_gap = int(round(MIN_GAP_S * fps))
    segs: list[tuple[int, int]] = []
    k, n = 0, len(env)
    while k < n:
        if not active[k]:
            k += 1
            continue
        s = k
        while k < n and active[k]:
            k += 1
        e = k  # run [s, e)
        starts = [s]
        for j in range(s + min_gap, e):
            if j - starts[-1] < min_gap:
                continue
            lo = env[max(s, j - rise):j + 1].min()
            if env[j] >= RISE_RATIO * lo and env[j] >= thr:
                # the rise's foot: the minimum just before it
                foot = max(s, j - rise) + int(np.argmin(env[max(s, j - rise):j + 1]))
                if foot - starts[-1] >= min_gap:
                    starts.append(foot)
        bounds = starts + [e]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if (b - a) / fps >= MIN_NOTE_S:
                segs.append((a, b))
    return segs


def _spectrum_peak(mag: np.ndarray, freqs: np.ndarray, f: float, rel: float = 0.025) -> float:
    lo, hi = np.searchsorted(freqs, [f * (1 - rel), f * (1 + rel)])
    return float(mag[lo:hi + 1].max()) if hi >= lo and lo < len(mag) else 0.0


def classify_level(rms: float) -> int:
    return int(np.searchsorted(_LEVEL_EDGES, rms))


def nearest_note(f0: float) -> tuple[int, float]:
    cents = 1200 * np.log2(max(f0, 1e-6) / np.asarray(NOTE_HZ))
    i = int(np.argmin(np.abs(cents)))
    return i, float(cents[i])


def classify_timbre(ratios) -> int:
    v = np.log10(np.maximum(np.asarray(ratios, dtype=np.float64)[1:N_HARMONICS], HARM_FLOOR))
    return int(np.argmin(np.abs(_TIMBRE_TEMPLATES - v[None, :]).sum(axis=1)))


def analyse_segment(x: np.ndarray, onset_s: float, end_s: float, sr: int = SAMPLE_RATE):
    """f0, pitch, cents, timbre, harmonic ratios of the sustain of one note."""
    a = int((onset_s + 0.03) * sr)
    b = int(min(end_s - 0.03, onset_s + 0.33) * sr)
    if b - a < int(0.04 * sr):
        a, b = int(onset_s * sr), max(int(end_s * sr), int(onset_s * sr) + 16)
    seg = x[a:b]
    nfft = 1 << 15
    while nfft < 2 * len(seg):
        nfft <<= 1
    mag = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), nfft))
    freqs = np.fft.rfftfreq(nfft, 1 / sr)
    lo, hi = np.searchsorted(freqs, F0_RANGE)
    if mag[lo:hi].max() <= 0:
        return 0.0, 0, 0.0, 0, (1.0,) + (0.0,) * (N_HARMONICS - 1)
    k = lo + int(np.argmax(mag[lo:hi]))
    if 1 <= k < len(mag) - 1:   # parabolic interpolation on log magnitude
        y0, y1, y2 = np.log(mag[k - 1:k + 2] + 1e-12)
        d = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if (y0 - 2 * y1 + y2) != 0 else 0.0
        f0 = float(freqs[k] + d * (freqs[1] - freqs[0]))
    else:
        f0 = float(freqs[k])
    if f0 / 2 >= F0_RANGE[0] and _spectrum_peak(mag, freqs, f0 / 2) > 0.25 * mag[k]:
        f0 = f0 / 2  # a strong sub-octave: the peak was the 2nd harmonic
    a1 = _spectrum_peak(mag, freqs, f0)
    ratios = [1.0] + [(_spectrum_peak(mag, freqs, h * f0) / a1 if a1 > 0 and h * f0 < sr / 2 else 0.0)
                      for h in range(2, N_HARMONICS + 1)]
    pitch, cents = nearest_note(f0)
    return f0, pitch, cents, classify_timbre(ratios), tuple(float(r) for r in ratios)


def detect_notes(wave, sr: int = SAMPLE_RATE) -> list[Note]:
    """All notes in a clip, in time order."""
    x = to_mono_numpy(wave, sr)
    sr = SAMPLE_RATE
    env = rms_envelope(x)
    notes = []
    for s, e in _segments(env, sr):
        seg_env = env[s:e]
        top = seg_env[seg_env >= 0.5 * seg_env.max()]
        level = float(np.median(top))
        # onset: first frame (searching from the segment's foot) reaching half the sustain level
        k = s + int(np.argmax(seg_env >= 0.5 * level))
        onset_s = k * ENV_HOP / sr
        end_s = e * ENV_HOP / sr
        f0, pitch, cents, timbre, ratios = analyse_segment(x, onset_s, end_s, sr)
        energy = float((seg_env ** 2).sum())
        notes.append(Note(onset_s, end_s, f0, pitch, cents, timbre, ratios, level, classify_level(level), energy))
    return notes


# ---------------------------------------------------------------------------------------------
# images

SAT_THRESHOLD = 0.45
VAL_THRESHOLD = 0.2
MIN_AREA = 10
TEMPLATE_BLURS = (0.0, 0.8, 1.6)


def _area_factors() -> tuple:
    """Area / extent^2 of each shape (extent = bounding-box width)."""
    s = math.sin(math.radians(36))
    ro = 0.5 / math.sin(math.radians(72))
    return (math.pi / 4, math.sqrt(3) / 4, 1.0, 5 * ro * ro * STAR_INNER * s)


AREA_FACTORS = _area_factors()
_SIZE_EDGES = tuple(math.sqrt(a * b) for a, b in zip(SIZE_EXTENT_PX[:-1], SIZE_EXTENT_PX[1:]))


@dataclass
class DetectedObject:
    hue_deg: float
    colour: int
    shape: int
    size: int
    column: int
    cx: float
    cy: float
    area: int
    extent: float      # shape-normalised size estimate in px
    fill: float
    solidity: float
    drop: float        # centroid height within the bounding box (triangle ~0.67, others ~0.5)
    iou: float         # soft IoU of the best template (1 = a perfect match)


def to_hwc_numpy(image) -> np.ndarray:
    """[H, W, 3] or [3, H, W] (numpy or torch, float in [0, 1] or uint8) -> float64 [H, W, 3]."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    x = np.asarray(image)
    if x.dtype == np.uint8:
        x = x.astype(np.float64) / 255.0
    x = x.astype(np.float64)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"synthav: expected an image [H, W, 3] or [3, H, W], got shape {tuple(x.shape)}")
    return np.clip(np.nan_to_num(x), 0.0, 1.0)


def rgb_to_hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    mx = img.max(axis=-1)
    mn = img.min(axis=-1)
    d = mx - mn
    s = np.where(mx > 0, d / np.maximum(mx, 1e-12), 0.0)
    dd = np.maximum(d, 1e-12)
    h = np.where(mx == r, (g - b) / dd % 6, np.where(mx == g, (b - r) / dd + 2, (r - g) / dd + 4)) * 60.0
    return np.where(d > 0, h, 0.0), s, mx


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labelling by min-label propagation; labels 1..n, 0 = background."""
    h, w = mask.shape
    big = h * w + 1
    lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        m = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                m = np.minimum(m, p[dy:dy + h, dx:dx + w])
        m = np.where(mask, m, big)
        if np.array_equal(m, lab):
            break
        lab = m
    uniq = np.unique(lab[mask])
    out = np.zeros((h, w), dtype=np.int64)
    for i, u in enumerate(uniq, 1):
        out[lab == u] = i
    return out, len(uniq)


def _hull_area(points: np.ndarray) -> float:
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def classify_hue(hue_deg: float) -> int:
    d = np.abs((hue_deg - np.asarray(HUES_DEG) + 180.0) % 360.0 - 180.0)
    return int(np.argmin(d))


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    i = np.arange(n)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (each output pixel a normalised weighted mean of the patch)."""
    if sigma <= 0:
        return x
    return _blur_matrix(x.shape[0], sigma) @ x @ _blur_matrix(x.shape[1], sigma).T


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    p = np.pad(mask, r)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + h, dx:dx + w]
    return out


def fit_shape(alpha: np.ndarray, x0: int, y0: int) -> tuple[int, float, float, float, float]:
    """Template matching of a soft object mask `alpha` (a patch whose top-left pixel is (x0, y0)):
    for each shape, the template with alpha's area and centroid, blurred by 0 / 0.8 / 1.6 px;
    returns (shape, extent, box centre x, box centre y, soft IoU) of the best match."""
    h, w = alpha.shape
    area = float(alpha.sum())
    yy, xx = np.mgrid[0:h, 0:w]
    mx = float((alpha * (xx + 0.5)).sum() / area) + x0
    my = float((alpha * (yy + 0.5)).sum() / area) + y0
    best = (0, 0.0, mx, my, -1.0)
    for shape in range(len(SHAPES)):
        extent = math.sqrt(area / AREA_FACTORS[shape])
        cy = my - CENTROID_DROP[shape] * extent
        cov = coverage(shape, extent, mx, cy, x0, y0, w, h, ss=4)
        for sigma in TEMPLATE_BLURS:
            t = _blur(cov, sigma)
            iou = float(np.minimum(t, alpha).sum() / max(np.maximum(t, alpha).sum(), 1e-9))
            if iou > best[4]:
                best = (shape, extent, mx, cy, iou)
    return best


def detect_objects(image) -> list[DetectedObject]:
    """Saturated objects in an image, left to right. Images that are not 64 px wide are analysed
    in their own pixel units, sizes rescaled to the 64 px world."""
    img = to_hwc_numpy(image)
    hgt, wid = img.shape[:2]
    scale = IMAGE_SIZE / wid
    hue, sat, val = rgb_to_hsv(img)
    chroma = img.max(axis=-1) - img.min(axis=-1)
    mask = (sat > SAT_THRESHOLD) & (val > VAL_THRESHOLD)
    labels, n = connected_components(mask)
    keep = [i for i in range(1, n + 1) if (labels == i).sum() * scale * scale >= MIN_AREA]
    near = _dilate(mask, 2)
    bg_chroma = float(np.median(chroma[~near])) if (~near).any() else 0.0
    out = []
    for i in keep:
        comp = labels == i
        ys, xs = np.nonzero(comp)
        area = len(xs)
        w = xs.max() - xs.min() + 1
        h = ys.max() - ys.min() + 1
        fill = area / float(w * h)
        rows = np.unique(ys)   # hull of the pixel squares: only each row's end pixels matter
        lo = np.full(hgt, wid, dtype=np.int64)
        hi = np.full(hgt, -1, dtype=np.int64)
        np.minimum.at(lo, ys, xs)
        np.maximum.at(hi, ys, xs)
        ex = np.concatenate([lo[rows], hi[rows] + 1])
        ey = np.concatenate([rows, rows])
        corners = np.concatenate([np.stack([ex, ey + dy], 1) for dy in (0, 1)])
        hull = _hull_area(corners)
        solidity = area / hull if hull > 0 else 1.0
        drop = (ys.mean() + 0.5 - ys.min()) / h
        wt = sat[ys, xs]
        ang = np.radians(hue[ys, xs])
        hue_deg = float(np.degrees(np.arctan2((wt * np.sin(ang)).sum(), (wt * np.cos(ang)).sum())) % 360.0)
        # soft mask: chroma mixes linearly between background and object
        region = _dilate(comp, 2) & ~(mask & ~comp)
        c_obj = float(np.percentile(chroma[comp], 90))
        alpha = np.clip((chroma - bg_chroma) / max(c_obj - bg_chroma, 1e-3), 0.0, 1.0) * region
        pad = 4
        x0, x1 = max(0, xs.min() - pad), min(wid, xs.max() + 1 + pad)
        y0, y1 = max(0, ys.min() - pad), min(hgt, ys.max() + 1 + pad)
        shape, extent, cx, cy, iou = fit_shape(alpha[y0:y1, x0:x1], x0, y0)
        extent *= scale
        size = int(np.searchsorted(_SIZE_EDGES, extent))
        column = int(min(N_COLUMNS - 1, max(0, cx * scale // COLUMN_WIDTH)))
        out.append(DetectedObject(hue_deg, classify_hue(hue_deg), shape, size, column, cx * scale,
                                  cy * scale, area, extent, fill, solidity, drop, iou))
    out.sort(key=lambda o: o.cx)
    return out
