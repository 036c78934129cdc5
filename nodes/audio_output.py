"""Saving audio as WAV (the host's own SaveAudio writes FLAC/MP3/Opus only), and the previews the
editor extension (web/js/audiovisual.js) shows on the pack's audio and mel nodes.

Preview ui entries (sent to the editor in the node's "executed" message, kept in the history):
  "audio":          [{filename, subfolder, type}]  WAV files (the host's own audio entry format)
  "av_spectrogram": [{filename, subfolder, type, seconds, sample_rate_hz, channels}]  PNG pictures
                    of the SpecVQGAN mel (low frequencies at the bottom), one per clip
"""

import os
import uuid
import wave

import numpy as np
import torch
from comfy_api.latest import io, ui

from .socket_types import category

MAX_PREVIEW_CLIPS = 8
"""Previews are written for the first clips of a batch only."""


WAV_BLOCK_SAMPLES = 1 << 20
"""Samples per channel converted to 16-bit at a time: an hour of audio is written at the memory of 24 s."""

PREVIEW_BLOCK_S = 30.0
MAX_PREVIEW_FRAMES = 4096
"""A clip longer than one block is analysed block by block for its spectrogram picture, and the mel frames
averaged in time so that the picture of the whole clip is at most this many frames wide (an hour of audio
at once took gigabytes of STFT for a picture 310,000 frames wide)."""


def write_wav_atomic(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    """Writes float audio [C, T] in -1..1 as 16-bit PCM WAV, through a temporary file, WAV_BLOCK_SAMPLES at a time."""
    tmp = path + ".partial"
    try:
        with wave.open(tmp, "wb") as f:
            f.setnchannels(waveform.shape[0])
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            for start in range(0, waveform.shape[-1], WAV_BLOCK_SAMPLES):
                block = waveform[:, start:start + WAV_BLOCK_SAMPLES]
                f.writeframes((np.clip(block, -1.0, 1.0) * 32767.0).round().astype("<i2").T.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_png_atomic(path: str, picture: torch.Tensor) -> None:
    from PIL import Image

    tmp = path + ".partial"
    try:
        Image.fromarray((picture.clamp(0, 1) * 255).round().byte().numpy()).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _temp_name(stem: str, suffix: str) -> tuple[str, str]:
    """(full path, file name) of a new file in the host's temp folder (the host empties it at start-up)."""
    import folder_paths

    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    name = f"av_{stem}_{uuid.uuid4().hex[:10]}{suffix}"
    return os.path.join(folder, name), name


def spectrogram_previews(mel01: torch.Tensor, sample_rate_hz: int, hop_samples: int, channels: int | None = None) -> list[dict]:
    """Writes a picture of each mel [B, n_mels, frames] (0..1) to the temp folder; returns ui entries."""
    from ..audio.mel_frontend import mel_to_picture

    entries = []
    for mel in mel01[:MAX_PREVIEW_CLIPS].detach().float().cpu():
        path, name = _temp_name("spectrogram", ".png")
        _write_png_atomic(path, mel_to_picture(mel)[0])
        entry = {"filename": name, "subfolder": "", "type": "temp",
                 "seconds": round(mel.shape[-1] * hop_samples / sample_rate_hz, 3), "sample_rate_hz": int(sample_rate_hz)}
        if channels is not None:
            entry["channels"] = int(channels)
        entries.append(entry)
    return entries


def audio_spectrograms(audio: dict) -> list[dict]:
    """Spectrogram ui entries of AUDIO, through the pack's mel front end; [] when the clip cannot be analysed."""
    from ..audio.mel_frontend import SPECVQGAN_MEL, waveform_to_mel
    from ..audio.prepare import prepare_waveform

    waveform = audio["waveform"][:MAX_PREVIEW_CLIPS]
    rate = audio["sample_rate"]
    block = max(1, round(PREVIEW_BLOCK_S * rate)) if isinstance(rate, (int, float)) and rate > 0 else waveform.shape[-1]
    pool = max(1, -(-int(waveform.shape[-1] / rate * SPECVQGAN_MEL.frames_per_second) // MAX_PREVIEW_FRAMES)) \
        if waveform.shape[-1] > block else 1
    parts = []
    for start in range(0, waveform.shape[-1], block):
        try:
            mono = prepare_waveform(waveform[..., start:start + block], rate, SPECVQGAN_MEL.sample_rate_hz, what="preview")
        except ValueError:
            return []  # a preview never fails the node; the node itself validates its input
        with torch.inference_mode():
            mel = waveform_to_mel(mono)
        parts.append(torch.nn.functional.avg_pool1d(mel, pool, ceil_mode=True) if pool > 1 else mel)
    mel01 = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    entries = spectrogram_previews(mel01, SPECVQGAN_MEL.sample_rate_hz, SPECVQGAN_MEL.hop_samples, channels=waveform.shape[1])
    for entry in entries:  # the length and rate of the audio itself, not of the analysis
        entry["seconds"] = round(waveform.shape[-1] / audio["sample_rate"], 3)
        entry["sample_rate_hz"] = int(audio["sample_rate"])
    return entries


def audio_preview_ui(audio: dict) -> dict:
    """ui of a node that makes AUDIO without saving it: temp WAVs to play and their spectrograms."""
    entries = []
    for clip in audio["waveform"][:MAX_PREVIEW_CLIPS].float().cpu().numpy():
        path, name = _temp_name("audio", ".wav")
        write_wav_atomic(path, clip, audio["sample_rate"])
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return {"audio": entries, "av_spectrogram": audio_spectrograms(audio)}


def mel_preview_ui(mel) -> dict:
    """ui of a node that makes a mel (payloads.MelSpectrogram): its picture."""
    return {"av_spectrogram": spectrogram_previews(mel.mel01, mel.sample_rate_hz, mel.hop_samples)}


class SaveAudioWAV(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_SaveAudioWAV",
            display_name="Save Audio (WAV)",
            category=category("output"),
            description="Writes each clip of the batch as a 16-bit PCM WAV file at the audio's own sample rate, "
                        "and shows a player and the spectrogram on the node.",
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to save."),
                io.String.Input("filename_prefix", default="audiovisual/audio", tooltip="File name prefix; may contain a subfolder."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio, filename_prefix) -> io.NodeOutput:
        import folder_paths

        waveform = audio["waveform"]
        if waveform.ndim != 3 or waveform.shape[-1] == 0:
            raise ValueError(f"Save Audio (WAV): expected audio [batch, channels, samples] with samples, got shape {tuple(waveform.shape)}")
        if not all(bool(waveform[..., s:s + WAV_BLOCK_SAMPLES].isfinite().all()) for s in range(0, waveform.shape[-1], WAV_BLOCK_SAMPLES)):
            raise ValueError("Save Audio (WAV): the audio contains NaN or infinite samples; nothing was written")
        output_dir = os.path.abspath(folder_paths.get_output_directory())
        folder = os.path.abspath(os.path.join(output_dir, os.path.dirname(os.path.normpath(filename_prefix))))
        if os.path.isabs(filename_prefix) or os.path.commonpath([output_dir, folder]) != output_dir:
            raise ValueError(f"Save Audio (WAV): filename_prefix '{filename_prefix}' points outside the output folder; "
                             "give a file name, optionally with subfolders, inside it")
        out_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
        results = []
        for i, clip in enumerate(waveform.float().cpu().numpy()):
            file = f"{name}_{counter + i:05}_.wav"
            write_wav_atomic(os.path.join(out_dir, file), clip, audio["sample_rate"])
            results.append(ui.SavedResult(file, subfolder, io.FolderType.output))
        return io.NodeOutput(ui={**ui.SavedAudios(results).as_dict(), "av_spectrogram": audio_spectrograms(audio)})
