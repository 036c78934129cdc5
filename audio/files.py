"""Reading audio files from disk (training data folders): PCM WAV through the standard library,
everything else (and float WAV) through PyAV, which the host already depends on."""

from __future__ import annotations

import os
import wave

import numpy as np
import torch

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")


class _NoAudioStream(Exception):
    pass


def read_audio_file(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(waveform [C, T] float32 in -1..1, sample rate in Hz) of an audio file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable or empty file (the message names it).
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such audio file")
    if path.lower().endswith(".wav"):
        try:
            return _read_pcm_wav(path)
        except (wave.Error, EOFError, ValueError):
            pass  # float or compressed WAV: PyAV reads it
    try:
        import av
    except ImportError as error:
        raise ValueError(f"{name}: reading this format needs PyAV (pip install av); PCM .wav needs nothing") from error
    try:
        with av.open(path) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise _NoAudioStream()
            rate = int(stream.rate or stream.codec_context.sample_rate)
            chunks = []
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if array.dtype.kind in "iu":
                    array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
                channels = len(frame.layout.channels)
                if frame.format.is_planar:
                    array = array.reshape(channels, -1)
                else:
                    array = array.reshape(-1, channels).T
                chunks.append(array.astype(np.float32))
    except _NoAudioStream:
        raise ValueError(f"{name}: holds no audio stream") from None
    except Exception as error:  # PyAV raises its own error types (some subclass ValueError)
        raise ValueError(f"{name}: not a readable audio file ({error})") from error
    if not chunks:
        raise ValueError(f"{name}: the file holds no audio samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    if waveform.shape[1] == 0:
        raise ValueError(f"{name}: the file holds no audio samples")
    return waveform, rate


def _read_pcm_wav(path: str) -> tuple[torch.Tensor, int]:
    with wave.open(path, "rb") as handle:
        channels, width, rate, frames = handle.getnchannels(), handle.getsampwidth(), handle.getframerate(), handle.getnframes()
        raw = handle.readframes(frames)
    if frames == 0:
        raise ValueError(f"{os.path.basename(path)}: the file holds no audio samples")
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        values = (bytes3[:, 0].astype(np.int32) | (bytes3[:, 1].astype(np.int32) << 8) | (bytes3[:, 2].astype(np.int32) << 16))
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        data = values.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{os.path.basename(path)}: unsupported WAV sample width {width} bytes")
    return torch.from_numpy(data.reshape(-1, channels).T.copy()), int(rate)
