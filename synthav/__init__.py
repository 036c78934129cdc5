"""SynthAV: the procedural audio-visual world, its analysers and the evaluation (see README.md)."""
from .world import (CLIP_S, MEL_FRAMES, N_SAMPLES, SAMPLE_RATE, Scene, SceneObject, Video, make_scene,
                    make_video, render_audio, render_image)
from .split import HELDOUT_COMBOS, heldout_scene, training_scene, unseen_combo_scene

__all__ = ["CLIP_S", "MEL_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "Scene", "SceneObject", "Video", "make_scene",
           "make_video", "render_audio", "render_image", "HELDOUT_COMBOS", "heldout_scene", "training_scene",
           "unseen_combo_scene"]
