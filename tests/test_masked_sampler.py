"""The shared masked sampler (MaskGIT/MAGE with CFG) and the Visual Echoes glue."""

import math

import pytest
import torch

from comfyui_audiovisual.networks.masked_transformer import MaskedAVTransformer, MaskedAVTransformerConfig
from comfyui_audiovisual.samplers.masked_sampler import (
    guided_logits,
    masked_count_after_step,
    masked_sample,
    reveal_schedule,
)
from comfyui_audiovisual.samplers.visual_echoes import (
    audio_grid_to_sequence,
    audio_sequence_to_grid,
    audio_time_range_mask,
    build_visual_echoes_problem,
    image_region_mask,
    visual_echoes_sample,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeModel:
    """Deterministic, row-wise model_fn: fixed random logits per (codebook, position), shifted by
    an offset that depends on the visible tokens (so revealed context matters) and, for
    unconditional rows, by a different fixed tensor. Records every call."""

    def __init__(self, codebooks, length, vocab, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.conditional = torch.randn(codebooks, length, vocab, generator=g) * 2
        self.unconditional = torch.randn(codebooks, length, vocab, generator=g) * 2
        self.mix = torch.randn(vocab, vocab, generator=g) * 0.1
        self.calls = []

    def __call__(self, tokens, masked, drop_condition):
        self.calls.append((tokens.shape[0], drop_condition.clone()))
        base = torch.where(drop_condition[:, None, None, None], self.unconditional, self.conditional)
        visible = torch.nn.functional.one_hot(tokens, self.mix.shape[0]).float() * (~masked).unsqueeze(-1)
        context = visible.sum(dim=(1, 2)) @ self.mix  # [b, V]
        return base + context[:, None, None, :]


def sample(model_fn, tokens, target, seed=0, **kwargs):
    return masked_sample(model_fn, tokens, target, generator=torch.Generator().manual_seed(seed), **kwargs)


def full_target(batch, codebooks, length):
    return torch.zeros(batch, codebooks, length, dtype=torch.long), torch.ones(batch, codebooks, length, dtype=torch.bool)


# ----------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("num_target,steps", [(265, 30), (48, 8), (5, 12), (1, 3), (2000, 16)])
def test_reveal_schedule_matches_the_reference_formula(schedule, num_target, steps):
    counts = reveal_schedule(num_target, steps, schedule)
    assert len(counts) == steps and sum(counts) == num_target and all(c >= 0 for c in counts)
    masked = num_target
    for step, revealed in enumerate(counts[:-1]):
        ratio = (step + 1) / steps
        keep = math.floor(num_target * (math.cos(math.pi / 2 * ratio) if schedule == "cosine" else 1 - ratio))
        assert masked - revealed == max(1, min(masked - 1, keep))
        masked -= revealed
    assert masked_count_after_step(num_target, masked, steps - 1, steps, schedule) == 0


# ----------------------------------------------------------------------------------------------
# sampler invariants
# ----------------------------------------------------------------------------------------------
def test_all_revealed_monotone_and_counts_follow_the_schedule():
    batch, codebooks, length, vocab, steps = 2, 1, 40, 12, 10
    model = FakeModel(codebooks, length, vocab)
    tokens, target = full_target(batch, codebooks, length)
    target[1, 0, :15] = False  # row 1 has 25 target slots
    tokens[1, 0, :15] = 3
    seen = []

    def callback(step, total, current, still_masked):
        seen.append((step, total, current.clone(), still_masked.clone()))

    result = sample(model, tokens, target, steps=steps, callback=callback)
    assert [s[0] for s in seen] == list(range(steps)) and {s[1] for s in seen} == {steps}
    assert not seen[-1][3].any()
    assert result.shape == tokens.shape and int(result.min()) >= 0 and int(result.max()) < vocab
    for row, num_target in ((0, 40), (1, 25)):
        previous_masked = target[row].sum().item()
        schedule = reveal_schedule(num_target, steps)
        for step, (_, _, current, still_masked) in enumerate(seen):
            assert previous_masked - still_masked[row].sum().item() == schedule[step]
            previous_masked = still_masked[row].sum().item()
    # revealed tokens never change afterwards
    for (_, _, earlier, masked_then), (_, _, later, _) in zip(seen, seen[1:]):
        revealed = ~masked_then
        assert torch.equal(earlier[revealed], later[revealed])
    assert torch.equal(result, seen[-1][2])


def test_non_target_slots_are_passed_through():
    model = FakeModel(1, 30, 9)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 9, (3, 1, 30), generator=g)
    target = torch.rand(3, 1, 30, generator=g) < 0.4
    result = sample(model, tokens, target, steps=6)
    assert torch.equal(result[~target], tokens[~target])


def test_seed_determinism():
    model = FakeModel(1, 50, 16)
    tokens, target = full_target(2, 1, 50)
    first = sample(model, tokens, target, seed=11, steps=8)
    assert torch.equal(first, sample(model, tokens, target, seed=11, steps=8))
    assert not torch.equal(first, sample(model, tokens, target, seed=12, steps=8))


def test_cfg_one_runs_only_the_conditional_pass():
    model = FakeModel(1, 24, 10)
    tokens, target = full_target(2, 1, 24)
    result = sample(model, tokens, target, steps=5, cfg=1.0)
    assert len(model.calls) == 5
    assert all(rows == 2 and not drop.any() for rows, drop in model.calls)

    # the same as guidance with any scale on a model whose unconditional pass equals its conditional one
    def conditional_only(tokens_, masked_, drop_condition):
        return model(tokens_, masked_, torch.zeros_like(drop_condition))

    for mode in ("batched", "two_pass"):
        guided = sample(conditional_only, tokens, target, steps=5, cfg=4.0, cfg_mode=mode)
        assert torch.equal(result, guided)


def test_batched_cfg_equals_two_pass():
    model = FakeModel(2, 20, 11)
    tokens, target = full_target(3, 2, 20)
    model.calls.clear()
    batched = sample(model, tokens, target, steps=7, cfg=3.0, cfg_mode="batched")
    assert len(model.calls) == 7 and all(rows == 6 for rows, _ in model.calls)
    assert all(torch.equal(drop, torch.tensor([False] * 3 + [True] * 3)) for _, drop in model.calls)
    model.calls.clear()
    two_pass = sample(model, tokens, target, steps=7, cfg=3.0, cfg_mode="two_pass")
    assert len(model.calls) == 14
    assert torch.equal(batched, two_pass)


def test_guidance_formula():
    model = FakeModel(1, 6, 5)
    tokens, masked = torch.zeros(1, 1, 6, dtype=torch.long), torch.ones(1, 1, 6, dtype=torch.bool)
    expected = model.unconditional + 2.5 * (model.conditional - model.unconditional)
    assert torch.allclose(guided_logits(model, tokens, masked, 2.5, "two_pass")[0], expected, atol=1e-5)
    assert torch.allclose(guided_logits(model, tokens, masked, 0.0)[0], model.unconditional)


def test_batched_cfg_equals_two_pass_on_the_transformer():
    torch.manual_seed(0)
    config = MaskedAVTransformerConfig(audio_vocab_size=16, image_vocab_size=16, audio_seq_len=10,
                                       image_seq_len=8, dim=32, encoder_depth=1, decoder_depth=1, num_heads=4)
    model = MaskedAVTransformer(config).eval()
    image = torch.randint(0, 16, (2, 8))
    problem = build_visual_echoes_problem(model, "image_to_audio", image_tokens=image, cfg=3.0)
    masked = problem.target.clone()
    with torch.no_grad():
        batched = guided_logits(problem.model_fn, problem.tokens, masked, 3.0, "batched")
        two_pass = guided_logits(problem.model_fn, problem.tokens, masked, 3.0, "two_pass")
    assert torch.allclose(batched, two_pass, atol=1e-4, rtol=1e-4)


def test_k4_grids_schedule_counts_codebooks_jointly():
    batch, codebooks, length, steps = 2, 4, 12, 6
    model = FakeModel(codebooks, length, 8)
    tokens, target = full_target(batch, codebooks, length)
    counts = []
    result = sample(model, tokens, target, steps=steps, top_k=3,
                    callback=lambda s, t, cur, m: counts.append(m.view(batch, -1).sum(1).tolist()))
    assert result.shape == (batch, codebooks, length)
    expected, masked = [], codebooks * length
    for revealed in reveal_schedule(codebooks * length, steps):
        masked -= revealed
        expected.append([masked] * batch)
    assert counts == expected


def test_top_k_one_and_zero_temperature_take_the_mode():
    model = FakeModel(1, 16, 7)
    model.mix.zero_()  # logits independent of context
    tokens, target = full_target(1, 1, 16)
    mode = model.conditional.argmax(-1)
    assert torch.equal(sample(model, tokens, target, steps=4, cfg=1.0, top_k=1)[0], mode)
    assert torch.equal(sample(model, tokens, target, steps=4, cfg=1.0, sampling_temperature=0.0)[0], mode)


def test_lowest_confidence_slots_stay_masked():
    length, vocab = 20, 6

    def peaked(tokens, masked, drop_condition):
        logits = torch.zeros(tokens.shape[0], 1, length, vocab)
        logits[..., 0] = torch.arange(length, dtype=torch.float32) * 0.5  # later slots more confident
        return logits

    tokens, target = full_target(1, 1, length)
    first = []
    # argmax sampling: token 0 everywhere, its log-probability grows with the slot index
    sample(peaked, tokens, target, steps=4, cfg=1.0, temperature=0.0, sampling_temperature=0.0,
           callback=lambda s, t, cur, m: first.append(m.clone()) if s == 0 else None)
    revealed = reveal_schedule(length, 4)[0]
    assert torch.equal((~first[0][0, 0]).nonzero()[:, 0], torch.arange(length - revealed, length))


def test_interrupt_and_argument_errors():
    model = FakeModel(1, 8, 4)
    tokens, target = full_target(1, 1, 8)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        sample(model, tokens, target, steps=10, check_interrupt=interrupt)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="schedule"):
        sample(model, tokens, target, schedule="square")
    with pytest.raises(ValueError, match="target"):
        sample(model, tokens, target[..., :4])
    with pytest.raises(ValueError, match="model_fn returned"):
        sample(lambda t, m, d: torch.zeros(1, 8, 4), tokens, target, steps=2)


# ----------------------------------------------------------------------------------------------
# Visual Echoes
# ----------------------------------------------------------------------------------------------
AUDIO_ROWS, AUDIO_COLUMNS, IMAGE_SIDE = 5, 4, 4


@pytest.fixture(scope="module")
def ve_model():
    torch.manual_seed(1)
    config = MaskedAVTransformerConfig(audio_vocab_size=24, image_vocab_size=16,
                                       audio_seq_len=AUDIO_ROWS * AUDIO_COLUMNS, image_seq_len=IMAGE_SIDE ** 2,
                                       dim=32, encoder_depth=1, decoder_depth=1, num_heads=4)
    return MaskedAVTransformer(config).eval()


def test_audio_grid_order_is_column_major():
    grid = torch.arange(2 * 5 * 3).reshape(2, 5, 3)  # [B, mel rows, time columns]
    sequence = audio_grid_to_sequence(grid)
    assert sequence[0, :5].tolist() == grid[0, :, 0].tolist()  # first time column, all mel rows
    assert torch.equal(audio_sequence_to_grid(sequence, rows=5), grid)
    mask = audio_time_range_mask(5, 3, 1, 2)
    assert mask.tolist() == [False] * 5 + [True] * 5 + [False] * 5


@pytest.mark.parametrize("task", ["image_to_audio", "audio_to_image", "co_generate"])
def test_visual_echoes_tasks_shapes(ve_model, task):
    audio = torch.randint(0, 24, (2, 20))
    image = torch.randint(0, 16, (2, 16))
    steps_seen = []
    out_audio, out_image = visual_echoes_sample(
        ve_model, task, audio_tokens=audio, image_tokens=image, batch_size=None if task != "co_generate" else 2,
        steps=4, generator=torch.Generator().manual_seed(0),
        callback=lambda s, t, a, i: steps_seen.append((s, a.shape, i.shape)))
    assert out_audio.shape == (2, 20) and out_image.shape == (2, 16)
    assert steps_seen[-1] == (3, (2, 20), (2, 16)) and len(steps_seen) == 4
    assert int(out_audio.max()) < 24 and int(out_image.max()) < 16
    if task == "image_to_audio":
        assert torch.equal(out_image, image)
    if task == "audio_to_image":
        assert torch.equal(out_audio, audio)


def test_visual_echoes_unconditional_pass_masks_the_condition(ve_model):
    image = torch.randint(0, 16, (1, 16))
    problem = build_visual_echoes_problem(ve_model, "image_to_audio", image_tokens=image, cfg=3.0)
    assert problem.cfg == 3.0
    seen = []
    original = ve_model.forward

    def spy(audio_tokens, image_tokens, audio_masked, image_masked, drop=None):
        seen.append((audio_masked.clone(), image_masked.clone()))
        return original(audio_tokens, image_tokens, audio_masked, image_masked, drop)

    ve_model.forward = spy
    try:
        problem.model_fn(problem.tokens, problem.target, torch.tensor([False]))
        problem.model_fn(problem.tokens, problem.target, torch.tensor([True]))
    finally:
        del ve_model.forward
    (audio_c, image_c), (audio_u, image_u) = seen
    assert audio_c.all() and not image_c.any()
    assert audio_u.all() and image_u.all()
    co = build_visual_echoes_problem(ve_model, "co_generate", batch_size=3, cfg=3.0)
    assert co.cfg == 1.0 and co.tokens.shape == (3, 1, 36) and co.target.all()
    # vocabularies differ (24 vs 16): image logits padded, never sampled past 15
    logits = problem.model_fn(problem.tokens, problem.target, torch.tensor([False]))
    assert logits.shape == (1, 1, 36, 24)


def test_visual_echoes_inpainting_keeps_the_unmasked_region(ve_model):
    audio = torch.randint(0, 24, (2, 20))
    image = torch.randint(0, 16, (2, 16))
    audio_mask = audio_time_range_mask(AUDIO_ROWS, AUDIO_COLUMNS, 1, 3)
    out_audio, out_image = visual_echoes_sample(ve_model, "inpaint_audio", audio, image, audio_mask=audio_mask,
                                                steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_audio[:, ~audio_mask], audio[:, ~audio_mask]) and torch.equal(out_image, image)
    assert not torch.equal(out_audio[:, audio_mask], audio[:, audio_mask])

    image_mask = image_region_mask(IMAGE_SIDE, IMAGE_SIDE, 0, 0, 2, 2)
    out_audio, out_image = visual_echoes_sample(ve_model, "inpaint_image", audio, image, image_mask=image_mask,
                                                steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_image[:, ~image_mask], image[:, ~image_mask]) and torch.equal(out_audio, audio)

    # grids are accepted too: [B, 5 mel rows, columns] in, column-major sequence out
    audio_grid = audio_sequence_to_grid(audio, rows=AUDIO_ROWS)
    mask_grid = audio_sequence_to_grid(audio_mask[None], rows=AUDIO_ROWS)
    out_audio, _ = visual_echoes_sample(ve_model, "inpaint_audio", audio_grid, image, audio_mask=mask_grid,
                                        steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_audio[:, ~audio_mask], audio[:, ~audio_mask])

    # without the other modality there is nothing to guide with: cfg falls back to 1
    problem = build_visual_echoes_problem(ve_model, "inpaint_audio", audio, None, audio_mask=audio_mask)
    assert problem.cfg == 1.0


def test_visual_echoes_input_errors(ve_model):
    with pytest.raises(ValueError, match="image_tokens are required"):
        visual_echoes_sample(ve_model, "image_to_audio")
    with pytest.raises(ValueError, match=r"image_tokens: token ids must lie in \[0, 15\]"):
        visual_echoes_sample(ve_model, "image_to_audio", image_tokens=torch.full((1, 16), 16))
    with pytest.raises(ValueError, match="audio_mask is required"):
        visual_echoes_sample(ve_model, "inpaint_audio", audio_tokens=torch.zeros(1, 20, dtype=torch.long))
    with pytest.raises(ValueError, match="task must be one of"):
        visual_echoes_sample(ve_model, "video_to_audio")
