"""Load Vocoder lists only what it can load (issue 17): MelGAN files (zip or legacy pickle, safetensors)
and HiFiGAN folders, not a HiFiGAN folder's own model.safetensors nor other files; each listed entry loads.
Of those it lists only the vocoders the pack's mels fit (SpecVQGAN's: 80 bins, 22050 Hz, hop 256)."""

import pytest
import torch
from safetensors.torch import save_file

from comfyui_audiovisual.loaders.vocoders import load_vocoder, vocoder_entry_kind
from tiny_checkpoints import tiny_melgan, write_melgan_checkpoint, write_speecht5_hifigan_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vocoder_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocoders")
    melgan = tiny_melgan(seed=1)
    (root / "specvqgan").mkdir()
    write_melgan_checkpoint(melgan, str(root / "specvqgan" / "best_netG.pt"))
    write_melgan_checkpoint(melgan, str(root / "melgan.safetensors"))
    torch.save(dict(melgan.state_dict()), str(root / "melgan_legacy.pt"), _use_new_zipfile_serialization=False)
    write_speecht5_hifigan_folder(str(root / "audioldm_hifigan"), model_in_dim=64)  # AudioLDM's: 64 mels
    write_speecht5_hifigan_folder(str(root / "speecht5_hifigan"), model_in_dim=80, sampling_rate=16000, upsample_rates=(4, 4, 4, 4))  # SpeechT5's
    write_speecht5_hifigan_folder(str(root / "hifigan_22k"), model_in_dim=80, sampling_rate=22050, upsample_rates=(4, 4, 4, 4))
    write_speecht5_hifigan_folder(str(root / "hifigan_22k_hop128"), model_in_dim=80, sampling_rate=22050, upsample_rates=(4, 4, 8))
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(root / "a_vae.safetensors"))
    torch.save({"encoder.weight": torch.zeros(2)}, str(root / "other.ckpt"))
    (root / "broken.pt").write_bytes(b"not a checkpoint")
    return root


LOADABLE = ["audioldm_hifigan", "speecht5_hifigan", "hifigan_22k", "hifigan_22k_hop128", "melgan.safetensors", "melgan_legacy.pt",
            "specvqgan/best_netG.pt"]
NOT_LOADABLE = ["audioldm_hifigan/model.safetensors", "a_vae.safetensors", "other.ckpt", "broken.pt"]
# they load, but no AV_MEL fits them: 64 mels, 16 kHz, hop 128
LISTED = [name for name in LOADABLE if name not in ("audioldm_hifigan", "speecht5_hifigan", "hifigan_22k_hop128")]


def test_entry_kinds_match_what_load_vocoder_does(vocoder_folder):
    for name in LOADABLE:
        assert vocoder_entry_kind(vocoder_folder / name) in ("melgan", "hifigan"), name
        load_vocoder(vocoder_folder / name)
    for name in NOT_LOADABLE:
        assert vocoder_entry_kind(vocoder_folder / name) is None, name
        with pytest.raises((ValueError, FileNotFoundError)):
            load_vocoder(vocoder_folder / name)
    assert vocoder_entry_kind(vocoder_folder / "audioldm_hifigan") == "hifigan"


def test_load_vocoder_lists_only_loadable_entries(host, vocoder_folder):
    host.folder_paths.add_model_folder_path("av_vocoders", str(vocoder_folder))
    options = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadVocoder"].INPUT_TYPES()["required"]["vocoder_name"]
    names = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert names[0] == "griffin-lim"
    assert sorted(names[1:]) == sorted(LISTED)


def test_an_entry_it_cannot_load_is_refused_before_the_run(host, vocoder_folder):
    import asyncio
    import uuid

    host.folder_paths.add_model_folder_path("av_vocoders", str(vocoder_folder))

    def problems(name):
        prompt = {"1": {"class_type": "AV_LoadVocoder", "inputs": {"vocoder_name": name}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        ok, _error, _outputs, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
        return None if ok else node_errors["1"]["errors"][0]["details"]

    assert problems("griffin-lim") is None and problems("specvqgan/best_netG.pt") is None
    assert "Load Vocoder: 'audioldm_hifigan/model.safetensors' is not a vocoder this node reads" in problems("audioldm_hifigan/model.safetensors")
    assert "Load Vocoder: model file 'nowhere.pt' not found" in problems("nowhere.pt")
    assert problems("hifigan_22k") is None and problems("melgan.safetensors") is None
    # a 16 kHz HiFiGAN (SpeechT5's) would make each 11.6 ms mel frame 16 ms of sound
    assert ("Load Vocoder: 'speecht5_hifigan' takes mels at 16000 Hz (hop 256), but Vocode Mel to Audio gets the pack's mels "
            "(22050 Hz, hop 256, SpecVQGAN's, from Tokens to Mel or Audio to Mel): its sound would last 1.38x as long as the mel; "
            "choose a 22050 Hz hop-256 vocoder or griffin-lim") == problems("speecht5_hifigan").removeprefix("vocoder_name - ")
    assert "'hifigan_22k_hop128' takes mels at 22050 Hz (hop 128)" in problems("hifigan_22k_hop128")
    assert "would last 0.50x as long as the mel" in problems("hifigan_22k_hop128")
    assert ("Load Vocoder: 'audioldm_hifigan' takes 64-bin mels, but Vocode Mel to Audio gets the pack's mels (80 bins"
            in problems("audioldm_hifigan"))
