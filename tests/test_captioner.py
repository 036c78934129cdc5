"""VATT's optional captioner: tiny random vision-language models built here (no downloads) in two
layouts, a BLIP image captioner (BERT WordPiece vocabulary written here) and a LLaVA chat model
(a WordLevel tokenizer with a chat template), loaded by encoders/captioner.py and run through the
host: Load Video Captioner -> Caption Video -> the host's string nodes / Encode Text -> VATT Sampler."""

from __future__ import annotations

import os
import wave

import numpy as np
import pytest
import torch

from tiny_encoders import CLIP_PROJECTION, T5_WIDTH, write_tiny_clip, write_tiny_clip_vision, write_tiny_t5
from host_prompt import execute_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["a", "the", "sound", "of", "dog", "barks", "rain", "on", "roof", "loud", "soft", "tone", "bell", "rings", "water",
         "wind", "car", "engine", "music", "piano", "plays", "bird", "sings", "and", "video", "describe", "sounds", "this",
         "makes", "in", "one", "short", "sentence", "image", "shows", "frames", "time", "order", "from", "left", "to", "right",
         "top", "bottom", "what", "each", "how", "it", "when", "happens", "answer", "with", "audio", "caption", "only",
         "are", "2", "4", "8", ".", ",", ":"]
LLAVA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<image> {% elif c['type'] == 'text' %}{{ c['text'] }} {% endif %}{% endfor %}"
                  "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}{{ eos_token }}{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _special_ids(tokenizer) -> list[int]:
    """A random model often writes special tokens only (an empty caption): its generation config
    suppresses them (end of text included), so every generated token is a word."""
    return sorted(set(tokenizer.all_special_ids))


def write_tiny_blip(folder: str, seed: int = 0) -> str:
    """BlipForConditionalGeneration (32 wide, one layer, 32x32 images) with a BERT WordPiece tokenizer
    over WORDS and BLIP's image processor, as Salesforce/blip-image-captioning-* folders have them."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    os.makedirs(folder, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + WORDS
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]", model_max_length=64)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                           patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                         encoder_hidden_size=32, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                         eos_token_id=tokenizer.sep_token_id),
        projection_dim=16, image_text_hidden_size=16)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = _special_ids(tokenizer)
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _wordlevel_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", "<image>", "USER:", "ASSISTANT:"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins the words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=["<image>", "USER:", "ASSISTANT:"],
                                   model_max_length=512)


def write_tiny_llava(folder: str, seed: int = 0, with_processor: bool = True) -> str:
    """LlavaForConditionalGeneration (a 32-wide CLIP vision tower and Llama, one layer each, 32x32
    images = 16 image tokens) with a WordLevel tokenizer and a chat template (llava-hf layout)."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _wordlevel_tokenizer()
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
                         eos_token_id=2, pad_token_id=3),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = _special_ids(tokenizer)
    model.save_pretrained(folder)
    if with_processor:
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                                   tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
        processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("captioners")
    return {"blip": write_tiny_blip(str(base / "tiny_blip")), "llava": write_tiny_llava(str(base / "tiny_llava")), "base": base}


@pytest.fixture(scope="module")
def captioners(models):
    from comfyui_audiovisual.encoders.captioner import load_captioner

    return {name: load_captioner(models[name]) for name in ("blip", "llava")}


def video(n=5, seed=0):
    return torch.rand(n, 24, 40, 3, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# plain code
# ----------------------------------------------------------------------------------------------
def test_both_layouts_load_and_caption(captioners):
    blip, llava = captioners["blip"], captioners["llava"]
    assert (blip.model_type, blip.chat) == ("blip", False) and (llava.model_type, llava.chat) == ("llava", True)
    for captioner in (blip, llava):
        text = captioner.caption(video(), "the sound of", max_new_tokens=6)
        assert isinstance(text, str) and text and text == text.strip()
        assert all(word in WORDS or word.strip(",.:") in WORDS for word in text.split()), text  # words of the vocabulary, no special tokens


@pytest.mark.parametrize("name", ["blip", "llava"])
def test_same_seed_same_caption_other_seed_other_caption(captioners, name):
    captioner = captioners[name]
    frames = video()
    state = torch.random.get_rng_state()
    runs = [captioner.caption(frames, "the sound of", max_new_tokens=8, seed=s, temperature=1.5) for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    greedy = [captioner.caption(frames, "the sound of", max_new_tokens=8, seed=s) for s in (3, 4)]
    assert greedy[0] == greedy[1]  # temperature 0: the seed does not matter


def test_blip_continues_the_given_start_without_echoing_it(captioners):
    """BLIP returns the given start in front of the caption: it is removed, the rest kept."""
    from PIL import Image

    blip = captioners["blip"]
    frames = video(1)
    caption = blip.caption(frames, "the sound of", max_new_tokens=6, layout="middle")
    image = Image.fromarray((frames[0].numpy() * 255 + 0.5).astype("uint8"))
    inputs = blip.processor(images=image, text="the sound of", return_tensors="pt")
    raw = blip.tokenizer.decode(blip.model.generate(**inputs, max_new_tokens=6, do_sample=False)[0], skip_special_tokens=True)
    assert raw.startswith("the sound of")  # the model echoes the start ...
    assert caption == raw[len("the sound of"):].strip()  # ... the captioner does not
    assert blip.caption(frames, "", max_new_tokens=6, layout="middle")  # no start: an unconditional caption


def test_the_chat_prompt_is_not_echoed(captioners):
    llava = captioners["llava"]
    instruction = "describe the sounds this video makes in one short sentence ."  # 11 words, more than max_new_tokens
    for layout in ("grid", "frames", "middle"):
        caption = llava.caption(video(4), instruction, max_new_tokens=5, layout=layout)
        words = caption.split()
        assert 1 <= len(words) <= 5, (layout, caption)  # only generated words (one per token)
        assert "USER:" not in caption and "ASSISTANT:" not in caption and "<image>" not in caption


def test_contact_sheet_puts_frames_in_time_order():
    from comfyui_audiovisual.encoders.captioner import GRID_GAP, contact_sheet

    frames = torch.stack([torch.full((10, 20, 3), i / 10) for i in range(5)])
    sheet = contact_sheet(frames)
    assert sheet.shape == (2 * 10 + GRID_GAP, 3 * 20 + 2 * GRID_GAP, 3)  # 3 columns, 2 rows
    for i in range(5):
        r, c = divmod(i, 3)
        cell = sheet[r * (10 + GRID_GAP):r * (10 + GRID_GAP) + 10, c * (20 + GRID_GAP):c * (20 + GRID_GAP) + 20]
        assert torch.allclose(cell, torch.tensor(i / 10))
    assert sheet[10 + GRID_GAP:, 2 * (20 + GRID_GAP):].abs().max() == 0  # the empty sixth cell
    big = contact_sheet(torch.rand(9, 600, 800, 3), max_side=1024)
    assert max(big.shape[:2]) <= 1024


def test_generation_reports_every_token_and_stops_when_progress_raises(captioners):
    seen = []

    class Stop(Exception):
        pass

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        captioners["llava"].caption(video(), "describe", max_new_tokens=9, progress=progress)
    assert seen == [(1, 9), (2, 9)]


def test_out_of_memory_propagates_while_other_generation_errors_become_value_errors(captioners, monkeypatch):
    """The caller (a node) must see OutOfMemoryError to free memory or retry elsewhere; other runtime
    errors of the model or its processor are a ValueError naming the captioner."""
    blip = captioners["blip"]

    def fail(error):
        def call(*args, **kwargs):
            raise error
        return call

    monkeypatch.setattr(blip.model, "generate", fail(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")))
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2 GiB"):
        blip.caption(video(), "the sound of", max_new_tokens=3)
    monkeypatch.setattr(blip.model, "generate", fail(RuntimeError("shapes do not match")))
    with pytest.raises(ValueError, match=r"'tiny_blip' could not generate from 1 image\(s\) \(shapes do not match\)"):
        blip.caption(video(), "the sound of", max_new_tokens=3)
    monkeypatch.setattr(blip, "processor", fail(torch.OutOfMemoryError("CUDA out of memory in the processor")))
    with pytest.raises(torch.OutOfMemoryError, match="in the processor"):
        blip.caption(video(), "the sound of", max_new_tokens=3)
    monkeypatch.setattr(blip, "processor", fail(RuntimeError("bad image")))
    with pytest.raises(ValueError, match=r"'tiny_blip': its processor refused 1 image\(s\) and the instruction \(bad image\)"):
        blip.caption(video(), "the sound of", max_new_tokens=3)


def test_bad_frames_and_a_captioning_model_given_several_images_are_refused(captioners):
    with pytest.raises(ValueError, match="frames: expected images"):
        captioners["llava"].caption(torch.zeros(0, 8, 8, 3), "describe")
    with pytest.raises(ValueError, match="NaN"):
        captioners["llava"].caption(torch.full((2, 8, 8, 3), float("nan")), "describe")
    with pytest.raises(ValueError, match="captioning model and takes one image; use layout 'grid' or 'middle'"):
        captioners["blip"].caption(video(3), "", layout="frames")


def test_folders_of_the_wrong_kind_are_refused_naming_the_folder(models, tmp_path):
    from comfyui_audiovisual.encoders.captioner import load_captioner

    clip = write_tiny_clip(str(tmp_path / "a_clip"))
    with pytest.raises(ValueError, match=r"a_clip' holds model_type 'clip' in config.json, which does not write text from "
                                         r"images; expected a transformers vision-language model folder"):
        load_captioner(clip)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty' has no config.json; expected a transformers vision-language model"):
        load_captioner(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_captioner(str(tmp_path / "missing"))
    bare = write_tiny_llava(str(tmp_path / "llava_without_processor"), with_processor=False)
    with pytest.raises(ValueError, match=r"llava_without_processor' has no tokenizer files"):
        load_captioner(bare)
    pickled = write_tiny_llava(str(tmp_path / "pickled_llava"))
    os.replace(os.path.join(pickled, "model.safetensors"), os.path.join(pickled, "pytorch_model.bin"))
    with pytest.raises(ValueError, match=r"pickled_llava' has no .safetensors weights \(pickled weights such as "
                                         r"'pytorch_model.bin' are not loaded\)"):
        load_captioner(pickled)


# ----------------------------------------------------------------------------------------------
# through the host
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_models(host, models):
    """The captioners in av_captioners; a VLM and a T5 in text_encoders; a tiny VATT with text."""
    from comfyui_audiovisual.audio.codec_tokenizer import save_codec
    from tiny_vatt import tiny_vatt_codec, write_tiny_vatt_decoder

    base = models["base"]
    root = base / "av_captioners"
    write_tiny_blip(str(root / "tiny_blip"))
    write_tiny_llava(str(root / "group" / "tiny_llava"))
    write_tiny_llava(str(base / "text_encoders" / "vlm_in_text_encoders"))
    write_tiny_t5(str(base / "text_encoders" / "cap_tiny_t5"))
    write_tiny_clip_vision(str(base / "clip_vision" / "cap_tiny_clip"))
    codec = tiny_vatt_codec(seed=0)
    save_codec(codec, str(base / "codecs" / "cap_tiny_codec"))
    write_tiny_vatt_decoder(str(base / "vatt" / "cap_tiny_vatt_text.safetensors"), codec, CLIP_PROJECTION,
                            video_model="cap_tiny_clip", text_dim=T5_WIDTH, text_family="t5", text_model="cap_tiny_t5", seed=1)
    for key, sub in (("av_captioners", "av_captioners"), ("text_encoders", "text_encoders"), ("clip_vision", "clip_vision"),
                     ("av_codecs", "codecs"), ("av_vatt", "vatt")):
        host.folder_paths.add_model_folder_path(key, str(base / sub))
    return base


def caption_node(frames_link, **inputs):
    from comfyui_audiovisual.encoders.captioner import DEFAULT_INSTRUCTION

    values = {"captioner": ["1", 0], "frames": frames_link, "fps": 2.0, "rate_hz": 1.0, "max_frames": 8, "layout": "grid",
              "instruction": DEFAULT_INSTRUCTION, "max_new_tokens": 6, "temperature": 0.0, "seed": 0, "prefix": "", "suffix": ""}
    values.update(inputs)
    return {"class_type": "AV_CaptionVideo", "inputs": values}


def test_load_captioner_lists_vision_language_folders_only(host, host_models):
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadCaptioner"].INPUT_TYPES()["required"]["captioner_name"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert {"av_captioners/tiny_blip", "av_captioners/group/tiny_llava", "text_encoders/vlm_in_text_encoders"} <= set(names)
    assert "text_encoders/cap_tiny_t5" not in names  # a text encoder is not offered as a captioner


def test_the_caption_reaches_the_hosts_string_nodes(host, host_models):
    from comfyui_audiovisual.encoders.captioner import DEFAULT_INSTRUCTION, load_captioner

    prompt = {
        "1": {"class_type": "AV_LoadCaptioner", "inputs": {"captioner_name": "av_captioners/group/tiny_llava"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 4, "color": 0x336699}},
        "3": caption_node(["2", 0], prefix="the", suffix=", early"),
        "4": {"class_type": "StringConcatenate", "inputs": {"string_a": ["3", 0], "string_b": "rain", "delimiter": " and "}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    values, history = execute_prompt(host, prompt, ["3", "4"])
    caption = values["3"]
    # the plain captioner on the same frames: 4 frames at 2 fps sampled at 1 Hz = frames 0 and 2
    frames = torch.tensor([0x33, 0x66, 0x99]).div(255).expand(2, 24, 40, 3)
    generated = load_captioner(str(host_models / "av_captioners" / "group" / "tiny_llava")).caption(frames, DEFAULT_INSTRUCTION,
                                                                                                    max_new_tokens=6)
    assert generated and caption == f"the {generated}, early"
    assert values["4"] == f"{caption} and rain"  # the STRING went on to the host's node
    assert history["3"]["text"] == [caption]  # shown on the node
    assert history["5"]["text"] == [f"{caption} and rain"]


def test_caption_video_needs_frames_and_a_captioner(host, host_models):
    from comfyui_audiovisual.encoders.captioner import load_captioner
    from comfyui_audiovisual.nodes.captioning import CaptionVideo

    captioner = load_captioner(str(host_models / "av_captioners" / "tiny_blip"))
    args = dict(rate_hz=1.0, max_frames=8, layout="grid", instruction="", max_new_tokens=4, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match=r"^Caption Video \(audio\): the video has no frames"):
        CaptionVideo.execute(captioner, frames=torch.zeros(0, 8, 8, 3), fps=8.0, **args)
    with pytest.raises(ValueError, match=r"^Caption Video \(audio\): connect a VIDEO or an IMAGE batch"):
        CaptionVideo.execute(captioner, **args)
    with pytest.raises(ValueError, match=r"^Caption Video \(audio\): connect a captioner from Load Video Captioner"):
        CaptionVideo.execute(None, frames=video(), fps=8.0, **args)
    out = CaptionVideo.execute(captioner, frames=video(), fps=8.0, **dict(args, layout="frames", max_frames=1))
    assert out.result[0] and out.ui == {"text": [out.result[0]]}  # one frame is fine for a captioning model


def test_a_wrong_folder_is_refused_by_the_loader_node(host, host_models):
    from comfyui_audiovisual.nodes.captioning import LoadCaptioner

    write_tiny_t5(str(host_models / "av_captioners" / "a_t5"))
    with pytest.raises(ValueError, match=r"^Load Video Captioner: '.*a_t5' holds model_type 't5' in config.json"):
        LoadCaptioner.execute("av_captioners/a_t5")
    with pytest.raises(FileNotFoundError, match=r"^Load Video Captioner: captioner folder 'nothing' .* not found"):
        LoadCaptioner.execute("av_captioners/nothing")


def test_a_caption_steers_the_vatt_decoder_end_to_end(host, host_models, run_graph, tmp_path):
    """Caption Video -> Encode Text's text (a widget fed by a link) -> VATT Sampler's text: audio as long as the video."""
    prompt = {
        "1": {"class_type": "AV_LoadCaptioner", "inputs": {"captioner_name": "av_captioners/tiny_blip"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 20, "color": 0x336699}},
        "3": caption_node(["2", 0], fps=10.0, instruction="the sound of", suffix=", early"),
        "4": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "clip_vision/cap_tiny_clip"}},
        "5": {"class_type": "AV_LoadEncoder", "inputs": {"encoder_name": "text_encoders/cap_tiny_t5"}},
        "6": {"class_type": "AV_EncodeText", "inputs": {"encoder": ["5", 0], "text": ["3", 0], "t5_tokens": 0}},
        "7": {"class_type": "AV_VATTVideoFeatures", "inputs": {"encoder": ["4", 0], "frames": ["2", 0], "fps": 10.0,
                                                              "rate_hz": 5.0, "tokens": 10}},
        "8": {"class_type": "AV_LoadCodec", "inputs": {"codec_name": "cap_tiny_codec"}},
        "9": {"class_type": "AV_LoadVATT", "inputs": {"model_name": "cap_tiny_vatt_text.safetensors"}},
        "10": {"class_type": "AV_VATTSampler", "inputs": {"vatt": ["9", 0], "codec": ["8", 0], "video_features": ["7", 0],
                                                         "seed": 0, "steps": 2, "cfg": 5.0, "top_k": 256, "temperature": 25.5,
                                                         "duration_s": 0.0, "text": ["6", 0]}},
        "11": {"class_type": "AV_SaveAudioWAV", "inputs": {"audio": ["10", 0], "filename_prefix": "audiovisual/captioned"}},
    }
    runs = []
    for suffix in (", early", ", early", ", very late"):
        prompt["3"]["inputs"]["suffix"] = suffix
        written = run_graph(prompt, out_dir=tmp_path / f"out{len(runs)}")
        with wave.open(written["11"][0]) as f:
            rate, samples = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        assert rate == 16000 and samples.shape == (2 * 16000,)  # 20 frames at 10 fps: 2 s
        assert np.abs(samples).max() > 0
        runs.append(samples)
    assert np.array_equal(runs[0], runs[1])  # same caption, same seed: same sound
    assert not np.array_equal(runs[0], runs[2])  # another caption steers the decoder elsewhere
