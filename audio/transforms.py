"""SeeingSounds procedural control: audio transformations and the prompt modifiers that describe them.

The paper controls generation without retraining: a transformation of the input sound (volume,
pitch, mixing two sounds) is mapped by fixed rules to words added to the class caption that
conditions the image. Our rules (the paper publishes none; documented in docs/seeing_sounds.md):

    size steps       = gain_dB / 6 - semitones / 12   (louder -> larger, higher -> smaller)
    brightness steps = semitones / 6                  (higher -> brighter, lower -> darker)
    |steps| < 0.5 -> no word;  0.5 <= |steps| < 2 -> "larger" / "smaller", "brighter" / "darker";
    |steps| >= 2 -> "much larger", "much smaller", "much brighter", "much darker"
    a mix with a clip captioned Y -> "and Y" (composed as "X and Y")

6 dB per size step is a doubling of RMS amplitude, the spacing of SynthAV's three sizes; an octave
(12 semitones) per size step follows "higher -> smaller" in the same proportion.

Transforms (float waveforms [B, C, T], the host's AUDIO layout; every input goes through
audio.prepare.prepare_waveform, so empty, NaN or silent clips are refused with a clear error):

* gain: samples x 10^(dB / 20); nothing is clipped (samples may leave [-1, 1]).
* pitch shift, duration kept: a phase-vocoder time stretch by the pitch ratio r = 2^(n/12)
  (STFT with a Hann window of ~93 ms, hop 1/4 window, identity phase locking), then
  band-limited resampling by r (torchaudio's sinc resampler, via prepare_waveform), so every
  frequency is multiplied by r and the length is unchanged. r is used as the fraction a/b with
  b <= 1000 nearest to it (< 0.1 cent from the exact ratio).
* mix: the second clip is resampled to the first clip's rate, channels are matched (a mono clip
  is spread over the other's channels; otherwise both are downmixed to mono), the shorter is
  zero-padded, and the two are summed at their own levels.
Plain torch (resampling through prepare_waveform); the host is never imported here.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from .prepare import fit_length, prepare_waveform

SIZE_DB_PER_STEP = 6.0
SIZE_SEMITONES_PER_STEP = 12.0
BRIGHTNESS_SEMITONES_PER_STEP = 6.0
WORD_THRESHOLD_STEPS = 0.5
MUCH_THRESHOLD_STEPS = 2.0
MAX_GAIN_DB = 60.0
MAX_SEMITONES = 24.0
MIX_PREFIX = "and "
PITCH_RATIO_MAX_DENOMINATOR = 1000


# ---------------------------------------------------------------------------------------------
# validation


def checked_audio(waveform: torch.Tensor, sample_rate: int, what: str = "audio") -> torch.Tensor:
    """`waveform` as float32 [B, C, T] after prepare_waveform's checks (shape, empty, NaN, silent, rate)."""
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 2:
        waveform = waveform.unsqueeze(0)
    prepare_waveform(waveform, sample_rate, sample_rate, what=what, allow_silent=False)
    return waveform.detach().to(torch.float32)


def _per_channel(waveform: torch.Tensor, sample_rate: int, target_rate: int, what: str) -> torch.Tensor:
    """Every channel of [B, C, T] resampled through prepare_waveform (the one resampling helper)."""
    channels = [prepare_waveform(waveform[:, c:c + 1], sample_rate, target_rate, what=what) for c in range(waveform.shape[1])]
    return torch.stack(channels, dim=1)


# ---------------------------------------------------------------------------------------------
# transforms


def apply_gain(waveform: torch.Tensor, sample_rate: int, gain_db: float) -> torch.Tensor:
    """[B, C, T] x 10^(gain_db / 20). Raises ValueError for a bad clip or |gain_db| > 60."""
    gain_db = float(gain_db)
    if not math.isfinite(gain_db) or abs(gain_db) > MAX_GAIN_DB:
        raise ValueError(f"gain_db: expected a value in -{MAX_GAIN_DB:g}..{MAX_GAIN_DB:g} dB, got {gain_db!r}")
    x = checked_audio(waveform, sample_rate)
    return x * (10.0 ** (gain_db / 20.0))


def pitch_ratio(semitones: float) -> Fraction:
    """2^(semitones/12) as the nearest fraction with denominator <= 1000."""
    return Fraction(2.0 ** (float(semitones) / 12.0)).limit_denominator(PITCH_RATIO_MAX_DENOMINATOR)


def _stft_size(sample_rate: int) -> int:
    """A power of two near 93 ms (2048 samples at 22.05 kHz), at least 256."""
    return max(256, 1 << int(round(math.log2(0.093 * sample_rate))))


def phase_vocoder(spec: torch.Tensor, rate: float, hop: int, n_fft: int) -> torch.Tensor:
    """Time-stretches a complex STFT [rows, bins, frames] by 1/rate with identity phase locking.

    Output frame k reads the input at position k * rate: magnitudes are interpolated linearly;
    the phase of each spectral peak advances by its measured instantaneous frequency times the hop
    (the standard phase vocoder), and every other bin keeps the input's phase offset to its nearest
    peak (Laroche & Dolson 1999). Without the locking, bins of one sinusoid drift out of phase and
    cancel (a sustained tone lost 2/3 of its amplitude in a 2x stretch).
    """
    spec = torch.nn.functional.pad(spec, (0, 2))
    rows, n_bins, frames = spec.shape
    steps = torch.arange(0, frames - 2, rate, dtype=torch.float64)
    i0 = steps.floor().long()
    alpha = (steps - i0).to(spec.real.dtype)
    s0, s1 = spec[..., i0], spec[..., i0 + 1]
    magnitude = (1 - alpha) * s0.abs() + alpha * s1.abs()
    angle0 = s0.angle()
    omega = (2 * math.pi * hop / n_fft) * torch.arange(n_bins, dtype=magnitude.dtype)[:, None]
    advance = s1.angle() - angle0 - omega
    advance = advance - 2 * math.pi * torch.round(advance / (2 * math.pi)) + omega
    # the nearest peak of every bin, per output frame
    below = torch.nn.functional.pad(magnitude[:, :-1], (0, 0, 1, 0), value=-1.0)
    above = torch.nn.functional.pad(magnitude[:, 1:], (0, 0, 0, 1), value=-1.0)
    is_peak = (magnitude > below) & (magnitude >= above)
    index = torch.arange(n_bins)[None, :, None].expand_as(magnitude)
    far = 4 * n_bins
    last = torch.where(is_peak, index, torch.full_like(index, -far)).cummax(dim=1).values
    following = torch.where(is_peak, index, torch.full_like(index, far)).flip(1).cummin(dim=1).values.flip(1)
    nearest = torch.where((index - last) <= (following - index), last, following)
    nearest = torch.where((nearest < 0) | (nearest >= n_bins), index, nearest)
    out_phase = torch.empty_like(magnitude)
    phase = angle0[..., 0]
    for k in range(magnitude.shape[-1]):
        if k > 0:
            phase = phase + advance[..., k - 1]
        peaks = nearest[..., k]
        phase = phase.gather(1, peaks) + angle0[..., k] - angle0[..., k].gather(1, peaks)
        out_phase[..., k] = phase
    return torch.polar(magnitude, out_phase)


def pitch_shift(waveform: torch.Tensor, sample_rate: int, semitones: float) -> torch.Tensor:
    """[B, C, T] with every frequency multiplied by 2^(semitones/12); the length stays T."""
    semitones = float(semitones)
    if not math.isfinite(semitones) or abs(semitones) > MAX_SEMITONES:
        raise ValueError(f"semitones: expected a value in -{MAX_SEMITONES:g}..{MAX_SEMITONES:g}, got {semitones!r}")
    x = checked_audio(waveform, sample_rate)
    ratio = pitch_ratio(semitones)
    if ratio == 1:
        return x.clone()
    batch, channels, length = x.shape
    n_fft = _stft_size(int(sample_rate))
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    flat = x.reshape(batch * channels, length)
    spec = torch.stft(flat, n_fft, hop_length=hop, window=window, return_complex=True, center=True)
    stretched = phase_vocoder(spec, float(1 / ratio), hop, n_fft)
    stretched_length = int(round(length * float(ratio)))
    y = torch.istft(stretched, n_fft, hop_length=hop, window=window, center=True, length=stretched_length)
    # resample by `ratio`: treat the stretched clip as recorded at a Hz and convert it to b Hz
    y = prepare_waveform(y.unsqueeze(1), ratio.numerator, ratio.denominator, what="audio")
    return fit_length(y, length).reshape(batch, channels, length)


def mix(waveform_a: torch.Tensor, rate_a: int, waveform_b: torch.Tensor, rate_b: int) -> torch.Tensor:
    """a + b at a's rate (see the module docstring for channels, lengths and batches)."""
    a = checked_audio(waveform_a, rate_a, "audio")
    b = checked_audio(waveform_b, rate_b, "audio_b")
    b = _per_channel(b, rate_b, rate_a, "audio_b") if int(rate_b) != int(rate_a) else b
    if a.shape[1] != b.shape[1]:
        if a.shape[1] == 1:
            a = a.expand(-1, b.shape[1], -1)
        elif b.shape[1] == 1:
            b = b.expand(-1, a.shape[1], -1)
        else:
            a, b = a.mean(dim=1, keepdim=True), b.mean(dim=1, keepdim=True)
    if a.shape[0] != b.shape[0]:
        if b.shape[0] == 1:
            b = b.expand(a.shape[0], -1, -1)
        elif a.shape[0] == 1:
            a = a.expand(b.shape[0], -1, -1)
        else:
            raise ValueError(f"audio_b: has {b.shape[0]} clips, audio has {a.shape[0]}; expected one clip or as many")
    length = max(a.shape[-1], b.shape[-1])
    return fit_length(a, length) + fit_length(b, length)


# ---------------------------------------------------------------------------------------------
# prompt modifiers


def _degree_word(steps: float, up: str, down: str) -> str | None:
    if abs(steps) < WORD_THRESHOLD_STEPS:
        return None
    word = up if steps > 0 else down
    return f"much {word}" if abs(steps) >= MUCH_THRESHOLD_STEPS else word


def size_steps(gain_db: float, semitones: float) -> float:
    return float(gain_db) / SIZE_DB_PER_STEP - float(semitones) / SIZE_SEMITONES_PER_STEP


def brightness_steps(semitones: float) -> float:
    return float(semitones) / BRIGHTNESS_SEMITONES_PER_STEP


def prompt_modifiers(gain_db: float = 0.0, semitones: float = 0.0, mixed_with: str | None = None) -> list[str]:
    """The phrases that describe a transformation, by the rules of the module docstring:
    [size word], [brightness word], ["and <caption of the mixed-in clip>"] (each only when it applies)."""
    phrases = []
    size = _degree_word(size_steps(gain_db, semitones), "larger", "smaller")
    bright = _degree_word(brightness_steps(semitones), "brighter", "darker")
    phrases += [p for p in (size, bright) if p]
    if mixed_with is not None:
        caption = " ".join(str(mixed_with).split())
        if not caption:
            raise ValueError("caption_b: the mixed-in clip needs its class caption to write 'X and Y'")
        phrases.append(MIX_PREFIX + caption)
    return phrases


def modifiers_text(phrases: list[str]) -> str:
    """Phrases joined as the modifiers STRING ("; " between phrases)."""
    return "; ".join(phrases)


def compose_prompt(caption: str, modifiers: str = "") -> str:
    """The class caption with modifiers: "X and Y" for mixes, then ", word" for each other phrase.

    `modifiers` is a "; "- or newline-separated list of phrases (what the transform node writes, or
    typed by hand); phrases starting with "and " name mixed-in sounds.
    """
    caption = " ".join(str(caption).split()).rstrip(",;")
    if not caption:
        raise ValueError("caption: empty; expected the class caption of the sound, e.g. 'a dog barking'")
    phrases = [" ".join(p.split()) for p in str(modifiers or "").replace("\n", ";").split(";")]
    phrases = [p for p in phrases if p]
    mixes = [p for p in phrases if p.lower().startswith(MIX_PREFIX)]
    words = [p for p in phrases if not p.lower().startswith(MIX_PREFIX)]
    text = caption + "".join(", " + w for w in words)
    for m in mixes:
        text += (", " if words else " ") + m
    return text


ATTACHED_PUNCTUATION = tuple(",.;:!?)")  # a suffix starting with one of these joins without a space


def join_caption(prefix: str, caption: str, suffix: str) -> str:
    """prefix + caption + suffix, one space between the non-empty parts; a suffix that starts with
    punctuation (', early') is attached without a space."""
    text = " ".join(part for part in (prefix.strip(), caption.strip()) if part)
    suffix = suffix.strip()
    if not suffix:
        return text
    if not text:
        return suffix
    return text + suffix if suffix.startswith(ATTACHED_PUNCTUATION) else f"{text} {suffix}"
