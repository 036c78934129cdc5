"""The shipped workflows as compact graphs; `python -m comfyui_audiovisual.runner.workflow_builder`
writes them to workflows/*.json in the editor's format. Node ids are stable: tests and the README
override inputs by them (e.g. `--set 1.image=my.png`). A node is `(id, class_type, inputs, title)`,
or with a fifth element of node options, e.g. BYPASSED (runner/workflow_builder.py)."""

BYPASSED = {"bypassed": True}  # the node ships bypassed ("mode": 4; Ctrl+B in the editor turns it on)

IMAGE_VQ = "synthav_image_vq.safetensors"
SPEC_VQ = "synthav_spec_vq.safetensors"
MASKGEN = "synthav_maskgen.safetensors"
EXAMPLE_IMAGE = "audiovisual_example_scene.png"
EXAMPLE_AUDIO = "audiovisual_example_scene.wav"
EXAMPLE_VIDEO = "audiovisual_example_video.mp4"
V2A_CLIP = "av_encoders/synthav_clip"
V2A_MAPPER = "synthav_clip_to_clap.safetensors"
V2A_GENERATOR = "synthav_clap_to_spec_tokens.safetensors"
V2A_SPEC_VQ = "synthav_spec_vq512.safetensors"  # the 512-code spectrogram VQ the V2A generator and VATT default were trained on

SAMPLER = {"seed": 0, "steps": 30, "cfg": 3.0, "temperature": 2.0, "schedule": "cosine"}  # the sampler node's defaults (samplers.visual_echoes.TEMPERATURE)

_LOADERS = [
    ("2", "AV_LoadVQTokenizer", {"model_name": IMAGE_VQ}, "Image tokenizer"),
    ("3", "AV_LoadVQTokenizer", {"model_name": SPEC_VQ}, "Spectrogram tokenizer"),
    ("4", "AV_LoadMaskedTransformer", {"model_name": MASKGEN}, None),
    ("8", "AV_LoadVocoder", {"vocoder_name": "griffin-lim"}, None),
]

_AUDIO_OUT = [
    ("7", "AV_DecodeMelTokens", {"tokenizer": ("3", 0), "audio_tokens": ("6", 0)}, None),
    ("9", "AV_MelToAudio", {"vocoder": ("8", 0), "mel": ("7", 0)}, None),
    ("10", "AV_SaveAudioWAV", {"audio": ("9", 0), "filename_prefix": "audiovisual/{name}"}, None),
    ("11", "AV_MelToPicture", {"mel": ("7", 0)}, None),
    ("12", "SaveImage", {"images": ("11", 0), "filename_prefix": "audiovisual/{name}_spectrogram"}, None),
]

_IMAGE_OUT = [
    ("13", "AV_DecodeImageTokens", {"tokenizer": ("2", 0), "image_tokens": ("6", 1)}, None),
    ("14", "SaveImage", {"images": ("13", 0), "filename_prefix": "audiovisual/{name}_image"}, None),
]


def _named(nodes, name):
    out = []
    for node_id, class_type, inputs, title in nodes:
        inputs = {k: (v.format(name=name) if isinstance(v, str) and "{name}" in v else v) for k, v in inputs.items()}
        out.append((node_id, class_type, inputs, title))
    return out


IMAGE_TO_AUDIO = _named([
    ("1", "LoadImage", {"image": EXAMPLE_IMAGE}, "Picture"),
    *_LOADERS,
    ("5", "AV_EncodeImageTokens", {"tokenizer": ("2", 0), "image": ("1", 0)}, None),
    ("6", "AV_VisualEchoesSampler", {"model": ("4", 0), "task": "image_to_audio", **SAMPLER, "batch_size": 1,
                                     "image_tokens": ("5", 0), "preview": ("3", 0)}, None),
    *_AUDIO_OUT,
], "image_to_audio")

AUDIO_TO_IMAGE = _named([
    ("1", "LoadAudio", {"audio": EXAMPLE_AUDIO}, "Sound"),
    *_LOADERS[:3],
    ("5", "AV_EncodeAudioTokens", {"tokenizer": ("3", 0), "audio": ("1", 0)}, None),
    ("6", "AV_VisualEchoesSampler", {"model": ("4", 0), "task": "audio_to_image", **SAMPLER, "batch_size": 1,
                                     "audio_tokens": ("5", 0), "preview": ("2", 0)}, None),
    *_IMAGE_OUT,
], "audio_to_image")

CO_GENERATION = _named([
    *_LOADERS,
    ("6", "AV_VisualEchoesSampler", {"model": ("4", 0), "task": "co_generate", **SAMPLER, "batch_size": 1}, None),
    *_AUDIO_OUT,
    *_IMAGE_OUT,
], "co_generation")

AUDIO_INPAINTING = _named([
    ("1", "LoadImage", {"image": EXAMPLE_IMAGE}, "Guiding picture"),
    ("15", "LoadAudio", {"audio": EXAMPLE_AUDIO}, "Sound to repair"),
    *_LOADERS,
    ("5", "AV_EncodeImageTokens", {"tokenizer": ("2", 0), "image": ("1", 0)}, None),
    ("16", "AV_EncodeAudioTokens", {"tokenizer": ("3", 0), "audio": ("15", 0)}, None),
    ("6", "AV_VisualEchoesInpaint", {"model": ("4", 0), "target": "audio", **SAMPLER, "start_s": 0.5, "end_s": 1.5,
                                     "audio_tokens": ("16", 0), "image_tokens": ("5", 0)}, None),
    # the model regenerates one window (the first 2.04 s of the sound); node 17 puts the range back into
    # the whole sound, so the WAV is the input's length with everything outside 0.5-1.5 s unchanged
    *[node if node[0] != "10" else ("10", "AV_SaveAudioWAV", {**node[2], "audio": ("17", 0)}, None) for node in _AUDIO_OUT],
    ("17", "AV_PutBackIntoAudio", {"audio": ("15", 0), "regenerated": ("9", 0), "start_s": 0.5, "end_s": 1.5,
                                   "regenerated_start_s": 0.0, "crossfade_s": 0.05}, "The whole sound, the range put back"),
], "audio_inpainting")

# V2A-Mapper: picture or video -> small CLIP -> mapper into the small CLAP's space -> spectrogram-token
# generator -> spectrogram tokenizer -> Griffin-Lim (node 25 is the generator's sampler)
V2A_SAMPLER = {"seed": 0, "steps": 16, "cfg": 3.0, "temperature": 4.5}
_V2A_MODELS = [
    ("20", "AV_LoadEncoder", {"encoder_name": V2A_CLIP}, "CLIP (SynthAV)"),
    ("22", "AV_LoadMapper", {"mapper_name": V2A_MAPPER}, None),
    ("24", "AV_LoadVATT", {"model_name": V2A_GENERATOR}, "Spectrogram-token generator"),
    ("3", "AV_LoadVQTokenizer", {"model_name": V2A_SPEC_VQ}, "Spectrogram tokenizer"),
    ("8", "AV_LoadVocoder", {"vocoder_name": "griffin-lim"}, None),
]


def _v2a_audio_out(name, audio_source):
    return [
        ("7", "AV_DecodeMelTokens", {"tokenizer": ("3", 0), "audio_tokens": ("25", 0)}, None),
        ("9", "AV_MelToAudio", {"vocoder": ("8", 0), "mel": ("7", 0)}, None),
        ("10", "AV_SaveAudioWAV", {"audio": audio_source, "filename_prefix": f"audiovisual/{name}"}, None),
        ("11", "AV_MelToPicture", {"mel": ("7", 0)}, None),
        ("12", "SaveImage", {"images": ("11", 0), "filename_prefix": f"audiovisual/{name}_spectrogram"}, None),
    ]


IMAGE_TO_AUDIO_V2A = [
    ("1", "LoadImage", {"image": EXAMPLE_IMAGE}, "Picture"),
    *_V2A_MODELS,
    ("21", "AV_EncodeImage", {"encoder": ("20", 0), "image": ("1", 0)}, None),
    ("23", "AV_ApplyMapper", {"mapper": ("22", 0), "embedding": ("21", 0), "seed": 0, "steps": 25}, None),
    ("25", "AV_EmbeddingToAudioTokens", {"generator": ("24", 0), "tokenizer": ("3", 0), "embedding": ("23", 0), **V2A_SAMPLER,
                                         "duration_s": 0.0}, None),
    *_v2a_audio_out("image_to_audio_v2a", ("9", 0)),
]

VIDEO_TO_AUDIO_V2A = [
    ("30", "LoadVideo", {"file": EXAMPLE_VIDEO}, "Video"),
    *_V2A_MODELS,
    ("31", "AV_EncodeVideo", {"encoder": ("20", 0), "video": ("30", 0), "sample_rate_hz": 5.0, "aggregation": "mean"}, None),
    ("23", "AV_ApplyMapper", {"mapper": ("22", 0), "embedding": ("31", 0), "seed": 0, "steps": 25, "frames": "average"}, None),
    ("25", "AV_EmbeddingToAudioTokens", {"generator": ("24", 0), "tokenizer": ("3", 0), "embedding": ("23", 0), **V2A_SAMPLER,
                                         "duration_s": 0.0, "video": ("30", 0)}, None),
    ("32", "AV_FitAudioToDuration", {"audio": ("9", 0), "duration_s": 0.0, "video": ("30", 0)}, "Cut to the video's length"),
    *_v2a_audio_out("video_to_audio_v2a", ("32", 0)),
]

SHIPPED_GRAPHS = {
    "image_to_audio": (IMAGE_TO_AUDIO, "Image -> audio with Visual Echoes on the embedded SynthAV models: writes a WAV and a picture of its spectrogram."),
    "audio_to_image": (AUDIO_TO_IMAGE, "Audio -> image with Visual Echoes on the embedded SynthAV models."),
    "co_generation": (CO_GENERATION, "Image and audio generated together from nothing (Visual Echoes co-generation)."),
    "audio_inpainting": (AUDIO_INPAINTING, "Regenerates 0.5-1.5 s of a sound, guided by a picture (Visual Echoes inpainting), and puts it back into the whole sound."),
    "image_to_audio_v2a": (IMAGE_TO_AUDIO_V2A, "Image -> audio with V2A-Mapper on the embedded SynthAV models: CLIP image embedding, "
                                               "mapped into CLAP, spectrogram tokens generated from it; writes a WAV and its spectrogram."),
    "video_to_audio_v2a": (VIDEO_TO_AUDIO_V2A, "Video -> audio with V2A-Mapper: CLIP embeddings of frames at 5 per second, averaged, "
                                               "mapped into CLAP; the sound is generated for the video's duration and cut to it exactly."),
}

# ---------------------------------------------------------------------------------------------
# VATT: video (+ text) -> audio on the embedded SynthAV default (docs/vatt.md), muxed back into the
# video by Add Audio to Video (the pictures copied, never decoded: any length at flat memory) for the
# host's Save Video. The caption is the example scene's own, and its node's title says so: naming
# other notes moves the pitch, so another video wants its own caption, or none.
VATT_DECODER = "synthav_vatt.safetensors"
VATT_CODEC = "synthav_spec_codec"
VATT_ENCODER = "av_encoders/synthav_clip"
VATT_TEXT_ENCODER = "av_encoders/synthav_caption_t5"
VATT_CAPTION = "a moderate sine tone at A4, early, and a loud square tone at G4, very late"
# the SynthAV default's sampling: cfg 3 and confidence noise 4.5 (the official release's 5 and 25.5
# cost the small decoder onsets, timbre and note counts); the official VATT template keeps the paper's
VATT_SYNTHAV_SAMPLER = {"seed": 0, "steps": 16, "cfg": 3.0, "top_k": 256, "temperature": 4.5}

VIDEO_TO_AUDIO = [
    ("1", "LoadVideo", {"file": EXAMPLE_VIDEO}, "Video"),
    ("2", "AV_LoadEncoder", {"encoder_name": VATT_ENCODER}, "CLIP (SynthAV)"),
    ("3", "AV_LoadCodec", {"codec_name": VATT_CODEC}, None),
    ("4", "AV_LoadVATT", {"model_name": VATT_DECODER}, None),
    ("11", "AV_LoadEncoder", {"encoder_name": VATT_TEXT_ENCODER}, "T5 (SynthAV captions)"),
    ("12", "AV_EncodeText", {"encoder": ("11", 0), "text": VATT_CAPTION, "t5_tokens": 32}, "Caption of the example video (edit, or Ctrl+B)"),
    ("5", "AV_VATTVideoFeatures", {"encoder": ("2", 0), "video": ("1", 0), "fps": 24.0, "rate_hz": 5.0, "tokens": 10}, None),
    ("6", "AV_VATTSampler", {"vatt": ("4", 0), "codec": ("3", 0), "video_features": ("5", 0), **VATT_SYNTHAV_SAMPLER,
                             "duration_s": 0.0, "text": ("12", 0)}, None),
    ("8", "AV_AddAudioToVideo", {"video": ("1", 0), "audio": ("6", 0)}, "Video with the generated sound"),
    ("9", "SaveVideo", {"video": ("8", 0), "filename_prefix": "audiovisual/video_to_audio", "format": "auto", "codec": "auto"}, None),
    ("10", "AV_SaveAudioWAV", {"audio": ("6", 0), "filename_prefix": "audiovisual/video_to_audio"}, None),
]
VIDEO_TO_AUDIO_DESCRIPTION = ("Video (+ caption) -> audio with VATT on the embedded SynthAV models: CLIP features of frames at 5 "
                              "per second, an optional caption through a small T5 (32 tokens), the VATT decoder fills a spectrogram-token "
                              "grid (16 steps, cfg 3), decoded to sound as long as the video at any frame rate, muxed back into the "
                              "video (Add Audio to Video, Save Video). The caption shipped describes the example video (its two notes): "
                              "edit it for another video, or bypass it (Ctrl+B) to run without a caption.")
SHIPPED_GRAPHS["video_to_audio"] = (VIDEO_TO_AUDIO, VIDEO_TO_AUDIO_DESCRIPTION)

# The same, with the caption written from the video by the embedded SynthAV captioner (Caption Video's
# defaults: one contact sheet of frames at 2 per second, at most 4, so 2 x 2). Its STRING feeds Encode
# Text's text widget by a link; prefix / suffix, or the host's string nodes in between, edit it.
CAPTIONER = "av_captioners/synthav_captioner"
CAPTION_VIDEO = {"fps": 24.0, "rate_hz": 2.0, "max_frames": 4, "layout": "grid", "max_new_tokens": 60, "temperature": 0.0,
                 "seed": 0, "prefix": "", "suffix": ""}


_CAPTIONED_CHANGES = {  # node id -> its node in the captioned graph (the rest is VIDEO_TO_AUDIO's)
    "12": ("12", "AV_EncodeText", {"encoder": ("11", 0), "text": ("14", 0), "t5_tokens": 32}, "Caption (from the video)"),
    "9": ("9", "SaveVideo", {"video": ("8", 0), "filename_prefix": "audiovisual/video_to_audio_captioned", "format": "auto",
                             "codec": "auto"}, None),
    "10": ("10", "AV_SaveAudioWAV", {"audio": ("6", 0), "filename_prefix": "audiovisual/video_to_audio_captioned"}, None),
}
_CAPTIONER_NODES = [
    ("13", "AV_LoadCaptioner", {"captioner_name": CAPTIONER}, "Captioner (SynthAV)"),
    ("14", "AV_CaptionVideo", {"captioner": ("13", 0), "video": ("1", 0), **CAPTION_VIDEO}, None),
]


def _captioned(nodes):
    out = []
    for node in nodes:
        if node[0] == "12":
            out.extend(_CAPTIONER_NODES)
        out.append(_CAPTIONED_CHANGES.get(node[0], node))
    return out


VIDEO_TO_AUDIO_CAPTIONED = _captioned(VIDEO_TO_AUDIO)
VIDEO_TO_AUDIO_CAPTIONED_DESCRIPTION = ("Video -> caption -> audio with VATT on the embedded SynthAV models: a tiny captioner "
                                        "writes the audio caption from a contact sheet of the video's frames (edit it with "
                                        "Caption Video's prefix / suffix or the host's string nodes), the caption and CLIP "
                                        "features of the frames condition the VATT decoder, and the sound is muxed back into "
                                        "the video.")
SHIPPED_GRAPHS["video_to_audio_captioned"] = (VIDEO_TO_AUDIO_CAPTIONED, VIDEO_TO_AUDIO_CAPTIONED_DESCRIPTION)

# ---------------------------------------------------------------------------------------------
# SeeingSounds: audio -> the host's own FLUX conditioning -> the user's FLUX (docs/seeing_sounds.md).
# The text branch (DualCLIPLoader -> CLIP Text Encode of Compose Prompt's text) is optional and ships
# bypassed; Ctrl+B on its three nodes turns it on. Bypassed, CLIP Text Encode passes nothing on (it has
# no CONDITIONING input), so Audio to Conditioning runs without text_conditioning.
FLUX_UNET = "flux1-dev.safetensors"
FLUX_VAE = "ae.safetensors"
FLUX_CLIP_L = "clip_l.safetensors"
FLUX_T5 = "t5xxl_fp16.safetensors"
SEEING_SOUNDS_AST = "audio_encoders/ast-finetuned-audioset-10-10-0.4593"
SEEING_SOUNDS_ADAPTER = "seeing_sounds_flux.safetensors"

AUDIO_TO_IMAGE_FLUX = [
    ("90", "Note", {"text": "\n".join([
        "Files this workflow needs:",
        f"- models/diffusion_models/{FLUX_UNET} and models/vae/{FLUX_VAE} : FLUX.1-dev as ComfyUI uses it.",
        f"- models/{SEEING_SOUNDS_AST}/ : the transformers folder of MIT/ast-finetuned-audioset-10-10-0.4593.",
        f"- models/audiovisual/adapters/{SEEING_SOUNDS_ADAPTER} : an audio adapter trained for FLUX (python -m "
        "comfyui_audiovisual train adapter with your T5-XXL and CLIP-L, or the Train Audio Adapter node; docs/seeing_sounds.md).",
        f"- Optional text branch (bypassed; Ctrl+B on its three nodes): models/text_encoders/{FLUX_CLIP_L} and {FLUX_T5}.",
        "Nothing is downloaded: a missing file is named by its loader before anything runs."])}, "Files this workflow needs"),
    ("1", "LoadAudio", {"audio": EXAMPLE_AUDIO}, "Sound"),
    ("40", "AV_AudioTransform", {"audio": ("1", 0), "gain_db": 0.0, "semitones": 0.0, "caption_b": ""}, None),
    ("41", "AV_LoadEncoder", {"encoder_name": SEEING_SOUNDS_AST}, "AST"),
    ("42", "AV_EncodeAudio", {"encoder": ("41", 0), "audio": ("40", 0), "long_audio": "mean"}, None),
    ("43", "AV_LoadAudioAdapter", {"adapter_name": SEEING_SOUNDS_ADAPTER}, None),
    ("45", "DualCLIPLoader", {"clip_name1": FLUX_CLIP_L, "clip_name2": FLUX_T5, "type": "flux", "device": "default"}, "Text encoders (optional, Ctrl+B)",
     BYPASSED),
    ("46", "AV_ComposePrompt", {"caption": "a dog barking", "modifiers": ("40", 1), "suffix": ""}, "Compose Prompt (optional, Ctrl+B)", BYPASSED),
    ("47", "CLIPTextEncode", {"clip": ("45", 0), "text": ("46", 0)}, "Prompt (optional, Ctrl+B)", BYPASSED),
    ("44", "AV_AudioToConditioning", {"adapter": ("43", 0), "audio_embedding": ("42", 0), "target": "FLUX", "guidance": 3.5,
                                      "text_conditioning": ("47", 0), "combine": "concat", "weight": 0.5}, None),
    ("48", "UNETLoader", {"unet_name": FLUX_UNET, "weight_dtype": "default"}, "FLUX"),
    ("49", "EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}, None),
    ("50", "KSampler", {"model": ("48", 0), "seed": 0, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                        "positive": ("44", 0), "negative": ("44", 0), "latent_image": ("49", 0), "denoise": 1.0}, None),
    ("51", "VAELoader", {"vae_name": FLUX_VAE}, "FLUX VAE"),
    ("52", "VAEDecode", {"samples": ("50", 0), "vae": ("51", 0)}, None),
    ("53", "SaveImage", {"images": ("52", 0), "filename_prefix": "audiovisual/audio_to_image_flux"}, None),
]
AUDIO_TO_IMAGE_FLUX_DESCRIPTION = ("Audio -> image with SeeingSounds on your FLUX: an AST reads the sound, an audio adapter turns it into "
                                   "FLUX's own conditioning (T5 tokens + CLIP pooled + guidance) for the stock KSampler. Needs "
                                   "flux1-dev, ae, the AST folder and an adapter trained for FLUX (docs/seeing_sounds.md); the "
                                   "optional text branch adds Compose Prompt's caption through FLUX's text encoders.")
SHIPPED_GRAPHS["audio_to_image_flux"] = (AUDIO_TO_IMAGE_FLUX, AUDIO_TO_IMAGE_FLUX_DESCRIPTION)

# ---------------------------------------------------------------------------------------------
# V2A-Mapper on the models users download (docs/v2a_mapper.md, docs/audioldm.md): CLIP-L image
# embeddings, a mapper the user trains on a folder of their clips (the third template), and AudioLDM.
# Each has a note node (the editor's own, never run) saying which files it needs and where they go.
REAL_CLIP = "clip_vision/clip-vit-large-patch14"
REAL_CLAP = "audio_encoders/clap-htsat-unfused"
REAL_AUDIOLDM = "audioldm-s-full-v2"
REAL_MAPPER_NAME = "clip_l_to_clap"
REAL_MAPPER = REAL_MAPPER_NAME + ".safetensors"
CLIP_FOLDER = "my_clips"
AUDIOLDM_SAMPLER = {"seed": 0, "steps": 50, "guidance": 2.5}
NOTE = "Note"

_FILES_CLIP = (f"- models/{REAL_CLIP}/ : the transformers folder of openai/clip-vit-large-patch14 (config.json, "
               "model.safetensors, tokenizer and preprocessor files). A ComfyUI single file (clip_vision/clip_vision_l."
               "safetensors) works as well: choose it in Load Encoder, and train the mapper with the same one.")
_FILES_MAPPER = (f"- models/audiovisual/mappers/{REAL_MAPPER} : your V2A mapper from CLIP into AudioLDM's CLAP, made by the "
                 "'Train your V2A mapper' template (or python -m comfyui_audiovisual train mapper).")
_FILES_AUDIOLDM = (f"- models/audiovisual/audioldm/{REAL_AUDIOLDM}/ (or models/diffusers/) : the diffusers folder of "
                   "cvssp/audioldm-s-full-v2 (unet, vae, vocoder, scheduler; text_encoder optional).")
_NOTE_END = "Nothing is downloaded: a missing file is named by its loader before anything runs. Use a GPU: AudioLDM is slow on a CPU."

IMAGE_TO_AUDIO_AUDIOLDM = [
    ("90", NOTE, {"text": "\n".join(["Files this workflow needs:", _FILES_CLIP, _FILES_MAPPER, _FILES_AUDIOLDM, _NOTE_END])},
     "Files this workflow needs"),
    ("1", "LoadImage", {"image": EXAMPLE_IMAGE}, "Picture"),
    ("60", "AV_LoadEncoder", {"encoder_name": REAL_CLIP}, "CLIP-L"),
    ("61", "AV_EncodeImage", {"encoder": ("60", 0), "image": ("1", 0)}, None),
    ("62", "AV_LoadMapper", {"mapper_name": REAL_MAPPER}, "Your V2A mapper"),
    ("63", "AV_ApplyMapper", {"mapper": ("62", 0), "embedding": ("61", 0), "seed": 0, "steps": 25}, None),
    ("64", "AV_LoadAudioLDM", {"model_name": REAL_AUDIOLDM}, "AudioLDM"),
    ("65", "AV_AudioLDMGenerate", {"audioldm": ("64", 0), "embedding": ("63", 0), **AUDIOLDM_SAMPLER, "duration_s": 10.0}, None),
    ("66", "AV_SaveAudioWAV", {"audio": ("65", 0), "filename_prefix": "audiovisual/image_to_audio_audioldm"}, None),
]
SHIPPED_GRAPHS["image_to_audio_audioldm"] = (
    IMAGE_TO_AUDIO_AUDIOLDM,
    "Image -> audio with V2A-Mapper on your models: the picture's CLIP-L embedding, mapped into CLAP by the mapper you trained, "
    "and AudioLDM generates 10 s from it. Needs CLIP-L, your mapper and AudioLDM (the note lists the files).")

VIDEO_TO_AUDIO_AUDIOLDM = [
    ("90", NOTE, {"text": "\n".join(["Files this workflow needs:", _FILES_CLIP, _FILES_MAPPER, _FILES_AUDIOLDM,
                                      "The sound is as long as the video (at most 120 s) and is muxed back into it.", _NOTE_END])},
     "Files this workflow needs"),
    ("30", "LoadVideo", {"file": EXAMPLE_VIDEO}, "Video"),
    ("60", "AV_LoadEncoder", {"encoder_name": REAL_CLIP}, "CLIP-L"),
    ("67", "AV_EncodeVideo", {"encoder": ("60", 0), "video": ("30", 0), "sample_rate_hz": 1.0, "aggregation": "mean"}, None),
    ("62", "AV_LoadMapper", {"mapper_name": REAL_MAPPER}, "Your V2A mapper"),
    ("63", "AV_ApplyMapper", {"mapper": ("62", 0), "embedding": ("67", 0), "seed": 0, "steps": 25, "frames": "average"}, None),
    ("64", "AV_LoadAudioLDM", {"model_name": REAL_AUDIOLDM}, "AudioLDM"),
    ("65", "AV_AudioLDMGenerate", {"audioldm": ("64", 0), "embedding": ("63", 0), **AUDIOLDM_SAMPLER, "duration_s": 10.0,
                                   "video": ("30", 0)}, None),
    ("69", "AV_AddAudioToVideo", {"video": ("30", 0), "audio": ("65", 0)}, "Video with the generated sound"),
    ("70", "SaveVideo", {"video": ("69", 0), "filename_prefix": "audiovisual/video_to_audio_audioldm", "format": "auto", "codec": "auto"}, None),
    ("66", "AV_SaveAudioWAV", {"audio": ("65", 0), "filename_prefix": "audiovisual/video_to_audio_audioldm"}, None),
]
SHIPPED_GRAPHS["video_to_audio_audioldm"] = (
    VIDEO_TO_AUDIO_AUDIOLDM,
    "Video -> audio with V2A-Mapper on your models: CLIP-L embeddings of a frame per second, averaged, mapped into CLAP by your "
    "mapper; AudioLDM generates a sound as long as the video, muxed back into it (the pictures copied, not re-encoded). Needs CLIP-L, your mapper and AudioLDM.")

TRAIN_V2A_MAPPER = [
    ("90", NOTE, {"text": "\n".join([
        f"Put your clips in ComfyUI's input folder, in input/{CLIP_FOLDER}/ : videos with sound (x.mp4: its middle frame and its "
        "sound), or a picture and a sound with the same name (x.png + x.wav). Hundreds of clips or more; a tenth is held out "
        "and scored in the report.",
        "Files this workflow needs:", _FILES_CLIP,
        f"- models/{REAL_CLAP}/ : the transformers folder of laion/clap-htsat-unfused, the CLAP AudioLDM was trained with.",
        f"It writes models/audiovisual/mappers/{REAL_MAPPER}, which the image / video -> audio (AudioLDM) templates load; "
        "it refuses to replace an existing file unless overwrite is on. Thousands of clips: python -m comfyui_audiovisual "
        "train mapper --folder ... (docs/v2a_mapper.md)."])}, "Your clips and files"),
    ("60", "AV_LoadEncoder", {"encoder_name": REAL_CLIP}, "CLIP-L"),
    ("71", "AV_LoadEncoder", {"encoder_name": REAL_CLAP}, "CLAP (AudioLDM's)"),
    ("72", "AV_EncodeClipFolder", {"image_encoder": ("60", 0), "audio_encoder": ("71", 0), "folder": CLIP_FOLDER}, None),
    ("73", "AV_TrainMapper", {"source": ("72", 0), "target": ("72", 1), "kind": "regression", "steps": 2000, "learning_rate": 1e-3,
                              "batch_size": 64, "width": 512, "depth": 3, "seed": 0, "file_name": REAL_MAPPER_NAME,
                              "overwrite": False}, None),
]
SHIPPED_GRAPHS["train_v2a_mapper"] = (
    TRAIN_V2A_MAPPER,
    "Trains your V2A mapper on a folder of your clips: CLIP-L embeddings of their pictures paired with CLAP embeddings of their "
    "sounds; writes the mapper the AudioLDM image / video -> audio templates load. Needs CLIP-L and CLAP (the note says where).")

# ---------------------------------------------------------------------------------------------
# The official VATT-LLaMA release (docs/vatt.md, issue 18): eva-CLIP frame features at 5 per second,
# the VATT Converter (Vicuna + the checkpoint's LoRA and projector) writes the caption and gives its
# hidden states to the released decoder, which fills AudioGen's EnCodec tokens; muxed back into the video.
OFFICIAL_EVA_CLIP = "clip_vision/eva02_large_patch14_clip_336.merged2b_s6b_b61k"
OFFICIAL_VATT = "vatt_llama.ckpt"
OFFICIAL_LLM = "text_encoders/vicuna"
OFFICIAL_CODEC = "audiogen-medium"
OFFICIAL_CONVERTER = {"caption": "", "instruction": "", "max_new_tokens": 400,
                      "temperature": 0.1, "top_p": 0.95, "top_k": 500, "repetition_penalty": 1.1, "seed": 0, "prefix": "",
                      "suffix": ""}  # the node's defaults: the release's instruction, the official caption sampling (encoders.vatt_converter)

VIDEO_TO_AUDIO_VATT_OFFICIAL = [
    ("90", NOTE, {"text": "\n".join([
        "Files this workflow needs (the VATT authors' release, github.com/DragonLiu1995/video-to-audio-through-text):",
        f"- models/audiovisual/vatt/{OFFICIAL_VATT} : the VATT-LLaMA checkpoint from their vatt_models.zip (the decoder, "
        "the converter's LoRA and projector; the LLM inside it is not read).",
        f"- models/{OFFICIAL_LLM}/ : the Vicuna-7B transformers folder from their vicuna.zip (config.json, weights "
        "as safetensors or pytorch_model*.bin, tokenizer.model); a folder in models/LLM works where that folder is registered.",
        f"- models/{OFFICIAL_EVA_CLIP}/ : the open_clip folder timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k "
        "(open_clip_config.json + open_clip_model.safetensors; needs the timm package).",
        f"- models/audiovisual/codecs/{OFFICIAL_CODEC}/compression_state_dict.bin : AudioGen's 16 kHz EnCodec "
        "(facebook/audiogen-medium, or their audiogen_models.zip).",
        "The converter writes the caption (shown on its node; type one there to use it instead). Use a GPU: the LLM has "
        "7 billion parameters (about 14 GB in half precision). Nothing is downloaded: a missing file is named by its "
        "loader before anything runs."])}, "Files this workflow needs"),
    ("1", "LoadVideo", {"file": EXAMPLE_VIDEO}, "Video"),
    ("20", "AV_LoadEncoder", {"encoder_name": OFFICIAL_EVA_CLIP}, "eva-CLIP (EVA02-L-14-336)"),
    ("21", "AV_VATTVideoFeatures", {"encoder": ("20", 0), "video": ("1", 0), "fps": 24.0, "rate_hz": 5.0, "tokens": 10}, None),
    ("22", "AV_VATTConverter", {"video_features": ("21", 0), "checkpoint": OFFICIAL_VATT, "llm": OFFICIAL_LLM,
                                **OFFICIAL_CONVERTER}, "VATT Converter (Vicuna): the caption"),
    ("23", "AV_LoadVATT", {"model_name": OFFICIAL_VATT}, "VATT-LLaMA decoder"),
    ("24", "AV_LoadCodec", {"codec_name": OFFICIAL_CODEC}, "AudioGen EnCodec"),
    ("25", "AV_VATTSampler", {"vatt": ("23", 0), "codec": ("24", 0), "video_features": ("22", 0), "seed": 0, "steps": 16,
                              "cfg": 5.0, "top_k": 256, "temperature": 25.5, "duration_s": 0.0}, None),
    ("26", "AV_AddAudioToVideo", {"video": ("1", 0), "audio": ("25", 0)}, "Video with the generated sound"),
    ("27", "SaveVideo", {"video": ("26", 0), "filename_prefix": "audiovisual/video_to_audio_vatt_official", "format": "auto",
                         "codec": "auto"}, None),
    ("28", "AV_SaveAudioWAV", {"audio": ("25", 0), "filename_prefix": "audiovisual/video_to_audio_vatt_official"}, None),
]
SHIPPED_GRAPHS["video_to_audio_vatt_official"] = (
    VIDEO_TO_AUDIO_VATT_OFFICIAL,
    "Video -> caption -> audio with the official VATT-LLaMA release: eva-CLIP features of 5 frames per second, the VATT "
    "Converter (Vicuna-7B with the checkpoint's LoRA) writes an audio caption and hands its hidden states to the released "
    "decoder (16 steps, cfg 5), whose AudioGen EnCodec tokens become a 16 kHz sound as long as the video, muxed back into it. "
    "Needs the four downloads the note lists.")

# ---------------------------------------------------------------------------------------------
# How the editor lists the templates: in this order (the default first), each with a title and a
# one-line description. The host's Templates dialog titles a pack's templates by their file names
# (frontends 1.32 to 1.49 read no index for them): the pack's extension puts them in this order there,
# and shows the titles and descriptions in its own "Audio-visual" sidebar tab (web/js/templates.js).
# The builder writes this list to web/templates.json; a template missing here is refused by it.
TEMPLATE_INDEX = [
    ("image_to_audio", "Image -> audio (Visual Echoes, the default)",
     "A picture becomes its sound on the embedded SynthAV models: a WAV and its spectrogram."),
    ("audio_to_image", "Audio -> image (Visual Echoes)",
     "A sound becomes the picture of its scene on the embedded SynthAV models."),
    ("co_generation", "Image + audio together (Visual Echoes)",
     "A picture and its sound generated jointly, from nothing."),
    ("audio_inpainting", "Picture-guided audio inpainting (Visual Echoes)",
     "Regenerates 0.5-1.5 s of a sound so that it fits a picture; the rest is kept."),
    ("video_to_audio", "Video -> audio, with a caption (VATT)",
     "The sound of a video, muxed back into it; the caption describes the example video: edit or bypass it."),
    ("video_to_audio_captioned", "Video -> caption -> audio (VATT)",
     "A captioner writes the caption from the video's frames, then VATT makes the sound and muxes it back."),
    ("image_to_audio_v2a", "Image -> audio (V2A-Mapper)",
     "The picture's CLIP embedding mapped into CLAP, and a sound generated from it."),
    ("video_to_audio_v2a", "Video -> audio (V2A-Mapper)",
     "CLIP embeddings of the frames mapped into CLAP; the sound lasts exactly as long as the video."),
    ("image_to_audio_audioldm", "Image -> audio on your CLIP + AudioLDM (V2A-Mapper)",
     "Needs CLIP-L, AudioLDM and your mapper: the picture's CLIP embedding mapped into CLAP, 10 s of sound."),
    ("video_to_audio_audioldm", "Video -> audio on your CLIP + AudioLDM (V2A-Mapper)",
     "Needs CLIP-L, AudioLDM and your mapper: a sound as long as the video, muxed back into it."),
    ("train_v2a_mapper", "Train your V2A mapper on your clips",
     "Pairs the CLIP-L of your clips' pictures with the CLAP of their sounds and writes the mapper."),
    ("video_to_audio_vatt_official", "Video -> caption -> audio with the official VATT-LLaMA",
     "Needs VATT-LLaMA, Vicuna-7B, eva-CLIP, AudioGen's EnCodec: an LLM caption, then the sound, muxed back."),
    ("audio_to_image_flux", "Audio -> image on your FLUX (SeeingSounds)",
     "Needs your FLUX, an AST and an audio adapter: the sound becomes FLUX conditioning for the stock KSampler."),
]
