"""Boots a real ComfyUI inside this process, with this pack loaded by the host's own loader.

The host is imported only here, and only once per process. Order matters (see docs/host.md of the
project): `comfy.cli_args.args` must be set before `comfy.model_management` is imported, and
`utils.extra_config` before `nodes`.
"""

import asyncio
import atexit
import inspect
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from types import ModuleType

from .host_location import PACK_DIR, find_host_dir

PACK_LINK_NAME = "comfyui-audiovisual"
PACK_PROBE_NODE = "AV_SaveAudioWAV"  # a node that is always registered when the pack loaded


@dataclass
class Host:
    """Handles to the booted host's modules."""

    host_dir: str
    nodes: ModuleType
    execution: ModuleType
    folder_paths: ModuleType
    cpu: bool


_HOST: Host | None = None


class _KeptRecords(logging.Handler):
    """Keeps the host's log records in memory (the last 500)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records = self.records[-499:] + [record]


HOST_LOG = _KeptRecords()


def _pick_cpu(force_cpu: bool) -> bool:
    if force_cpu:
        return True
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return not (torch.cuda.is_available() or has_mps)


def boot(cpu: bool = False, quiet: bool = True) -> Host:
    """Imports and initialises the host once; later calls return the same `Host`.

    `cpu=True` forces CPU; without it the CPU is used only when torch sees no GPU.
    """
    global _HOST
    if _HOST is not None:
        return _HOST
    host_dir = find_host_dir()
    if host_dir not in sys.path:
        sys.path.insert(0, host_dir)
    if quiet:
        # The host logs validation failures and loading chatter over many lines; the runner
        # reports one line itself. Keep the records so a failed pack load can still be explained.
        logging.getLogger().handlers[:] = [HOST_LOG]
        logging.getLogger().setLevel(logging.INFO)
    else:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from comfy.cli_args import args

    use_cpu = _pick_cpu(cpu)
    args.cpu = use_cpu
    args.disable_auto_launch = True
    import folder_paths

    # Load only this pack as a custom node, through a private folder holding a link to it.
    custom_nodes_dir = tempfile.mkdtemp(prefix="av-custom-nodes-")
    atexit.register(shutil.rmtree, custom_nodes_dir, True)  # the host keeps its path for the process's life
    os.symlink(PACK_DIR, os.path.join(custom_nodes_dir, PACK_LINK_NAME))
    folder_paths.folder_names_and_paths["custom_nodes"] = ([custom_nodes_dir], set())

    import utils.extra_config  # noqa: F401  (must precede `nodes`)
    from .model_paths import load_host_model_paths

    load_host_model_paths(host_dir)  # HOST/extra_model_paths.yaml, as the host's main.py reads it
    import execution
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    if PACK_PROBE_NODE not in nodes.NODE_CLASS_MAPPINGS:
        errors = [r.getMessage() for r in HOST_LOG.records if r.levelno >= logging.WARNING][-3:]
        raise RuntimeError(f"the comfyui-audiovisual pack did not load in the host at {host_dir}: " + " | ".join(errors))
    _HOST = Host(host_dir=host_dir, nodes=nodes, execution=execution, folder_paths=folder_paths, cpu=use_cpu)
    return _HOST


class _ClassicCacheArgs(dict):
    """The `cache_args` the host's own main.py gives its PromptExecutor under `--cache-classic`: the LRU
    size from the host's args and no RAM headroom (0 GB) for each RAM setting it reads. 0.3.75 reads
    "ram"; 0.33 also "ram_inactive" (its execute_async reads both whatever the cache type); a setting a
    later host adds reads 0 as well, as main.py gives it under --cache-classic."""

    def __missing__(self, key):
        return 0


def new_executor(host: Host, server):
    """A PromptExecutor set up as the host's main.py sets one up for `--cache-classic` (a one-shot
    run keeps no outputs between prompts), reporting to `server` (an object with `send_sync`,
    `client_id`, `last_node_id`)."""
    from comfy.cli_args import args

    cache_args = _ClassicCacheArgs(lru=getattr(args, "cache_lru", 0))
    return host.execution.PromptExecutor(server, cache_type=host.execution.CacheType.CLASSIC, cache_args=cache_args)


def cached_output(executor, node_id: str):
    """The executor's cached output of a node after a run (the cache's get() is a coroutine on 0.33+)."""
    value = executor.caches.outputs.get(node_id)
    if inspect.isawaitable(value):
        value = asyncio.run(value)
    return value
