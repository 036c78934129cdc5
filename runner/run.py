"""Runs a workflow through the host's real validator and executor, inside this process.

Files are produced in a private staging folder and moved to the output folder only when the whole
graph succeeded, so a failed or interrupted run leaves nothing half-written.
"""

import os
import shutil
import sys
import tempfile
import uuid
from typing import Any, Callable

from . import host as host_boot
from .workflow_format import (
    WorkflowFormatError,
    apply_overrides,
    find_structural_error,
    is_api_format,
    is_ui_format,
    read_workflow_file,
    ui_to_api,
)


class WorkflowError(Exception):
    """A workflow that did not run. `str()` is one line naming the node and the problem."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None):
        self.node_id = node_id
        self.class_type = class_type
        self.problem = message
        where = f"node {node_id} ({class_type}): " if node_id and class_type else (f"node {node_id}: " if node_id else "")
        super().__init__(where + " ".join(str(message).split()))


class _QuietServer:
    """Stands in for PromptServer: the executor reports through `send_sync`; we keep nothing."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict = {}

    def send_sync(self, *args, **kwargs):
        pass


def _stderr_progress_hook(value, total, preview_image, prompt_id=None, node_id=None):
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()
    width = 30
    filled = int(width * value / max(total, 1))
    end = "\n" if value >= total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {value}/{total}{end}")
    sys.stderr.flush()


def to_api_prompt(workflow: dict | str, overrides: dict[str, Any] | None = None, host: "host_boot.Host | None" = None) -> dict:
    """Reads (path) or takes (dict) a UI- or API-format workflow and returns a checked API prompt."""
    host = host or host_boot.boot()
    mappings = host.nodes.NODE_CLASS_MAPPINGS

    def input_types_of(class_type: str) -> dict | None:
        cls = mappings.get(class_type)
        return cls.INPUT_TYPES() if cls is not None else None

    if isinstance(workflow, str):
        workflow = read_workflow_file(workflow)
    if is_api_format(workflow):
        prompt = {str(k): {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {}))} for k, v in workflow.items()}
    elif is_ui_format(workflow):
        prompt = ui_to_api(workflow, input_types_of)
    else:
        raise WorkflowFormatError("not a workflow: expected the editor's format (with 'nodes' and 'links') or the API format ({id: {class_type, inputs}})")
    error = find_structural_error(prompt, lambda c: isinstance(c, str) and c in mappings)
    if error is not None:
        raise error
    apply_overrides(prompt, overrides or {}, input_types_of)
    return prompt


def _validation_error(host, prompt: dict) -> WorkflowError | None:
    import asyncio

    ok, error, _outputs, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    if node_errors:
        node_id, info = next(iter(node_errors.items()))
        reason = info["errors"][0] if info.get("errors") else {"message": "invalid", "details": ""}
        details = f": {reason['details']}" if reason.get("details") else ""
        return WorkflowError(f"{reason['message']}{details}", node_id, info.get("class_type"))
    if not ok:
        details = f": {error['details']}" if error.get("details") else ""
        return WorkflowError(f"{error['message']}{details}")
    return None


def _collect_files(history_outputs: dict, staging_dir: str) -> list[tuple[str, str]]:
    """(node id, staged path) of every file the output nodes saved (type 'output')."""
    files = []
    for node_id, ui in history_outputs.items():
        for entries in ui.values():
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if isinstance(entry, dict) and entry.get("type") == "output" and "filename" in entry:
                    path = os.path.join(staging_dir, entry.get("subfolder") or "", entry["filename"])
                    if os.path.isfile(path):
                        files.append((node_id, path))
    return files


def run_workflow(
    workflow: dict | str,
    overrides: dict[str, Any] | None = None,
    out_dir: str = "output",
    cpu: bool = False,
    progress: Callable | None = _stderr_progress_hook,
    quiet: bool = True,
) -> dict[str, list[str]]:
    """Runs a workflow (a path or a dict, UI or API format) on the host in this process.

    Returns {node id: [paths of the files it wrote]}; raises WorkflowError (one line, naming the
    node) on any problem, in which case nothing is written to `out_dir`.
    """
    try:
        if isinstance(workflow, str):  # a broken file is reported before the host is booted
            workflow = read_workflow_file(workflow)
        host = host_boot.boot(cpu=cpu, quiet=quiet)
    except WorkflowFormatError as e:
        raise WorkflowError(str(e)) from None
    except (FileNotFoundError, RuntimeError) as e:
        raise WorkflowError(str(e)) from None
    try:
        prompt = to_api_prompt(workflow, overrides, host)
    except WorkflowFormatError as e:
        raise WorkflowError(str(e), e.node_id, e.class_type) from None
    error = _validation_error(host, prompt)
    if error is not None:
        raise error

    import comfy.utils

    folder_paths = host.folder_paths
    staging_dir = tempfile.mkdtemp(prefix="av-run-")
    previous_output_dir = folder_paths.get_output_directory()
    previous_hook = comfy.utils.PROGRESS_BAR_HOOK
    try:
        folder_paths.set_output_directory(staging_dir)
        comfy.utils.set_progress_bar_global_hook(progress)
        executor = host.execution.PromptExecutor(_QuietServer(), cache_type=host.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})
        prompt_id = uuid.uuid4().hex
        output_nodes = [nid for nid, n in prompt.items() if getattr(host.nodes.NODE_CLASS_MAPPINGS[n["class_type"]], "OUTPUT_NODE", False)]
        executor.execute(prompt, prompt_id, {}, output_nodes)
        if not executor.success:
            raise _execution_error(executor, prompt)
        staged = _collect_files(executor.history_result["outputs"], staging_dir)
        os.makedirs(out_dir, exist_ok=True)
        written: dict[str, list[str]] = {}
        for node_id, path in staged:
            target = os.path.join(out_dir, os.path.relpath(path, staging_dir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(path, target)
            written.setdefault(node_id, []).append(os.path.abspath(target))
        return written
    finally:
        comfy.utils.set_progress_bar_global_hook(previous_hook)
        folder_paths.set_output_directory(previous_output_dir)
        shutil.rmtree(staging_dir, ignore_errors=True)


def _execution_error(executor, prompt: dict) -> WorkflowError:
    for event, data in reversed(executor.status_messages):
        if event == "execution_error":
            return WorkflowError(data.get("exception_message", "failed"), data.get("node_id"), data.get("node_type"))
        if event == "execution_interrupted":
            return WorkflowError("interrupted", data.get("node_id"), data.get("node_type"))
    return WorkflowError("the run failed without an error message")
