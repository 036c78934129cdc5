"""SynthAV: the procedural audio-visual world, its analysers and the evaluation (see README.md).

Importing this package needs numpy only; torch / safetensors are imported where they are used.
"""
from .world import (CLIP_S, MEL_FRAMES, N_SAMPLES, SAMPLE_RATE, Scene, SceneObject, Video, make_scene,
                    make_video, render_audio, render_image)
from .split import (HELDOUT_COMBOS, SEEN_COMBOS, heldout_scene, scenes, training_scene, unseen_combo_scene)
from .analysers import detect_notes, detect_objects
from .evaluate import GroundTruthError, format_table, ground_truth_scores, score_audio, score_images
# (the harness is synthav.evaluate.evaluate: importing it here would hide the submodule `evaluate`)
from .dataset import load_dataset, make_dataset

__all__ = ["CLIP_S", "MEL_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "Scene", "SceneObject", "Video", "make_scene",
           "make_video", "render_audio", "render_image", "HELDOUT_COMBOS", "SEEN_COMBOS", "heldout_scene", "scenes",
           "training_scene", "unseen_combo_scene", "detect_notes", "detect_objects", "GroundTruthError",
           "format_table", "ground_truth_scores", "score_audio", "score_images", "load_dataset", "make_dataset"]
