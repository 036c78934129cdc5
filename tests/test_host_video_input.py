"""How the pack reads a host VIDEO (nodes/video_input.py): a Load Video file is decoded as a stream that
keeps only the sampled frames, and gives exactly what sampling the host's own decoded frames gives."""

import numpy as np
import pytest
import torch

from conftest import write_video_without_frames


def write_clip(path, count, fps, size=(48, 64)):
    """An H.264 mp4 whose frame i is a flat grey of level (i * 7) % 256, and a tone."""
    from comfyui_audiovisual.tools.make_example_video import write_video

    levels = (np.arange(count) * 7 % 256) / 255.0
    frames = np.stack([np.full((*size, 3), level, dtype=np.float32) for level in levels])
    write_video(str(path), frames, fps, 0.2 * np.sin(np.arange(int(16000 * count / fps)) * 0.05), 16000)


def write_noise_clip(path, count, fps, size):
    """An H.264 mp4 of random colour noise: the host's colour conversion shows in every pixel."""
    from comfyui_audiovisual.tools.make_example_video import write_video

    frames = np.random.default_rng(count).random((count, *size, 3)).astype(np.float32)
    write_video(str(path), frames, fps, 0.2 * np.sin(np.arange(int(16000 * count / fps)) * 0.05), 16000)


@pytest.mark.parametrize("count,fps,rate_hz,size,noise", [(45, 30, 5.0, (48, 64), False), (20, 8, 1.0, (48, 64), False),
                                                          (10, 5, 12.0, (48, 64), False), (7, 24, 3.0, (48, 64), False),
                                                          (12, 8, 4.0, (48, 64), True), (12, 8, 4.0, (50, 70), True)])
def test_the_streamed_frames_are_the_host_frames_sampled(host, tmp_path, count, fps, rate_hz, size, noise):
    """Exactly the host's own decode, on whichever host runs the test (0.3.x decodes 8-bit RGB, 0.33
    float RGB from the decoder's format, with widths padded to 32): colour noise shows any difference."""
    from comfy_api.latest import InputImpl

    from comfyui_audiovisual.encoders.video_frames import sample_frames
    from comfyui_audiovisual.nodes.video_input import sampled_video_frames, video_duration_s

    (write_noise_clip if noise else write_clip)(tmp_path / "clip.mp4", count, fps, size=size)
    video = InputImpl.VideoFromFile(str(tmp_path / "clip.mp4"))
    components = video.get_components()
    assert components.images.shape[0] == count
    expected, _times = sample_frames(components.images, float(components.frame_rate), rate_hz)
    streamed, duration_s = sampled_video_frames(video, None, None, rate_hz, "Encode Video")
    assert streamed.shape == expected.shape and torch.equal(streamed, expected.float())
    assert duration_s == pytest.approx(count / fps) and video_duration_s(video, "Fit Audio to Duration") == pytest.approx(count / fps)
    # frames from Create Video (components, not a file) take the other path and agree
    from_components = InputImpl.VideoFromComponents(components)
    again, again_s = sampled_video_frames(from_components, None, None, rate_hz, "Encode Video")
    assert torch.equal(again, expected) and again_s == pytest.approx(duration_s)


def test_bad_rates_and_files_without_pictures_name_the_node(host, tmp_path):
    from comfy_api.latest import InputImpl

    from comfyui_audiovisual.nodes.video_input import sampled_video_frames, video_duration_s

    write_clip(tmp_path / "clip.mp4", 5, 5)
    video = InputImpl.VideoFromFile(str(tmp_path / "clip.mp4"))
    with pytest.raises(ValueError, match=r"^Encode Video: sampling rate must be a positive number of Hz, got 0"):
        sampled_video_frames(video, None, None, 0, "Encode Video")
    write_video_without_frames(tmp_path / "sound_only.mp4")
    sound_only = InputImpl.VideoFromFile(str(tmp_path / "sound_only.mp4"))
    with pytest.raises(ValueError, match=r"^AudioLDM Generate: the video has no video frames"):
        video_duration_s(sound_only, "AudioLDM Generate")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"^Encode Video: cannot read the video"):
        sampled_video_frames(InputImpl.VideoFromFile(str(tmp_path / "broken.mp4")), None, None, 1.0, "Encode Video")


def test_add_audio_to_video_copies_the_pictures_and_replaces_the_soundtrack(host, tmp_path):
    import av
    from comfy_api.latest import InputImpl

    add = host.nodes.NODE_CLASS_MAPPINGS["AV_AddAudioToVideo"]
    write_clip(tmp_path / "clip.mp4", 45, 30)  # 1.5 s, with its own tone
    source = InputImpl.VideoFromFile(str(tmp_path / "clip.mp4"))
    sound = torch.sin(torch.arange(2 * 22050 * 3 // 2) * 0.01).reshape(1, 2, -1) * 0.5  # 1.5 s stereo at 22.05 kHz
    [result] = add.execute(source, {"waveform": sound, "sample_rate": 22050}).result
    assert isinstance(result, InputImpl.VideoFromFile)
    with av.open(str(tmp_path / "clip.mp4")) as a, av.open(result.get_stream_source()) as b:
        assert [bytes(p) for p in a.demux(video=0) if p.size] == [bytes(p) for p in b.demux(video=0) if p.size]
    with av.open(result.get_stream_source()) as b:
        [audio] = [s for s in b.streams if s.type == "audio"]  # only the new soundtrack
        assert (audio.rate, audio.channels) == (22050, 2)
        decoded = np.concatenate([f.to_ndarray() for f in b.decode(audio=0)], axis=1)
    assert abs(decoded.shape[1] - sound.shape[-1]) <= 2048  # AAC priming / padding
    assert np.corrcoef(decoded[0, 2048:20000], sound[0, 0, 2048:20000].numpy())[0, 1] > 0.9  # the sound given, not the old tone
    # frames built by Create Video (no file) take the host's own components path
    components = InputImpl.VideoFromComponents(source.get_components())
    [again] = add.execute(components, {"waveform": sound, "sample_rate": 22050}).result
    assert torch.equal(again.get_components().audio["waveform"], sound) and again.get_components().images.shape[0] == 45
    with pytest.raises(ValueError, match=r"^Add Audio to Video: the audio holds 2 clips; connect one"):
        add.execute(source, {"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000})


def test_frames_are_encoded_in_batches_as_they_are_decoded(host, tmp_path):
    """Encode Video and VATT Video Features encode a video file a batch at a time while decoding it
    (never holding more frames than a batch); the result is what encoding all sampled frames gives."""
    from comfy_api.latest import InputImpl

    from comfyui_audiovisual.nodes.video_input import encode_sampled_frames, sampled_video_frames

    write_clip(tmp_path / "clip.mp4", 45, 30)
    video = InputImpl.VideoFromFile(str(tmp_path / "clip.mp4"))
    seen = []

    def encode(chunk):
        seen.append(chunk.shape[0])
        return chunk.mean(dim=(1, 2, 3))

    parts, duration_s = encode_sampled_frames(video, None, None, 10.0, "Encode Video", encode, batch=4)
    everything, _ = sampled_video_frames(video, None, None, 10.0, "Encode Video")
    assert seen == [4, 4, 4, 3] and duration_s == pytest.approx(1.5)
    assert torch.equal(torch.cat(parts), everything.mean(dim=(1, 2, 3)))


def float_rgb_frames(source):
    import av

    with av.open(source) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="gbrpf32le")) for f in container.decode(video=0)])


def test_the_stream_converts_pictures_as_the_host_does_or_leaves_them_to_it(host, tmp_path):
    """A host that decodes float RGB (as ComfyUI 0.33 does) gets float RGB frames from the stream; a host
    whose decode no conversion of the stream reproduces decodes the video itself (every frame held)."""
    from comfy_api.latest import InputImpl, Types

    from comfyui_audiovisual.encoders.video_frames import sample_frames
    from comfyui_audiovisual.nodes.video_input import _UnlikeHost, encode_sampled_frames, sampled_video_frames, stream_video

    write_noise_clip(tmp_path / "clip.mp4", 12, 8, (48, 64))
    floats = float_rgb_frames(str(tmp_path / "clip.mp4"))
    probes = []

    def float_host(buffer):
        probes.append(buffer)
        return float_rgb_frames(buffer)

    streamed, count, fps = stream_video(str(tmp_path / "clip.mp4"), "Encode Video", 4.0, decode=float_host)
    assert len(probes) == 1 and (count, fps) == (12, 8.0)
    assert torch.equal(streamed, sample_frames(floats, 8.0, 4.0)[0])
    assert not torch.equal(streamed, torch.round(streamed * 255) / 255)  # not 8-bit values
    with pytest.raises(_UnlikeHost):
        stream_video(str(tmp_path / "clip.mp4"), "Encode Video", 4.0, decode=lambda buffer: float_rgb_frames(buffer) * 0.5)

    class OtherHost(InputImpl.VideoFromFile):  # a host whose decode the stream cannot reproduce
        def get_components(self):
            components = super().get_components()
            return Types.VideoComponents(images=components.images * 0.5, frame_rate=components.frame_rate)

    other = OtherHost(str(tmp_path / "clip.mp4"))
    expected = sample_frames(other.get_components().images, 8.0, 4.0)[0]
    sampled, duration_s = sampled_video_frames(other, None, None, 4.0, "Encode Video")
    assert torch.equal(sampled, expected) and duration_s == pytest.approx(1.5)
    parts, _ = encode_sampled_frames(other, None, None, 4.0, "Encode Video", lambda chunk: chunk.sum(dim=(1, 2, 3)), batch=2)
    assert len(parts) == 1 and torch.equal(parts[0], expected.sum(dim=(1, 2, 3)))  # all at once: no batches


def test_a_trimmed_file_video_is_read_through_the_host(host, tmp_path):
    """A file VIDEO the host trimmed (Trim Video, ComfyUI 0.33+) is not the whole file: its frames are the
    host's decode of the window, and Add Audio to Video does not copy the whole file's pictures."""
    from comfy_api.latest import InputImpl, Types

    from comfyui_audiovisual.encoders.video_frames import sample_frames
    from comfyui_audiovisual.nodes.video_input import sampled_video_frames, video_duration_s, video_file_source

    write_clip(tmp_path / "clip.mp4", 45, 30)

    if hasattr(InputImpl.VideoFromFile, "get_active_trim_window"):  # ComfyUI 0.33+: the host's own trim
        trimmed = InputImpl.VideoFromFile(str(tmp_path / "clip.mp4"), start_time=0.5)
    else:
        class Trimmed(InputImpl.VideoFromFile):  # the last second, as 0.33's VideoFromFile(start_time=0.5) gives it
            def get_active_trim_window(self):
                return 0.5, 0.0

            def get_components(self):
                whole = super().get_components()
                return Types.VideoComponents(images=whole.images[15:], frame_rate=whole.frame_rate)

        trimmed = Trimmed(str(tmp_path / "clip.mp4"))
    assert trimmed.get_components().images.shape[0] == 30
    assert video_file_source(trimmed) is None
    sampled, duration_s = sampled_video_frames(trimmed, None, None, 5.0, "Encode Video")
    assert duration_s == pytest.approx(1.0) and video_duration_s(trimmed, "Fit Audio to Duration") == pytest.approx(1.0)
    assert torch.equal(sampled, sample_frames(trimmed.get_components().images, 30.0, 5.0)[0])
    add = host.nodes.NODE_CLASS_MAPPINGS["AV_AddAudioToVideo"]
    [result] = add.execute(trimmed, {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}).result
    assert result.get_components().images.shape[0] == 30


def test_an_error_of_the_encoder_reaches_the_caller_unchanged(host, tmp_path):
    """An error raised while encoding a batch (the host's interruption, an encoder's own) is not reported
    as an unreadable video."""
    from comfy_api.latest import InputImpl

    from comfyui_audiovisual.nodes.video_input import encode_sampled_frames

    class Stop(Exception):
        pass

    def encode(chunk):
        raise Stop("interrupted")

    write_clip(tmp_path / "clip.mp4", 45, 30)
    with pytest.raises(Stop, match="^interrupted$"):
        encode_sampled_frames(InputImpl.VideoFromFile(str(tmp_path / "clip.mp4")), None, None, 10.0, "Encode Video", encode, batch=4)
