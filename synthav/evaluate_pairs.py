"""Scoring the two Visual Echoes tasks that make or edit a pair: co-generation and audio inpainting.

Co-generation has no input, so there is no scene to score against. Instead, the generated picture
is read by the image analysers. Its objects (shape, colour, size, column) become the scene the
generated sound should belong to. The sound is scored against that scene with the usual audio
metrics. A pair whose picture holds no object, or more than the world allows, is counted as wrong on
every attribute.

Inpainting starts from a held-out scene's picture and its true sound. The audio tokens of a time
range (default 0.5-1.5 s, as in the `audio_inpainting` template) are regenerated with the picture as
the condition. The result, cut to the regenerated range, is scored against the scene's objects whose notes lie
wholly inside it.
Every token outside the range must come back unchanged (`kept_tokens_unchanged`). As a control,
the kept part's mel is compared with the true sound's.
"""

from __future__ import annotations

import numpy as np
import torch

from . import split as S
from ..samplers.visual_echoes import TEMPERATURE
from .analysers import detect_objects
from .evaluate import AUDIO_METRICS, score_audio
from .world import MEL_FRAMES, NOTE_S, SAMPLE_RATE, Scene, SceneObject, render_audio, render_image


def scene_from_picture(image: np.ndarray, seed: int = 0) -> Scene | None:
    """The SynthAV scene an analysed picture shows (1 or 2 objects in distinct columns), or None."""
    detections = sorted(detect_objects(image), key=lambda d: -d.area)
    if not 1 <= len(detections) <= 2 or len({d.column for d in detections}) != len(detections):
        return None
    objects = tuple(SceneObject(d.shape, d.colour, d.size, d.column, float(d.cx), float(d.cy)) for d in detections)
    return Scene(seed=seed, objects=objects)


def evaluate_cogeneration(models, n: int = 32, steps: int = 30, cfg: float = 3.0, temperature: float = TEMPERATURE,
                          seed: int = 0, batch_size: int = 16) -> dict:
    """Co-generate `n` pairs; score each sound against the scene its own picture shows."""
    from ..loaders.vocoders import load_vocoder
    from ..samplers.visual_echoes import audio_sequence_to_grid, image_sequence_to_grid, visual_echoes_sample

    image_tok, spec_tok, model = models
    vocoder = load_vocoder("griffin-lim")
    rows = spec_tok.grid_shape(80, MEL_FRAMES)[0]
    side = int(round(model.config.image_seq_len ** 0.5))
    scenes, waves, unreadable = [], [], 0
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        generator = torch.Generator().manual_seed(seed + start)
        with torch.inference_mode():
            audio, image = visual_echoes_sample(model, "co_generate", batch_size=count, steps=steps, cfg=cfg,
                                                temperature=temperature, generator=generator)
            pictures = image_tok.decode_image(image_sequence_to_grid(image, side, side)).float().cpu().numpy()
            sounds = vocoder(spec_tok.decode_mel(audio_sequence_to_grid(audio, rows)).clamp(0, 1).float().cpu()).numpy()
        for picture, sound in zip(pictures, sounds):
            scene = scene_from_picture(picture)
            if scene is None:
                unreadable += 1
                continue
            scenes.append(scene)
            waves.append(sound)
    result = {"task": "co_generation", "n": n, "unreadable_pictures": unreadable}
    if scenes:
        scores = score_audio(scenes, waves)
        readable = len(scenes) / n  # an unreadable picture is wrong on everything
        result.update({k: scores[k] * readable for k in AUDIO_METRICS + ("all_acc", "count_acc")})
        result.update({k: scores[k] for k in scores if k.endswith("_precision") or k == "extra_rate"})
        result["objects_per_picture"] = float(np.mean([len(s.objects) for s in scenes]))
    else:
        result.update({k: 0.0 for k in AUDIO_METRICS + ("all_acc", "count_acc")})
    return result


def evaluate_inpainting(models, n: int = 32, start_s: float = 0.5, end_s: float = 1.5, steps: int = 30,
                        cfg: float = 3.0, temperature: float = TEMPERATURE, seed: int = 0, batch_size: int = 16) -> dict:
    """Regenerate the audio tokens of [start_s, end_s) of `n` held-out scenes from their pictures."""
    from ..audio.mel_frontend import SPECVQGAN_MEL, waveform_to_mel
    from ..loaders.vocoders import load_vocoder
    from ..samplers.visual_echoes import (audio_columns_for_seconds, audio_grid_to_sequence, audio_sequence_to_grid,
                                          audio_time_range_mask, image_grid_to_sequence, visual_echoes_sample)

    image_tok, spec_tok, model = models
    vocoder = load_vocoder("griffin-lim")
    rows, columns = spec_tok.grid_shape(80, MEL_FRAMES)
    seconds_per_column = (MEL_FRAMES // columns) * SPECVQGAN_MEL.hop_samples / SPECVQGAN_MEL.sample_rate_hz
    first, last = audio_columns_for_seconds(start_s, end_s, columns, seconds_per_column)
    mask = audio_time_range_mask(rows, columns, first, last)
    scenes = S.scenes("heldout", n)
    scored_scenes, scored_waves, kept_same, kept_l1, true_l1 = [], [], [], [], []
    for start in range(0, n, batch_size):
        chunk = scenes[start:start + batch_size]
        images = torch.tensor(np.stack([render_image(s) for s in chunk]))
        mels = waveform_to_mel(torch.tensor(np.stack([render_audio(s) for s in chunk])))
        generator = torch.Generator().manual_seed(seed + start)
        with torch.inference_mode():
            image_tokens = image_grid_to_sequence(image_tok.encode_image(images))
            audio_tokens = audio_grid_to_sequence(spec_tok.encode_mel(mels))
            audio, _ = visual_echoes_sample(model, "inpaint_audio", audio_tokens=audio_tokens, image_tokens=image_tokens,
                                            audio_mask=mask, steps=steps, cfg=cfg, temperature=temperature,
                                            generator=generator)
            mel_out = spec_tok.decode_mel(audio_sequence_to_grid(audio, rows)).clamp(0, 1)
            mel_in = spec_tok.decode_mel(audio_sequence_to_grid(audio_tokens, rows)).clamp(0, 1)
            sounds = vocoder(mel_out.float().cpu()).numpy()
        kept_same.extend((audio[:, ~mask] == audio_tokens[:, ~mask]).all(1).tolist())
        frames = MEL_FRAMES // columns
        kept = torch.ones(mel_out.shape[-1], dtype=torch.bool)
        kept[first * frames:last * frames] = False
        kept_l1.append(float((mel_out[..., kept] - mel_in[..., kept]).abs().mean()))
        true_l1.append(float((mel_in[..., kept] - mels[..., :mel_in.shape[-1]][..., kept]).abs().mean()))
        for scene, sound in zip(chunk, sounds):
            inside = tuple(o for o in scene.objects if start_s <= o.onset_s and o.onset_s + NOTE_S <= end_s)
            if inside:
                scored_scenes.append(Scene(seed=scene.seed, objects=inside))
                # keep only the regenerated range, so notes outside it are neither credited nor counted as extra
                lo, hi = int(first * seconds_per_column * SAMPLE_RATE), int(last * seconds_per_column * SAMPLE_RATE)
                clipped = np.zeros_like(sound)
                clipped[lo:hi] = sound[lo:hi]
                scored_waves.append(clipped)
    scores = score_audio(scored_scenes, scored_waves) if scored_scenes else {}
    result = {"task": "inpaint_audio", "n": n, "range_s": [start_s, end_s], "columns": [first, last],
              "scored_scenes": len(scored_scenes), "scored_objects": sum(len(sc.objects) for sc in scored_scenes),
              "kept_tokens_unchanged": float(np.mean(kept_same)),
              "kept_mel_l1_vs_tokenized_input": float(np.mean(kept_l1)),
              "tokenizer_mel_l1_on_kept_range": float(np.mean(true_l1))}
    result.update({k: v for k, v in scores.items() if k.endswith("_acc") or k.endswith("_precision") or k == "extra_rate"})
    return result


__all__ = ["scene_from_picture", "evaluate_cogeneration", "evaluate_inpainting"]
