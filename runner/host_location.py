"""Where the ComfyUI host lives: `COMFYUI_PATH`, else what setup.sh recorded, else `.comfyui/`."""

import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def find_host_dir() -> str:
    """Returns the ComfyUI folder (the one holding main.py) or raises FileNotFoundError."""
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(os.environ["COMFYUI_PATH"])
    recorded = os.path.join(sys.prefix, "comfyui-host-path")
    if os.path.isfile(recorded):
        with open(recorded, encoding="utf-8") as f:
            candidates.append(f.read().strip())
    candidates.append(os.path.join(PACK_DIR, ".comfyui"))
    for path in candidates:
        if os.path.isfile(os.path.join(path, "main.py")) and os.path.isfile(os.path.join(path, "nodes.py")):
            return os.path.abspath(path)
    raise FileNotFoundError(
        "no ComfyUI host found (looked at: " + ", ".join(candidates) + "); run setup.sh, or set COMFYUI_PATH "
        "to the folder that holds ComfyUI's main.py"
    )
