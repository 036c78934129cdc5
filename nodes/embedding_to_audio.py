"""The V2A path's generator nodes: spectrogram tokens from one CLAP-space embedding (a CLAP audio
embedding, or a CLIP image / video embedding mapped into CLAP), and audio cut to a video's length.

The generator is a one-codebook VATT decoder over a spectrogram VQ's tokens (samplers/embedding_to_audio.py),
loaded with Load VATT Decoder; the tokens decode through Tokens to Mel -> Vocode Mel to Audio."""


import torch
from comfy_api.latest import io

from ..networks.vatt_decoder import VATTDecoder
from ..samplers.embedding_to_audio import columns_for_duration, embedding_to_audio_grid
from ..samplers.vatt import default_overlap, window_starts
from .audio_input import audio_input
from . import socket_types as st
from .device import check_interrupt, on_compute_device
from .payloads import Embedding, TokenGrid
from .tokenizers import check_token_decoders, hidden_graph
from .video_input import video_duration_s

SPECTROGRAM_ROWS_MELS = 80  # the SpecVQGAN mel the spectrogram tokenizers read


def _requested_duration(duration_s: float, video, node: str) -> float:
    """The video's length when a video is connected, else `duration_s` (0 = none asked)."""
    if video is not None:
        return video_duration_s(video, node)
    return float(duration_s or 0.0)


def match_spectrogram_tokenizer(generator: VATTDecoder, tokenizer, node: str) -> tuple[int, int, float]:
    """The generator must predict this spectrogram tokenizer's tokens (same codebook vectors).
    Returns (rows, window columns, seconds per column) of the grid it generates."""
    if not isinstance(generator, VATTDecoder):
        raise ValueError(f"{node}: connect a generator from Load VATT Decoder")
    if getattr(tokenizer, "modality", None) != "audio":
        raise ValueError(f"{node}: connect the spectrogram tokenizer the generator was trained with (Load VQ Tokenizer)")
    config = generator.config
    if config.num_codebooks != 1:
        raise ValueError(f"{node}: this decoder generates {config.num_codebooks}-codebook codec tokens ('{config.codec}'), "
                         "not spectrogram tokens; use it with the VATT Sampler")
    codebook = tokenizer.vq.quantize.embedding.weight.detach().float().cpu()
    tables = generator.codebook_latents[0].detach().float().cpu()
    if codebook.shape != tables.shape or not torch.allclose(codebook, tables, rtol=1e-2, atol=1e-3):
        trained = f" ('{config.codec}')" if config.codec else ""
        raise ValueError(f"{node}: the generator was trained on another spectrogram tokenizer{trained}; "
                         f"this one has {tokenizer.codebook_size} codes of width {tokenizer.embed_dim} that differ")
    frames = getattr(tokenizer, "native_mel_frames", None)
    factor = tokenizer.downsample_factor
    if not frames:
        raise ValueError(f"{node}: the tokenizer does not say its clip length (metadata 'mel_frames')")
    from ..audio.mel_frontend import SPECVQGAN_MEL

    rows, columns = SPECTROGRAM_ROWS_MELS // factor, frames // factor
    return rows, columns, factor * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz


class EmbeddingToAudioTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_EmbeddingToAudioTokens",
            display_name="Embedding to Audio Tokens",
            category=st.category("sample"),
            description="Generates spectrogram tokens for a CLAP-space embedding (a CLAP audio embedding, or an image or video "
                        "embedding mapped into CLAP by Apply V2A Mapper) by iterative unmasking with classifier-free guidance "
                        "against a zeroed condition. Decode them with Tokens to Mel and a vocoder. With a video connected the "
                        "tokens cover the video's duration (cut the sound to it exactly with Fit Audio to Duration).",
            inputs=[
                st.VATTDecoder.Input("generator", tooltip="From Load VATT Decoder: a spectrogram-token generator "
                                                          "(synthav_clap_to_spec_tokens ships with the pack)."),
                st.VQTokenizer.Input("tokenizer", tooltip="From Load VQ Tokenizer: the spectrogram tokenizer the generator was trained with "
                                                          "(synthav_spec_vq512 for the shipped generator)."),
                st.Embedding.Input("embedding", tooltip="One vector per sound in the generator's CLAP space: from Apply V2A Mapper "
                                                        "(image or video -> CLAP) or Encode Audio with the same CLAP."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of every random draw: the same seed gives the same sound."),
                io.Int.Input("steps", default=16, min=1, max=256, tooltip="Unmasking steps per window of the grid; each runs the generator "
                                                                          "once on a doubled batch when guidance is on."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance scale; 1 turns guidance off, higher follows the embedding more closely."),
                io.Float.Input("temperature", default=4.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Confidence noise deciding which tokens are kept at each step, annealed to 0; higher explores more."),
                io.Float.Input("duration_s", default=0.0, min=0.0, max=600.0, step=0.01,
                               tooltip="Length of the sound in seconds; 0 = the generator's own clip length. Ignored when a video is connected."),
                io.Video.Input("video", optional=True, tooltip="Optional: the video the sound is for; its duration (frames / fps) sets the length."),
            ],
            outputs=[st.Tokens.Output(display_name="audio_tokens")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, generator, tokenizer, embedding, seed, steps, cfg, temperature, duration_s=0.0, video=None) -> io.NodeOutput:
        import comfy.utils

        node = "Embedding to Audio Tokens"
        rows, window_columns, seconds_per_column = match_spectrogram_tokenizer(generator, tokenizer, node)
        check_token_decoders(*hidden_graph(cls), node, {0: ("audio", generator.config.codebook_size)},
                             ("generator", "AV_LoadVATT", "generator"))
        if not isinstance(embedding, Embedding):
            raise ValueError(f"{node}: 'embedding' must come from an encoder or mapper node (AV_EMBEDDING), got {type(embedding).__name__}")
        config = generator.config
        embedding.expect(node, config.video_family, dim=config.video_dim, model=config.video_model or None)
        vectors = embedding.vectors.float()
        if vectors.ndim == 3:
            if vectors.shape[1] != 1:
                raise ValueError(f"{node}: expected one vector per sound, got {embedding.describe()}; "
                                 "average video frames first (Encode Video with aggregation 'mean')")
            vectors = vectors[:, 0]
        if vectors.shape[0] == 0:
            raise ValueError(f"{node}: {embedding.describe()} holds no vectors")
        duration = _requested_duration(duration_s, video, node)
        try:
            columns = columns_for_duration(duration, seconds_per_column) if duration > 0 else window_columns
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None

        total = len(window_starts(columns, window_columns, default_overlap(window_columns))) * int(steps)
        progress = comfy.utils.ProgressBar(total)
        with on_compute_device(generator, half=True) as (device, dtype):
            generator_rng = torch.Generator(device=device).manual_seed(int(seed))
            try:
                grid = embedding_to_audio_grid(
                    generator, vectors.to(device, dtype), rows, window_columns, columns, steps=int(steps), cfg=float(cfg),
                    temperature=float(temperature), generator=generator_rng,
                    callback=lambda done, all_steps: progress.update_absolute(done, all_steps), check_interrupt=check_interrupt)
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        return io.NodeOutput(TokenGrid(grid.cpu(), "audio", config.codebook_size))


class FitAudioToDuration(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AV_FitAudioToDuration",
            display_name="Fit Audio to Duration",
            category=st.category("control"),
            description="Cuts the AUDIO (or pads it with silence) to exactly a duration: the connected video's (frames / fps) "
                        "or duration_s. The sample rate is kept.",
            inputs=[
                io.Audio.Input("audio", tooltip="The sound to fit (any rate; its rate is kept)."),
                io.Float.Input("duration_s", default=0.0, min=0.0, max=3600.0, step=0.01,
                               tooltip="Target length in seconds; ignored when a video is connected. 0 with no video leaves the sound as it is."),
                io.Video.Input("video", optional=True, tooltip="Optional: the video whose duration the sound must have."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audio, duration_s=0.0, video=None) -> io.NodeOutput:
        node = "Fit Audio to Duration"
        waveform, rate = audio_input(audio, node)
        duration = _requested_duration(duration_s, video, node)
        if duration <= 0:
            return io.NodeOutput(audio)
        samples = int(round(duration * rate))
        if waveform.shape[-1] >= samples:
            waveform = waveform[..., :samples]
        else:
            waveform = torch.nn.functional.pad(waveform, (0, samples - waveform.shape[-1]))
        return io.NodeOutput({"waveform": waveform.contiguous(), "sample_rate": rate})


NODES = [EmbeddingToAudioTokens, FitAudioToDuration]
