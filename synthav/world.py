"""SynthAV: the procedural audio-visual world (scene parameters and the deterministic generator).

A scene is one or two objects on a low-saturation textured background (the background is a silent
distractor). Every visual attribute of an object maps to one audio attribute of its note:

    shape   -> timbre    circle=sine, triangle=triangle wave, square=square wave, star=sawtooth
    colour  -> pitch     8 hues 45 degrees apart -> the 8 notes of C major, C4..C5
    size    -> loudness  small/medium/large -> RMS 0.05/0.1/0.2 (6 dB apart)
    column  -> onset     4 image columns (left..right) -> onset slots 0.10/0.55/1.00/1.45 s

Two objects never share a column, so their notes never overlap in time (each note lasts 0.36 s and
slots are 0.45 s apart): the analysis of a two-object clip is well posed.

Images are float32 [64, 64, 3] in [0, 1]; audio is float32 mono at 22050 Hz, 44800 samples
(2.032 s), so the SpecVQGAN mel front end (centred STFT, hop 256) gives 1 + 44800 // 256 = 176
frames = 11 * 16. Everything is a pure function of the scene (and the scene of its seed):
numpy Generators seeded with ``[seed, stream]``, no global random state.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# constants (the world's tables; README.md documents them)

SAMPLE_RATE = 22050
HOP = 256
N_SAMPLES = 44800                      # 1 + 44800 // 256 = 176 mel frames = 11 * 16
MEL_FRAMES = 1 + N_SAMPLES // HOP
CLIP_S = N_SAMPLES / SAMPLE_RATE       # 2.0317 s
IMAGE_SIZE = 64
N_COLUMNS = 4
COLUMN_WIDTH = IMAGE_SIZE // N_COLUMNS  # 16 px

SHAPES = ("circle", "triangle", "square", "star")
TIMBRES = ("sine", "triangle", "square", "sawtooth")          # index-aligned with SHAPES

COLOURS = ("red", "orange", "lime", "green", "cyan", "blue", "violet", "magenta")
HUES_DEG = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)  # HSV hue of each colour
NOTE_NAMES = ("C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5")   # index-aligned with COLOURS
NOTE_MIDI = (60, 62, 64, 65, 67, 69, 71, 72)
NOTE_HZ = tuple(440.0 * 2.0 ** ((m - 69) / 12.0) for m in NOTE_MIDI)

SIZES = ("small", "medium", "large")
LOUDNESS = ("soft", "moderate", "loud")                        # index-aligned with SIZES
SIZE_EXTENT_PX = (10.0, 10.0 * 2 ** 0.5, 20.0)                   # bounding-box width of the shape
LEVEL_RMS = (0.05, 0.1, 0.2)                                   # sustain RMS of the note

COLUMN_NAMES = ("far left", "centre left", "centre right", "far right")
ONSET_WORDS = ("very early", "early", "late", "very late")      # index-aligned with columns
ONSET_S = (0.10, 0.55, 1.00, 1.45)

OBJ_SAT = 0.85          # objects are saturated ...
OBJ_VAL = 0.95
BG_MAX_SAT = 0.12       # ... the background is not
NOTE_S = 0.36           # note length (attack + hold + release)
ATTACK_S = 0.01
RELEASE_S = 0.06
HARMONIC_FMAX = 7600.0  # band limit (the mel front end's fmax)
X_JITTER_PX = 2.0
SUPERSAMPLE = 4
STAR_INNER = 0.42       # inner / outer radius of the 5-pointed star

ALL_COMBOS = tuple((s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)))


def _index(table: Sequence[str], value, what: str) -> int:
    if isinstance(value, (int, np.integer)):
        if 0 <= int(value) < len(table):
            return int(value)
    elif value in table:
        return table.index(value)
    raise ValueError(f"synthav: {what} {value!r} is not one of {list(table)}")


# ---------------------------------------------------------------------------------------------
# scene parameters


@dataclass(frozen=True)
class SceneObject:
    """One object / note. Indices into SHAPES, COLOURS, SIZES; column 0..3; centre x, y in pixels."""
    shape: int
    colour: int
    size: int
    column: int
    x: float
    y: float

    # audio side of the same object
    @property
    def timbre(self) -> int:
        return self.shape

    @property
    def pitch(self) -> int:
        return self.colour

    @property
    def loudness(self) -> int:
        return self.size

    @property
    def onset_s(self) -> float:
        return ONSET_S[self.column]

    @property
    def f0_hz(self) -> float:
        return NOTE_HZ[self.colour]

    @property
    def combo(self) -> tuple[int, int]:
        return (self.shape, self.colour)

    def image_phrase(self) -> str:
        return f"a {SIZES[self.size]} {COLOURS[self.colour]} {SHAPES[self.shape]} on the {COLUMN_NAMES[self.column]}"

    def audio_phrase(self) -> str:
        return f"a {LOUDNESS[self.size]} {TIMBRES[self.shape]} tone at {NOTE_NAMES[self.colour]}, {ONSET_WORDS[self.column]}"

    def to_dict(self) -> dict:
        return {"shape": SHAPES[self.shape], "colour": COLOURS[self.colour], "size": SIZES[self.size],
                "column": self.column, "x": round(float(self.x), 4), "y": round(float(self.y), 4),
                "note": NOTE_NAMES[self.colour], "timbre": TIMBRES[self.shape],
                "loudness": LOUDNESS[self.size], "onset_s": self.onset_s}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneObject":
        col = int(d["column"])
        if not 0 <= col < N_COLUMNS:
            raise ValueError(f"synthav: column {col} is not in 0..{N_COLUMNS - 1}")
        return cls(_index(SHAPES, d["shape"], "shape"), _index(COLOURS, d["colour"], "colour"),
                   _index(SIZES, d["size"], "size"), col, float(d["x"]), float(d["y"]))


@dataclass(frozen=True)
class Scene:
    """A scene: its seed (drives the background texture and the note phases) and its objects,
    sorted left to right (= in time order)."""
    seed: int
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    def __post_init__(self):
        cols = [o.column for o in self.objects]
        if not 1 <= len(cols) <= 2:
            raise ValueError(f"synthav: a scene has 1 or 2 objects, got {len(cols)}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"synthav: two objects share column {cols}")
        if cols != sorted(cols):
            object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: o.column)))

    def image_caption(self) -> str:
        return " and ".join(o.image_phrase() for o in self.objects)

    def audio_caption(self) -> str:
        return ", and ".join(o.audio_phrase() for o in self.objects)

    def to_dict(self) -> dict:
        return {"seed": int(self.seed), "objects": [o.to_dict() for o in self.objects],
                "image_caption": self.image_caption(), "audio_caption": self.audio_caption()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(int(d["seed"]), tuple(SceneObject.from_dict(o) for o in d["objects"]))


def _place(rng: np.random.Generator, columns: Sequence[int], sizes: Sequence[int]) -> list[tuple[float, float]]:
    """Centres: x = column centre + jitter (kept inside the image), y uniform; the y's are drawn
    again until the bounding boxes of objects in adjacent columns are >= 3 px apart."""
    rs = [SIZE_EXTENT_PX[z] / 2 for z in sizes]
    xs = []
    for col, r in zip(columns, rs):
        centre = col * COLUMN_WIDTH + COLUMN_WIDTH / 2
        xs.append(float(np.clip(centre + rng.uniform(-X_JITTER_PX, X_JITTER_PX), r + 1.0, IMAGE_SIZE - 1.0 - r)))
    for _ in range(1000):
        ys = [float(rng.uniform(r + 2.0, IMAGE_SIZE - 2.0 - r)) for r in rs]
        if all(abs(xs[i] - xs[j]) >= rs[i] + rs[j] + 3 or abs(ys[i] - ys[j]) >= rs[i] + rs[j] + 3
               for i in range(len(xs)) for j in range(i)):
            return [(round(x, 4), round(y, 4)) for x, y in zip(xs, ys)]  # exact JSON round trip
    raise RuntimeError("synthav: could not place the objects")  # p(failure) < 1e-80


def make_scene(seed: int, combos: Sequence[tuple[int, int]] | None = None,
               first_combos: Sequence[tuple[int, int]] | None = None,
               n_objects: int | None = None) -> Scene:
    """The scene of `seed`. (shape, colour) combos are drawn uniformly from `combos` (default: all
    32); with `first_combos`, one object (picked at random) is drawn from those instead. 1 or 2
    objects (p = 1/2 each) in distinct random columns, uniform sizes, x jitter +-2 px, random y."""
    seed = int(seed)
    rng = np.random.default_rng([seed, 0])
    combos = list(combos) if combos is not None else list(ALL_COMBOS)
    n = int(n_objects) if n_objects is not None else int(rng.integers(1, 3))
    if n not in (1, 2):
        raise ValueError(f"synthav: n_objects must be 1 or 2, got {n}")
    columns = sorted(int(c) for c in rng.choice(N_COLUMNS, size=n, replace=False))
    special = int(rng.integers(n)) if first_combos is not None else -1
    attrs = []
    for k in range(n):
        pool = list(first_combos) if k == special else combos
        shape, colour = pool[int(rng.integers(len(pool)))]
        attrs.append((int(shape), int(colour), int(rng.integers(len(SIZES)))))
    centres = _place(rng, columns, [a[2] for a in attrs])
    return Scene(seed, tuple(SceneObject(s, c, z, col, x, y)
                             for (s, c, z), col, (x, y) in zip(attrs, columns, centres)))


# ---------------------------------------------------------------------------------------------
# images


def hsv_to_rgb(h_deg, s, v) -> np.ndarray:
    """Vectorised HSV -> RGB (h in degrees, s and v in [0, 1]); returns [..., 3]."""
    h = (np.asarray(h_deg, dtype=np.float64) % 360.0) / 60.0
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    h, s, v = np.broadcast_arrays(h, s, v)
    c = v * s
    x = c * (1 - np.abs(h % 2 - 1))
    m = v - c
    z = np.zeros_like(c)
    i = np.floor(h).astype(int) % 6
    r = np.choose(i, [c, x, z, z, x, c])
    g = np.choose(i, [x, c, c, x, z, z])
    b = np.choose(i, [z, z, x, c, c, x])
    return np.stack([r + m, g + m, b + m], axis=-1)


def colour_rgb(colour: int) -> np.ndarray:
    return hsv_to_rgb(HUES_DEG[colour], OBJ_SAT, OBJ_VAL)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small [g, g] grid to [size, size] (corners aligned)."""
    g = grid.shape[0]
    t = np.linspace(0, g - 1, size)
    i0 = np.clip(np.floor(t).astype(int), 0, g - 2)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def render_background(seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Low-saturation value-noise texture (saturation <= BG_MAX_SAT), float32 [size, size, 3]."""
    rng = np.random.default_rng([int(seed), 1])
    base = rng.uniform(0.35, 0.65)
    val = (base + 0.15 * _upsample(rng.uniform(-1, 1, (5, 5)), size)
           + 0.07 * _upsample(rng.uniform(-1, 1, (17, 17)), size)
           + 0.02 * rng.uniform(-1, 1, (size, size)))
    # a few soft stripes at a random angle: structure without colour
    ang, freq, ph = rng.uniform(0, np.pi), rng.uniform(0.15, 0.5), rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    val = val + 0.05 * np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)) + ph)
    hue = rng.uniform(0, 360) + 40 * _upsample(rng.uniform(-1, 1, (4, 4)), size)
    sat = rng.uniform(0.0, BG_MAX_SAT * 0.75) + BG_MAX_SAT * 0.25 * (_upsample(rng.uniform(0, 1, (6, 6)), size))
    sat = np.clip(sat, 0.0, BG_MAX_SAT)
    return hsv_to_rgb(hue, sat, np.clip(val, 0.08, 0.92)).astype(np.float32)


def _star_polygon(cx: float, cy: float, r: float) -> np.ndarray:
    ro = r / math.sin(math.radians(72))           # width of the star = 2 r
    cy_poly = cy + ro * (1 - math.cos(math.radians(36))) / 2  # centre its bounding box on cy
    pts = []
    for k in range(10):
        rad = ro if k % 2 == 0 else ro * STAR_INNER
        a = math.radians(-90 + 36 * k)
        pts.append((cx + rad * math.cos(a), cy_poly + rad * math.sin(a)))
    return np.array(pts)


def _inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (py >= min(y1, y2)) & (py < max(y1, y2))
        xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (px < xint)
    return inside


def coverage(shape: int, extent: float, cx: float, cy: float, x0: int = 0, y0: int = 0,
             width: int = IMAGE_SIZE, height: int = IMAGE_SIZE, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Anti-aliased coverage [height, width] in [0, 1] (ss^2 samples per pixel) of one shape whose
    bounding box is `extent` px wide and centred on (cx, cy), over the pixels x0.., y0.."""
    r = extent / 2
    py, px = np.meshgrid(y0 + (np.arange(height * ss) + 0.5) / ss, x0 + (np.arange(width * ss) + 0.5) / ss,
                         indexing="ij")
    dx, dy = px - cx, py - cy
    name = SHAPES[shape]
    if name == "circle":
        m = dx * dx + dy * dy <= r * r
    elif name == "square":
        m = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif name == "triangle":                          # equilateral, pointing up
        h = math.sqrt(3) * r
        t = dy + h / 2                                # 0 at the apex, h at the base
        m = (t >= 0) & (t <= h) & (np.abs(dx) <= r * t / h)
    else:
        m = _inside_polygon(px, py, _star_polygon(cx, cy, r))
    return m.reshape(height, ss, width, ss).mean(axis=(1, 3))


def shape_coverage(shape: int, size: int, cx: float, cy: float, img_size: int = IMAGE_SIZE) -> np.ndarray:
    """Coverage [img_size, img_size] of an object of size class `size` centred on (cx, cy)."""
    return coverage(shape, SIZE_EXTENT_PX[size], cx, cy, 0, 0, img_size, img_size)


# centroid of each shape below its bounding-box centre, as a fraction of the extent
CENTROID_DROP = (0.0, math.sqrt(3) / 12, 0.0,
                 (1 - math.cos(math.radians(36))) / (4 * math.sin(math.radians(72))))


def render_image(scene: Scene, visible: Iterable[int] | None = None) -> np.ndarray:
    """The scene as float32 [64, 64, 3] in [0, 1]. `visible`: indices of the objects to draw
    (default all; used by make_video)."""
    img = render_background(scene.seed).astype(np.float64)
    idx = range(len(scene.objects)) if visible is None else visible
    for i in idx:
        o = scene.objects[i]
        a = shape_coverage(o.shape, o.size, o.x, o.y)[..., None]
        img = img * (1 - a) + colour_rgb(o.colour) * a
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# audio


def harmonic_amplitudes(timbre: int, f0: float, fmax: float = HARMONIC_FMAX) -> np.ndarray:
    """Signed amplitudes of harmonics 1..H (H*f0 < fmax) of the band-limited waveform:
    sine: h1 only; triangle: odd 1/n^2 (alternating sign); square: odd 1/n; sawtooth: all 1/n."""
    n = np.arange(1, max(1, int(fmax // f0)) + 1, dtype=np.float64)
    name = TIMBRES[timbre]
    if name == "sine":
        a = (n == 1).astype(np.float64)
    elif name == "triangle":
        a = np.where(n % 2 == 1, np.where((n // 2) % 2 == 0, 1.0, -1.0) / n ** 2, 0.0)
    elif name == "square":
        a = np.where(n % 2 == 1, 1.0 / n, 0.0)
    else:
        a = np.where(n % 2 == 1, 1.0, -1.0) / n
    return a


def note_envelope(n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Raised-cosine attack (10 ms), flat hold, raised-cosine release (60 ms); NOTE_S long."""
    t = np.arange(n) / sr
    env = np.ones(n)
    a = t < ATTACK_S
    env[a] = 0.5 - 0.5 * np.cos(np.pi * t[a] / ATTACK_S)
    r = t > NOTE_S - RELEASE_S
    env[r] = 0.5 + 0.5 * np.cos(np.pi * np.clip((t[r] - (NOTE_S - RELEASE_S)) / RELEASE_S, 0, 1))
    return env


def synth_note(timbre: int, pitch: int, loudness: int, phase: float = 0.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One note (float64, NOTE_S long) whose sustain RMS is exactly LEVEL_RMS[loudness]."""
    n = int(round(NOTE_S * sr))
    f0 = NOTE_HZ[pitch]
    a = harmonic_amplitudes(timbre, f0)
    t = np.arange(n) / sr
    h = np.arange(1, len(a) + 1)[:, None]
    nz = a != 0
    osc = (a[nz, None] * np.sin(h[nz] * (2 * np.pi * f0 * t[None, :] + phase))).sum(axis=0)
    rms = math.sqrt(float((a ** 2).sum()) / 2)
    return LEVEL_RMS[loudness] * note_envelope(n, sr) * osc / rms


def render_audio(scene: Scene, onsets_s: Sequence[float] | None = None,
                 n_samples: int = N_SAMPLES, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The scene's sound: float32 [n_samples] at `sr`. Each object's note starts at its column's
    onset slot (or at `onsets_s[i]`), with a random (seeded) starting phase."""
    rng = np.random.default_rng([int(scene.seed), 2])
    out = np.zeros(n_samples)
    for i, o in enumerate(scene.objects):
        phase = rng.uniform(0, 2 * np.pi)
        onset = o.onset_s if onsets_s is None else float(onsets_s[i])
        note = synth_note(o.timbre, o.pitch, o.loudness, phase, sr)
        s = int(round(onset * sr))
        if s >= n_samples:
            continue
        e = min(n_samples, s + len(note))
        out[s:e] += note[: e - s]
    return out.astype(np.float32)


def render_images(scenes: Sequence[Scene]) -> np.ndarray:
    return np.stack([render_image(s) for s in scenes])


def render_audios(scenes: Sequence[Scene]) -> np.ndarray:
    return np.stack([render_audio(s) for s in scenes])


# ---------------------------------------------------------------------------------------------
# video


@dataclass
class Video:
    """frames float32 [T, 64, 64, 3]; audio float32 [round(duration_s * sample_rate)];
    object i is drawn from frame ceil(appear_times[i] * fps) on, and its note starts at
    appear_times[i] (a frame time: a multiple of 1 / fps)."""
    frames: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    appear_times: tuple[float, ...]
    scene: Scene


def make_video(seed: int, fps: float = 16.0, duration_s: float = CLIP_S,
               scene: Scene | None = None, appear_times: Sequence[float] | None = None) -> Video:
    """A video of the scene of `seed` (or of `scene`): background only, then each object appears at
    t_i and its note starts at t_i. By default t_i is the object's column onset slot scaled to
    duration_s (so with the default duration the still-image mapping holds), rounded up to the
    next frame time."""
    if fps <= 0 or duration_s <= 0:
        raise ValueError(f"synthav: make_video needs fps > 0 and duration_s > 0, got {fps}, {duration_s}")
    scene = scene if scene is not None else make_scene(seed)
    n_frames = max(1, int(round(duration_s * fps)))
    if appear_times is None:
        raw = [o.onset_s * duration_s / CLIP_S for o in scene.objects]
    else:
        if len(appear_times) != len(scene.objects):
            raise ValueError(f"synthav: appear_times has {len(appear_times)} entries, the scene has {len(scene.objects)} objects")
        raw = [float(t) for t in appear_times]
    frame_idx = [int(math.ceil(t * fps - 1e-9)) for t in raw]
    times = tuple(k / fps for k in frame_idx)
    frames = np.empty((n_frames, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    cache: dict[tuple[int, ...], np.ndarray] = {}
    for f in range(n_frames):
        vis = tuple(i for i, k in enumerate(frame_idx) if f >= k)
        if vis not in cache:
            cache[vis] = render_image(scene, visible=vis)
        frames[f] = cache[vis]
    audio = render_audio(scene, onsets_s=times, n_samples=int(round(duration_s * SAMPLE_RATE)))
    return Video(frames, audio, float(fps), SAMPLE_RATE, times, scene)


def world_config() -> dict:
    """The world's tables, for dataset metadata and model cards."""
    return {"sample_rate": SAMPLE_RATE, "n_samples": N_SAMPLES, "mel_frames": MEL_FRAMES, "hop": HOP,
            "image_size": IMAGE_SIZE, "n_columns": N_COLUMNS, "shapes": list(SHAPES),
            "timbres": list(TIMBRES), "colours": list(COLOURS), "hues_deg": list(HUES_DEG),
            "notes": list(NOTE_NAMES), "note_hz": [round(f, 3) for f in NOTE_HZ],
            "sizes": list(SIZES), "loudness": list(LOUDNESS), "size_extent_px": list(SIZE_EXTENT_PX),
            "level_rms": list(LEVEL_RMS), "columns": list(COLUMN_NAMES), "onset_words": list(ONSET_WORDS),
            "onset_s": list(ONSET_S), "note_s": NOTE_S}
