"""The generated sound put back into its video: a VIDEO whose pictures are the source's, copied without
decoding (audio/soundtrack.py), for the host's Save Video, which copies it once more as it is."""

import os
import uuid

import torch
from comfy_api.latest import InputImpl, io

from ..audio.soundtrack import CannotCopyVideo, write_soundtrack
from .audio_input import audio_input
from . import socket_types as st
from .video_input import video_file_source, video_components


class AddAudioToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_AddAudioToVideo",
            display_name="Add Audio to Video",
            category=st.category("control"),
            description="The video with the sound as its only soundtrack. The pictures are copied as they are (never decoded or "
                        "re-encoded), so any length and resolution costs little memory; Save Video writes the result. The sound "
                        "is kept as it is: make it as long as the video first (the samplers' video input, or Fit Audio to Duration).",
            inputs=[
                io.Video.Input("video", tooltip="The video the sound was made for (e.g. from Load Video)."),
                io.Audio.Input("audio", tooltip="The sound (one clip; mono or stereo; any rate, kept)."),
            ],
            outputs=[io.Video.Output(display_name="video")],
        )

    @classmethod
    def execute(cls, video, audio) -> io.NodeOutput:
        import folder_paths

        node = "Add Audio to Video"
        waveform, rate = audio_input(audio, node)
        if waveform.shape[0] != 1:
            raise ValueError(f"{node}: the audio holds {waveform.shape[0]} clips; connect one (a video has one soundtrack)")
        sound = waveform[0] if waveform.shape[1] <= 2 else waveform[0].mean(dim=0, keepdim=True)
        source = video_file_source(video)
        if source is not None:
            folder = os.path.join(folder_paths.get_temp_directory(), "audiovisual")
            os.makedirs(folder, exist_ok=True)
            destination = os.path.join(folder, f"with_sound_{uuid.uuid4().hex}.mp4")
            try:
                write_soundtrack(source, destination, sound, rate)
                return io.NodeOutput(InputImpl.VideoFromFile(destination))
            except CannotCopyVideo:
                pass  # a codec an MP4 cannot hold: the frames are decoded and re-encoded below
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        components = video_components(video, node)
        from comfy_api.latest import Types

        return io.NodeOutput(InputImpl.VideoFromComponents(Types.VideoComponents(
            images=components.images, audio={"waveform": sound.unsqueeze(0), "sample_rate": rate}, frame_rate=components.frame_rate)))


NODES = [AddAudioToVideo]
