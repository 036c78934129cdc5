"""Headless runner and server: boots a real ComfyUI with the pack loaded through the host's own
custom-node loading. Everything here imports the host lazily, after `host.boot()`."""

from .run import WorkflowError, run_workflow

__all__ = ["WorkflowError", "run_workflow"]
