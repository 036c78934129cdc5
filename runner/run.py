"""Runs a workflow through the host's real validator and executor, inside this process.

Files are produced in a private run folder and moved to the output folder only when the whole graph
succeeded, all or nothing, so a failed, interrupted or half-saved run leaves nothing behind. They never
replace an earlier result: a file named with the host's counter (`name_00001_.wav`) is renumbered as
the host would number it in the output folder (`_00002_` after `_00001_`).
"""

import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
import warnings
from contextlib import contextmanager
from typing import Any, Callable

from . import host as host_boot
from .workflow_format import (
    UPLOAD_FLAGS,
    WorkflowFormatError,
    apply_overrides,
    find_non_finite_number,
    find_structural_error,
    is_api_format,
    is_ui_format,
    read_workflow_file,
    ui_to_api,
)

COUNTED_NAME = re.compile(r"^(?P<stem>.+)_(?P<counter>\d{5,})_(?P<rest>.*)$")
"""A file named with the host's counter, as its save nodes write them: `{prefix}_{counter:05}_{rest}`."""
ANNOTATIONS = (" [input]", " [output]", " [temp]")
INPUTS_SUBFOLDER = "inputs"
"""Inside the run's temp folder: input files given by a path outside the host's input folder."""
MAX_PICTURE_PIXELS = 4096 * 4096
"""Input pictures above this are refused before the host decodes them (a 12000 x 12000 picture takes
1.7 GB as the host's float IMAGE, and every model of the pack works at 256 x 256 or so)."""
MAX_MEDIA_SECONDS = 600.0
"""Input audio and video longer than this are refused before the host decodes them whole (the pack's
models take clips of about 10 s; the host's loaders read the whole file into memory)."""


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


_progress_line_open = False


def _stderr_progress_hook(value, total, preview_image, prompt_id=None, node_id=None):
    global _progress_line_open
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()
    width = 30
    filled = int(width * value / max(total, 1))
    end = "\n" if value >= total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {value}/{total}{end}")
    sys.stderr.flush()
    _progress_line_open = value < total


def _close_progress_line() -> None:
    """Ends a progress bar a stopped node left open, so that an error starts its own line."""
    global _progress_line_open
    if _progress_line_open:
        sys.stderr.write("\n")
        sys.stderr.flush()
    _progress_line_open = False


def _input_types_of(host):
    mappings = host.nodes.NODE_CLASS_MAPPINGS

    def input_types_of(class_type: str) -> dict | None:
        cls = mappings.get(class_type)
        return cls.INPUT_TYPES() if cls is not None else None

    return input_types_of


def to_api_prompt(workflow: dict | str, overrides: dict[str, Any] | None = None, host: "host_boot.Host | None" = None) -> dict:
    """Reads (path) or takes (dict) a UI- or API-format workflow and returns a checked API prompt."""
    host = host or host_boot.boot()
    mappings = host.nodes.NODE_CLASS_MAPPINGS
    input_types_of = _input_types_of(host)

    if isinstance(workflow, str):
        workflow = read_workflow_file(workflow)
    if is_api_format(workflow):
        prompt = {str(k): {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {}))} for k, v in workflow.items()}
    elif is_ui_format(workflow):
        prompt = ui_to_api(workflow, input_types_of)
    else:
        raise WorkflowFormatError("not a workflow: expected the editor's format (with 'nodes' and 'links') or the API format ({id: {class_type, inputs}})")
    apply_overrides(prompt, overrides or {}, input_types_of)
    error = find_structural_error(prompt, lambda c: isinstance(c, str) and c in mappings,
                                  lambda c: list(getattr(mappings[c], "RETURN_NAMES", None) or mappings[c].RETURN_TYPES))
    error = error or find_non_finite_number(prompt, input_types_of)
    if error is not None:
        raise error
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


def check_out_dir(out_dir: str) -> None:
    """Refuses, before anything runs, an output folder that is a file or cannot be written in."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkflowError(f"output folder {out_dir}: it is a file; expected a folder (existing or to be made)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkflowError(f"output folder {out_dir}: {existing} is a file, so the folder cannot be made")
    try:
        fd, probe = tempfile.mkstemp(prefix=".av-write-check-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise WorkflowError(f"output folder {out_dir}: cannot write in {existing} ({e.strerror or e})") from None


def resolve_input_files(prompt: dict, input_types_of: Callable[[str], dict | None], input_dir: str, run_temp_dir: str) -> None:
    """Input files (the file inputs of LoadImage, LoadAudio, LoadVideo...: combos with an upload
    button) given by path: the current folder first, then the host's input folder. A file found
    outside the input folder is linked (or copied) into the run's temp folder and named `... [temp]`
    for the host, which reads inputs only from its own folders. Raises WorkflowError naming both
    places when neither has the file."""
    for node_id, node in prompt.items():
        types = input_types_of(node["class_type"]) or {}
        for name, value in list(node["inputs"].items()):
            spec = (types.get("required") or {}).get(name) or (types.get("optional") or {}).get(name)
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not isinstance(value, str) or not any(options.get(flag) for flag in UPLOAD_FLAGS) or value.endswith(ANNOTATIONS):
                continue
            here = os.path.abspath(os.path.expanduser(value))
            kind = next(flag.split("_")[0] for flag in UPLOAD_FLAGS if options.get(flag))
            if os.path.isfile(here):
                check_input_file(here, kind, f"input file '{value}' ({name})", node_id, node["class_type"])
                if os.path.commonpath([here, os.path.abspath(input_dir)]) == os.path.abspath(input_dir):
                    node["inputs"][name] = os.path.relpath(here, input_dir)
                    continue
                folder = tempfile.mkdtemp(dir=os.path.join(run_temp_dir, INPUTS_SUBFOLDER))
                target = os.path.join(folder, os.path.basename(here))
                try:
                    os.link(here, target)
                except OSError:
                    shutil.copyfile(here, target)
                node["inputs"][name] = f"{os.path.relpath(target, run_temp_dir)} [temp]"
            elif not os.path.isabs(value) and os.path.isfile(os.path.join(input_dir, value)):
                check_input_file(os.path.join(input_dir, value), kind, f"input file '{value}' ({name})", node_id, node["class_type"])
            elif os.path.isabs(os.path.expanduser(value)):
                raise WorkflowError(f"input file '{value}' ({name}) does not exist", node_id, node["class_type"])
            else:
                raise WorkflowError(f"input file '{value}' ({name}) not found in the current folder ({os.getcwd()}) "
                                    f"nor in the host's input folder ({input_dir})", node_id, node["class_type"])


def check_input_file(path: str, kind: str, what: str, node_id: str, class_type: str) -> None:
    """Refuses, before the host decodes it, a picture above MAX_PICTURE_PIXELS, audio or video longer
    than MAX_MEDIA_SECONDS, a video without frames, or a file that is not what the input takes.
    `kind` is the input's upload kind: image, audio, video (anything else is not checked)."""
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the pack's limit
                with Image.open(path) as picture:
                    width, height = picture.size
        except Image.DecompressionBombError:
            raise WorkflowError(f"{what} is far above the limit of {MAX_PICTURE_PIXELS / 1e6:.1f} megapixels (4096 x 4096): "
                                "shrink it first", node_id, class_type) from None
        except (UnidentifiedImageError, OSError) as e:
            raise WorkflowError(f"{what} is not a picture that can be read ({e})", node_id, class_type) from None
        if width * height > MAX_PICTURE_PIXELS:
            raise WorkflowError(f"{what} is {width} x {height} pixels; the limit is {MAX_PICTURE_PIXELS / 1e6:.1f} megapixels "
                                f"(4096 x 4096): shrink it first", node_id, class_type)
    elif kind in ("audio", "video"):
        import av

        try:
            with av.open(path) as container:
                seconds = container.duration / 1e6 if container.duration else None
                if kind == "video":
                    if not container.streams.video:
                        raise WorkflowError(f"{what} has no video stream", node_id, class_type)
                    if not any(packet.size for packet in container.demux(container.streams.video[0])):
                        raise WorkflowError(f"{what} has no video frames", node_id, class_type)
                elif not container.streams.audio:
                    raise WorkflowError(f"{what} has no audio stream", node_id, class_type)
        except av.error.FFmpegError as e:
            raise WorkflowError(f"{what} is not a {kind} file that can be read ({e})", node_id, class_type) from None
        if seconds is not None and seconds > MAX_MEDIA_SECONDS:
            raise WorkflowError(f"{what} is {seconds:.1f} s long; the limit is {MAX_MEDIA_SECONDS:.0f} s: cut it first "
                                "(the pack's models take clips of 10 s at most)", node_id, class_type)


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


def _targets(host, staged: list[tuple[str, str]], staging_dir: str, out_dir: str) -> list[tuple[str, str, str]]:
    """(node id, staged path, target path) with counted names renumbered after the output folder's own
    files, by the host's own counter (folder_paths.get_save_image_path), keeping the run's order."""
    groups: dict[str, list[int]] = {}
    for _, path in staged:
        relative = os.path.relpath(path, staging_dir)
        match = COUNTED_NAME.match(os.path.basename(relative))
        if match:
            groups.setdefault(os.path.join(os.path.dirname(relative), match["stem"]), []).append(int(match["counter"]))
    first_free = {}
    for prefix, counters in groups.items():
        folder = os.path.join(out_dir, os.path.dirname(prefix))
        if os.path.isdir(folder):
            counter = host.folder_paths.get_save_image_path(prefix, out_dir)[2]
        else:
            counter = 1
        first_free[prefix] = counter - min(counters)
    targets = []
    for node_id, path in staged:
        relative = os.path.relpath(path, staging_dir)
        match = COUNTED_NAME.match(os.path.basename(relative))
        if match:
            prefix = os.path.join(os.path.dirname(relative), match["stem"])
            counter = int(match["counter"]) + first_free[prefix]
            relative = os.path.join(os.path.dirname(relative), f"{match['stem']}_{counter:0{len(match['counter'])}}_{match['rest']}")
        target = os.path.join(out_dir, relative)
        if os.path.lexists(target):
            raise WorkflowError(f"the output file {target} already exists; nothing was written (its node names files without the host's counter)",
                                node_id)
        targets.append((node_id, path, target))
    return targets


def _move_all_or_nothing(targets: list[tuple[str, str, str]], out_dir: str) -> dict[str, list[str]]:
    """Moves every staged file to its target, never replacing a file; on any failure, removes what
    this call moved and the folders it made, and raises WorkflowError."""
    made_dirs, placed = [], []
    try:
        for node_id, path, target in targets:
            folder = os.path.dirname(target)
            missing = []
            while not os.path.isdir(folder):
                missing.append(folder)
                folder = os.path.dirname(folder)
            for folder in reversed(missing):
                os.mkdir(folder)
                made_dirs.append(folder)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # reserve the name: never replace a file
            os.close(fd)
            placed.append(target)
            try:
                os.replace(path, target)
            except OSError:  # another file system: copy beside the target, then rename over the reserved name
                partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
                try:
                    shutil.copyfile(path, partial)
                    os.replace(partial, target)
                finally:
                    if os.path.exists(partial):
                        os.remove(partial)
    except OSError as e:
        for target in placed:
            if os.path.lexists(target):
                os.remove(target)
        for folder in reversed(made_dirs):
            try:
                os.rmdir(folder)
            except OSError:
                pass
        where = e.filename or out_dir
        raise WorkflowError(f"could not save the outputs in {out_dir}: {where}: {e.strerror or e}; nothing was written") from None
    written: dict[str, list[str]] = {}
    for node_id, _, target in targets:
        written.setdefault(node_id, []).append(os.path.abspath(target))
    return written


@contextmanager
def _ctrl_c_interrupts_the_run(host):
    """Ctrl-C (SIGINT) asks the host to stop, as its own /interrupt does: the running node stops at its
    next step and the run fails as 'interrupted'. A second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = []

    def on_sigint(signum, frame):
        presses.append(signum)
        if len(presses) > 1:
            raise KeyboardInterrupt
        host.nodes.interrupt_processing(True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
    check_out_dir(out_dir)
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

    import comfy.utils

    folder_paths = host.folder_paths
    run_dir = tempfile.mkdtemp(prefix="av-run-")
    staging_dir, temp_dir = os.path.join(run_dir, "output"), os.path.join(run_dir, "temp")
    os.makedirs(os.path.join(temp_dir, INPUTS_SUBFOLDER))
    os.mkdir(staging_dir)
    previous_dirs = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    previous_hook = comfy.utils.PROGRESS_BAR_HOOK
    try:
        resolve_input_files(prompt, _input_types_of(host), folder_paths.get_input_directory(), temp_dir)
        folder_paths.set_output_directory(staging_dir)
        folder_paths.set_temp_directory(temp_dir)
        error = _validation_error(host, prompt)
        if error is not None:
            raise error
        comfy.utils.set_progress_bar_global_hook(progress)
        executor = host_boot.new_executor(host, _QuietServer())
        prompt_id = uuid.uuid4().hex
        output_nodes = [nid for nid, n in prompt.items() if getattr(host.nodes.NODE_CLASS_MAPPINGS[n["class_type"]], "OUTPUT_NODE", False)]
        with _ctrl_c_interrupts_the_run(host):
            executor.execute(prompt, prompt_id, {}, output_nodes)
        if not executor.success:
            raise _execution_error(executor, run_dir, out_dir)
        staged = sorted(_collect_files(executor.history_result["outputs"], staging_dir), key=lambda item: item[1])
        out_abs = os.path.abspath(out_dir)
        return _move_all_or_nothing(_targets(host, staged, staging_dir, out_abs), out_abs)
    finally:
        _close_progress_line()
        comfy.utils.set_progress_bar_global_hook(previous_hook)
        folder_paths.set_output_directory(previous_dirs[0])
        folder_paths.set_temp_directory(previous_dirs[1])
        shutil.rmtree(run_dir, ignore_errors=True)


def _execution_error(executor, run_dir: str, out_dir: str) -> WorkflowError:
    for event, data in reversed(executor.status_messages):
        if event == "execution_error":
            message = str(data.get("exception_message", "failed"))
            if "outside the output folder is not allowed" in message:  # the host's save-path refusal speaks of "image"
                message = (f"the filename_prefix points outside the output folder ({os.path.abspath(out_dir)}); "
                           "give a file name, optionally with subfolders, inside it")
            # the host's messages name its output folder, which during the run is our staging folder
            message = message.replace(os.path.join(run_dir, "output"), os.path.abspath(out_dir))
            message = message.replace(run_dir, os.path.dirname(os.path.abspath(out_dir)))
            return WorkflowError(message, data.get("node_id"), data.get("node_type"))
        if event == "execution_interrupted":
            return WorkflowError("interrupted; nothing was written", data.get("node_id"), data.get("node_type"))
    return WorkflowError("the run failed without an error message")
