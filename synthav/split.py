"""The SynthAV split: training seeds, held-out seeds, and held-out (shape, colour) combinations.

* training scenes:     seeds 0 .. 999_999, objects drawn only from the 28 SEEN_COMBOS
* held-out scenes:     seeds 1_000_000 .. 1_999_999, same distribution as training (seen combos),
                       never trained on: generalisation to new backgrounds / placements / pairs
* unseen-combo scenes: seeds 2_000_000 .. 2_999_999, one object (picked at random) has one of the
                       4 HELDOUT_COMBOS, any second object a seen combo: compositional
                       generalisation (the shape and the colour were each seen, never together)

The 4 held-out combos use 4 different shapes and 4 different colours, so every shape and every
colour still occurs in training with most partners.
"""
from __future__ import annotations

from .world import ALL_COMBOS, COLOURS, SHAPES, Scene, SceneObject, make_scene

HELDOUT_COMBO_NAMES = (("circle", "green"), ("triangle", "magenta"), ("square", "orange"), ("star", "blue"))
HELDOUT_COMBOS = tuple((SHAPES.index(s), COLOURS.index(c)) for s, c in HELDOUT_COMBO_NAMES)
SEEN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELDOUT_COMBOS)

TRAIN_SEED_BASE = 0
HELDOUT_SEED_BASE = 1_000_000
UNSEEN_SEED_BASE = 2_000_000
SPLIT_SIZE = 1_000_000
SPLITS = ("train", "heldout", "unseen")


def _check(i: int, what: str) -> int:
    i = int(i)
    if not 0 <= i < SPLIT_SIZE:
        raise ValueError(f"synthav: {what} index {i} is outside 0..{SPLIT_SIZE - 1}")
    return i


def training_scene(i: int) -> Scene:
    return make_scene(TRAIN_SEED_BASE + _check(i, "training"), combos=SEEN_COMBOS)


def heldout_scene(i: int) -> Scene:
    return make_scene(HELDOUT_SEED_BASE + _check(i, "held-out"), combos=SEEN_COMBOS)


def unseen_combo_scene(i: int) -> Scene:
    return make_scene(UNSEEN_SEED_BASE + _check(i, "unseen-combo"), combos=SEEN_COMBOS,
                      first_combos=HELDOUT_COMBOS)


def is_heldout_combo(obj: SceneObject) -> bool:
    return obj.combo in HELDOUT_COMBOS


def split_scene(split: str, i: int) -> Scene:
    if split == "train":
        return training_scene(i)
    if split == "heldout":
        return heldout_scene(i)
    if split == "unseen":
        return unseen_combo_scene(i)
    raise ValueError(f"synthav: split {split!r} is not one of {list(SPLITS)}")


def scenes(split: str, n: int, start: int = 0) -> list[Scene]:
    """Scenes start .. start+n-1 of `split` ("train", "heldout" or "unseen")."""
    return [split_scene(split, i) for i in range(int(start), int(start) + int(n))]
