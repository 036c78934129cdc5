"""Saving audio as WAV (the host's own SaveAudio writes FLAC/MP3/Opus only)."""

import os
import wave

import numpy as np
from comfy_api.latest import io, ui

from .socket_types import category


def write_wav_atomic(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    """Writes float audio [C, T] in -1..1 as 16-bit PCM WAV, through a temporary file."""
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767.0).round().astype("<i2")
    tmp = path + ".partial"
    try:
        with wave.open(tmp, "wb") as f:
            f.setnchannels(pcm.shape[0])
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(pcm.T.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class SaveAudioWAV(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_SaveAudioWAV",
            display_name="Save Audio (WAV)",
            category=category("output"),
            description="Writes each clip of the batch as a 16-bit PCM WAV file at the audio's own sample rate.",
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
        if not bool(waveform.isfinite().all()):
            raise ValueError("Save Audio (WAV): the audio contains NaN or infinite samples; nothing was written")
        out_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        results = []
        for i, clip in enumerate(waveform.float().cpu().numpy()):
            file = f"{name}_{counter + i:05}_.wav"
            write_wav_atomic(os.path.join(out_dir, file), clip, audio["sample_rate"])
            results.append(ui.SavedResult(file, subfolder, io.FolderType.output))
        return io.NodeOutput(ui=ui.SavedAudios(results))
