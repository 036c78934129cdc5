"""`serve`: the host's own server (main.py) on 127.0.0.1, with the pack linked into custom_nodes; the
command becomes the server process itself."""

import os
import sys

from .host import PACK_LINK_NAME, _pick_cpu
from .host_location import PACK_DIR, find_host_dir


def link_pack_into(host_dir: str) -> None:
    """Makes sure HOST/custom_nodes/comfyui-audiovisual points at this pack."""
    custom_nodes = os.path.join(host_dir, "custom_nodes")
    os.makedirs(custom_nodes, exist_ok=True)
    link = os.path.join(custom_nodes, PACK_LINK_NAME)
    if os.path.realpath(link) != PACK_DIR:
        if os.path.islink(link):
            os.remove(link)
        os.symlink(PACK_DIR, link)


def server_command(port: int, cpu: bool = False, extra: list[str] | None = None) -> list[str]:
    host_dir = find_host_dir()
    link_pack_into(host_dir)
    command = [sys.executable, os.path.join(host_dir, "main.py"), "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    if _pick_cpu(cpu):
        command.append("--cpu")
    return command + list(extra or [])


DEFAULT_TEMPLATE = "image_to_audio"
"""The template the editor opens on (the README's main job), through the frontend's own
`?template=NAME&source=MODULE` address (frontends 1.32 and 1.49 alike), instead of the host's SD1.5 graph."""


def editor_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/?template={DEFAULT_TEMPLATE}&source={PACK_LINK_NAME}"


def serve(port: int = 8188, cpu: bool = False, extra_model_paths=()) -> int:
    """Becomes the host's server (exec, same process id): stopping this process stops the server, and
    no child is left on the port. `extra_model_paths`: extra_model_paths.yaml files for the host."""
    from .model_paths import host_arguments

    command = server_command(port, cpu, host_arguments(extra_model_paths))
    print(f"serving ComfyUI with comfyui-audiovisual; open the editor on the default workflow at {editor_url(port)}",
          file=sys.stderr, flush=True)
    os.chdir(os.path.dirname(command[1]))
    os.execv(command[0], command)
    return 1  # not reached
