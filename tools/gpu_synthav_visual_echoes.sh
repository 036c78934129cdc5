#!/usr/bin/env bash
# The Visual Echoes SynthAV default, rebuilt from scratch on a GPU in one time-boxed call:
# the recipe of training/synthav_defaults.py with large batches, the transformer in bf16, the two
# tokenizers trained as concurrent processes, and the transformer's steps sized from its measured
# step rate so that the whole run (evaluation included) ends within DEADLINE seconds.
# Everything it makes lands in OUT_DIR: the three model files, the tokenizer ceilings, the
# held-out token accuracy, `evaluate` of both tasks, and the log.
#
#   [RECIPE=cpu|gpu] bash tools/gpu_synthav_visual_echoes.sh OUT_DIR [DEADLINE_SECONDS]
#
# RECIPE (default cpu, the architecture of the shipped weights): which recipe's model shapes to train;
# the sizes below (scenes, steps, batches) are the GPU's either way.
#
# On the lent device machine (its image has torch but no diffusers; wheels carried in .whl/):
#   OUT_DIR=$OUT, run from the repository root.
set -uo pipefail
out=${1:?usage: gpu_synthav_visual_echoes.sh OUT_DIR [DEADLINE_SECONDS]}
deadline=${2:-530}
here=$(cd "$(dirname "$0")/.." && pwd)
# carried in .whl/ (git-ignored): wheels, and diffusers 0.42.1 without its pipelines (the tokenizers
# need only diffusers.models; the whole wheel would not fit in the device call's 64 MiB)
if ! python3 -c "import diffusers" 2>/dev/null && [ -d "$here/.whl" ]; then
  mkdir -p /tmp/site
  ls "$here"/.whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$here"/.whl/*.whl
  for t in "$here"/.whl/*.tgz; do [ -f "$t" ] && tar xzf "$t" -C /tmp/site; done
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# the repository root is the package: make it importable as comfyui_audiovisual
mkdir -p /tmp/pack && ln -sfn "$here" /tmp/pack/comfyui_audiovisual
export PYTHONPATH=/tmp/pack:${PYTHONPATH:-} PYTHONUNBUFFERED=1
work=${WORK:-/tmp/synthav_visual_echoes}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/device.txt" 2>/dev/null || echo cpu > "$out/device.txt"
python3 -m comfyui_audiovisual.training.synthav_defaults --work "$work" --recipe "${RECIPE:-cpu}" --device cuda --workers "$(nproc)" \
  --scenes 24000 --vq-steps 2000 --vq-batch 128 --decoder-steps 300 --decoder-batch 64 \
  --maskgen-batch 512 --precision bf16 --parallel-tokenizers --deadline-seconds "$deadline" --reserve-seconds 70 \
  --evaluate 16 2>&1 | tee "$out/log.txt" || echo "synthav_defaults failed: keeping what it made" | tee -a "$out/log.txt"
# what exists comes back, even from a run cut short (the transformer checkpoints every 500 steps)
for f in models/vq/synthav_image_vq.safetensors models/vq/synthav_spec_vq.safetensors models/maskgen/synthav_maskgen.safetensors; do
  [ -f "$work/$f" ] && cp "$work/$f" "$out/"
done
[ -f "$work/models/maskgen/synthav_maskgen.safetensors" ] || { [ -f "$work/maskgen/model.safetensors" ] && cp "$work/maskgen/model.safetensors" "$out/maskgen_checkpoint.safetensors"; }
for f in image_vq_decoder spec_vq_decoder image_vq spec_vq; do
  [ -f "$out/synthav_${f%_decoder}.safetensors" ] || { [ -f "$work/$f.safetensors" ] && cp "$work/$f.safetensors" "$out/synthav_${f%_decoder}.safetensors"; }
done
python3 - "$work" "$out" <<'PY'
import json, os, sys
work, out = sys.argv[1:]
summary = {}
for name in ("tokenizer_ceilings", "maskgen_token_accuracy", "evaluate_image2audio", "evaluate_audio2image"):
    path = os.path.join(work, name + ".json")
    if os.path.exists(path):
        summary[name] = json.load(open(path))
for key, path in (("pipeline_log", "pipeline_log.json"), ("maskgen_log", "maskgen/log.jsonl")):
    if os.path.exists(os.path.join(work, path)):
        summary[key] = [json.loads(line) for line in open(os.path.join(work, path))]
json.dump(summary, open(os.path.join(out, "results.json"), "w"), indent=1)
PY
