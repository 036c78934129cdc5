"""Visual Echoes image -> audio of any length (issue 20): windows of the model's grid, each after the first
continuing the previous one over a quarter window of known tokens (samplers.visual_echoes.image_to_audio_windows),
and the Visual Echoes Sampler's duration_s input."""

import math

import pytest
import torch

from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from comfyui_audiovisual.samplers import visual_echoes as ve
from comfyui_audiovisual.samplers.vatt import default_overlap, window_starts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS, WINDOW, SIDE = 5, 8, 4
OVERLAP = default_overlap(WINDOW)  # 2 columns


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    config = MaskedAVTransformerConfig(audio_vocab_size=24, image_vocab_size=16, audio_seq_len=ROWS * WINDOW,
                                       image_seq_len=SIDE * SIDE, dim=32, encoder_depth=1, decoder_depth=1, num_heads=4)
    return MaskedAVTransformer(config).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randint(0, 16, (1, SIDE * SIDE), generator=torch.Generator().manual_seed(7))


def long_audio(model, image, columns, seed=0, **kwargs):
    audio, _ = ve.image_to_audio_windows(model, image, columns, rows=ROWS, steps=4,
                                         generator=torch.Generator().manual_seed(seed), **kwargs)
    return ve.audio_sequence_to_grid(audio, ROWS)


def one_window(model, image, seed=0, **kwargs):
    audio, _ = ve.visual_echoes_sample(model, "image_to_audio", image_tokens=image, steps=4,
                                       generator=torch.Generator().manual_seed(seed), **kwargs)
    return ve.audio_sequence_to_grid(audio, ROWS)


def test_the_grid_has_the_columns_asked_for_and_the_first_window_is_the_single_window_result(model, image):
    for columns in (3, WINDOW, WINDOW + 1, 33):
        grid = long_audio(model, image, columns, seed=5)
        assert grid.shape == (1, ROWS, columns)
        first = one_window(model, image, seed=5)
        assert torch.equal(grid[..., :min(columns, WINDOW)], first[..., :min(columns, WINDOW)])


def test_each_window_continues_the_last_columns_of_the_previous_one(model, image, monkeypatch):
    real, calls = ve.visual_echoes_sample, []

    def spy(model_, task, *args, **kwargs):
        audio, image_out = real(model_, task, *args, **kwargs)
        calls.append((task, ve.audio_sequence_to_grid(audio, ROWS)))
        return audio, image_out

    monkeypatch.setattr(ve, "visual_echoes_sample", spy)
    columns = 27
    grid = long_audio(model, image, columns, seed=1)
    starts = window_starts(columns, WINDOW, OVERLAP)
    assert len(calls) == len(starts) == 5
    assert [task for task, _ in calls] == ["image_to_audio"] + ["inpaint_audio"] * 4
    for (_, before), (_, after) in zip(calls, calls[1:]):
        assert torch.equal(after[..., :OVERLAP], before[..., -OVERLAP:])  # the known columns were kept
        assert not torch.equal(after[..., OVERLAP:], before[..., OVERLAP:])  # the rest is new sound, not a copy
    joined = torch.cat([calls[0][1]] + [window[..., OVERLAP:] for _, window in calls[1:]], dim=-1)
    assert torch.equal(grid, joined[..., :columns])  # joined without repeating the overlap
    for start, (_, window) in zip(starts, calls):
        assert torch.equal(grid[..., start:start + WINDOW], window[..., :columns - start])


def test_overlap_zero_gives_independent_windows(model, image, monkeypatch):
    real, tasks = ve.visual_echoes_sample, []
    monkeypatch.setattr(ve, "visual_echoes_sample", lambda m, task, *a, **k: tasks.append(task) or real(m, task, *a, **k))
    grid = long_audio(model, image, 2 * WINDOW, overlap_columns=0)
    assert tasks == ["image_to_audio"] * 2 and grid.shape[-1] == 2 * WINDOW


def test_same_seed_same_tokens_another_seed_others_and_batches(model, image):
    assert torch.equal(long_audio(model, image, 20, seed=3), long_audio(model, image, 20, seed=3))
    assert not torch.equal(long_audio(model, image, 20, seed=3), long_audio(model, image, 20, seed=4))
    batch = long_audio(model, image, 20, seed=3, batch_size=3)
    assert batch.shape == (3, ROWS, 20)
    assert not torch.equal(batch[0], batch[1])


def test_progress_counts_every_window_and_interruption_stops_any_window(model, image):
    seen = []
    grid = long_audio(model, image, 20, callback=lambda step, total, audio, image_now: seen.append((step, total, audio.clone())))
    windows = len(window_starts(20, WINDOW, OVERLAP))
    assert [(s, t) for s, t, _ in seen] == [(s, windows * 4) for s in range(windows * 4)]
    assert torch.equal(ve.audio_sequence_to_grid(seen[-1][2], ROWS), grid)

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 6:  # in the second window
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        long_audio(model, image, 20, check_interrupt=interrupt)


def test_bad_lengths_are_refused(model, image):
    with pytest.raises(ValueError, match="columns must be a positive integer"):
        long_audio(model, image, 0)
    with pytest.raises(ValueError, match="overlap"):
        long_audio(model, image, 20, overlap_columns=WINDOW)


# ---------------------------------------------------------------------------------------------------------
# the node (the host's class, called directly on the tiny pack models)

@pytest.fixture
def sampler_node(host, tiny_models):
    load = host.nodes.NODE_CLASS_MAPPINGS["AV_LoadMaskedTransformer"]
    loaded = load.execute(model_name=tiny_models["maskgen"]).result[0]
    node = host.nodes.NODE_CLASS_MAPPINGS["AV_VisualEchoesSampler"]
    tokens_type = type(node.execute(loaded, "co_generate", 0, 1, 3.0, 2.0, "cosine").result[1])
    picture = tokens_type(torch.randint(0, loaded.model.config.image_vocab_size, (1, *loaded.image_grid),
                                        generator=torch.Generator().manual_seed(2)), "image", loaded.model.config.image_vocab_size)

    def run(**kwargs):
        arguments = dict(model=loaded, task="image_to_audio", seed=4, steps=3, cfg=3.0, temperature=2.0, schedule="cosine",
                         image_tokens=picture)
        return node.execute(**{**arguments, **kwargs}).result[0]

    return run, loaded, picture


def test_duration_zero_gives_exactly_todays_tokens(sampler_node):
    run, loaded, picture = sampler_node
    default, zero = run(), run(duration_s=0.0)
    with torch.inference_mode():
        audio, _ = ve.visual_echoes_sample(loaded.model, "image_to_audio", image_tokens=ve.image_grid_to_sequence(picture.indices),
                                           steps=3, cfg=3.0, temperature=2.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(default.indices, zero.indices)
    assert torch.equal(zero.indices, ve.audio_sequence_to_grid(audio, loaded.audio_grid[0]))


def test_a_duration_makes_the_grid_that_long_and_its_first_window_is_todays(sampler_node):
    run, loaded, _ = sampler_node
    grid = run(duration_s=6.0)
    columns = ve.audio_columns_for_seconds(0.0, 6.0, 10 ** 6, loaded.seconds_per_column)[1]
    assert grid.grid_shape == (loaded.audio_grid[0], columns) and columns == math.ceil(6.0 / loaded.seconds_per_column)
    assert torch.equal(grid.indices[..., :loaded.audio_grid[1]], run().indices)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_duration_is_refused_naming_the_node(sampler_node, bad):
    run, _, _ = sampler_node
    with pytest.raises(ValueError, match=r"^Visual Echoes Sampler: duration_s (must be a number of seconds >= 0|is (nan|inf); expected a finite number)"):
        run(duration_s=bad)


def test_a_duration_for_another_task_is_refused_naming_the_node(sampler_node):
    run, _, _ = sampler_node
    with pytest.raises(ValueError, match=r"^Visual Echoes Sampler: duration_s \(3.0 s\) applies to image_to_audio only; co_generate"):
        run(task="co_generate", duration_s=3.0)
    assert run(task="co_generate", duration_s=0.0) is not None
