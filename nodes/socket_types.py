"""The pack's own socket types: one per kind of object that only our nodes make or read.

Core types (IMAGE, AUDIO, VIDEO, MASK, CONDITIONING) are used wherever they fit.
"""

from comfy_api.latest import io

VQTokenizer = io.Custom("AV_VQ_TOKENIZER")  # an image or spectrogram VQGAN (vq.tokenizer.VQTokenizer)
Tokens = io.Custom("AV_TOKENS")  # a token grid with its modality (vq.tokenizer.TokenGrid)
Mel = io.Custom("AV_MEL")  # a normalised SpecVQGAN mel spectrogram (audio.mel_frontend.Mel)
MaskedTransformer = io.Custom("AV_MASKGEN")  # the Visual Echoes masked generative transformer
Vocoder = io.Custom("AV_VOCODER")  # mel -> waveform (loaders.vocoders.Vocoder)
Encoder = io.Custom("AV_ENCODER")  # a CLIP / CLAP / AST / T5 encoder (encoders/)
Embedding = io.Custom("AV_EMBEDDING")  # vectors with their space (payloads.Embedding)
Mapper = io.Custom("AV_MAPPER")  # V2A-Mapper: one embedding space -> another
AudioLDM = io.Custom("AV_AUDIOLDM")  # a diffusers AudioLDM (unet, vae, vocoder, scheduler)
AudioAdapter = io.Custom("AV_AUDIO_ADAPTER")  # SeeingSounds: audio embedding -> text-encoder states
CodecTokenizer = io.Custom("AV_CODEC")  # EnCodec: AUDIO <-> tokens [B, K, N]
CodecTokens = io.Custom("AV_CODEC_TOKENS")  # EnCodec tokens [B, K, N] (audio.codec_tokenizer.CodecTokens)
VATTDecoder = io.Custom("AV_VATT")  # VATT's masked audio decoder
Captioner = io.Custom("AV_CAPTIONER")  # a vision-language model that writes audio captions (encoders.captioner)

CATEGORY_ROOT = "audiovisual"
NODE_PREFIX = "AV_"


def category(family: str) -> str:
    """'loaders' -> 'audiovisual/loaders'."""
    return f"{CATEGORY_ROOT}/{family}"
