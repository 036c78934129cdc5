"""Workflow files: reading them, telling UI format from API format, and UI -> API conversion.

The host has no server-side converter, so this one follows what the editor's `graphToPrompt` does:
widget values are positional and map onto the node's widget inputs in schema order; a seed-like
widget (`control_after_generate`) is followed by its hidden control value ("fixed", "randomize"...),
and an upload combo (`image_upload`, ...) by the upload button's value; links become
`[source id, output slot]`. Editor-only nodes (notes, reroutes, primitives) are resolved away.
Muted nodes (mode 2) are left out, and so are the inputs they feed. Bypassed nodes (mode 4) are left
out too; an input they feed reads instead what feeds the bypassed node's input of a matching type
(`bypass_input_index`), or nothing when there is none.
A dynamic combo (`COMFY_DYNAMICCOMBO_V3`, current hosts' SaveVideo `format`) is a widget whose chosen
option brings its own widgets, which the editor (frontend dynamicWidgets.ts) inserts right after it,
named `parent.child` (required, then optional; nested combos likewise): `format`, `format.codec`.
"""

import json
import math
import os
from typing import Any, Callable

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload", "animated_image_upload", "upload")
EDITOR_ONLY_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MODE_MUTED = 2
MODE_BYPASSED = 4


class WorkflowFormatError(ValueError):
    """A workflow that cannot be read or converted. `node_id` names the node when there is one."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.class_type = class_type


def read_workflow_file(path: str) -> dict:
    """Reads a workflow JSON file; raises WorkflowFormatError naming the file on any problem."""
    if not os.path.isfile(path):
        raise WorkflowFormatError(f"{path}: no such workflow file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise WorkflowFormatError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise WorkflowFormatError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"{path}: expected a JSON object (a UI or API workflow), found {type(data).__name__}")
    return data


def is_api_format(workflow: dict) -> bool:
    return bool(workflow) and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())


def is_ui_format(workflow: dict) -> bool:
    return isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links", []), list)


def _kind_and_options(input_spec: Any) -> tuple[Any, dict]:
    if isinstance(input_spec, (list, tuple)):
        return input_spec[0] if input_spec else None, (input_spec[1] if len(input_spec) > 1 and input_spec[1] else {})
    return input_spec, {}


def _is_widget(input_spec: Any) -> bool:
    kind, options = _kind_and_options(input_spec)
    if options.get("forceInput"):
        return False
    if isinstance(kind, list):  # classic combo: the options list is the type
        return True
    return kind in WIDGET_TYPES or options.get("widgetType") in WIDGET_TYPES


def _widget_specs(input_types: dict, prefix: str = "") -> list[tuple[str, Any]]:
    return [(prefix + name, spec) for section in ("required", "optional")
            for name, spec in (input_types.get(section) or {}).items() if _is_widget(spec)]


def widget_names(input_types: dict) -> list[tuple[str, dict]]:
    """(name, options) of the widget inputs of a node, in the order the editor lays them out (a
    dynamic combo's own widgets depend on its value: see `dynamic_combo_widgets`)."""
    return [(name, _kind_and_options(spec)[1]) for name, spec in _widget_specs(input_types)]


def dynamic_combo_widgets(name: str, input_spec: Any, value: Any) -> list[tuple[str, Any]]:
    """(name, spec) of the widgets a dynamic combo `name` shows when set to `value`, as the editor
    inserts them after it: `name.child`, required then optional; [] for any other input."""
    kind, options = _kind_and_options(input_spec)
    if kind != DYNAMIC_COMBO:
        return []
    for option in options.get("options") or []:
        if isinstance(option, dict) and option.get("key") == value:
            return _widget_specs(option.get("inputs") or {}, prefix=name + ".")
    return []


def has_seed_control(name: str, options: dict) -> bool:
    """Whether the editor puts a "control after generate" widget after this one: its
    `control_after_generate` option, or, when that is not given, an input named seed or noise_seed
    (the frontend's rule)."""
    flag = options.get("control_after_generate")
    return bool(flag) if flag is not None else name in ("seed", "noise_seed")


def _assign_widget_values(node: dict, input_types: dict) -> dict:
    values = node.get("widgets_values")
    if values is None:
        return {}
    pending = _widget_specs(input_types)
    assigned, i = {}, 0
    while pending:
        name, spec = pending.pop(0)
        options = _kind_and_options(spec)[1]
        if isinstance(values, dict):  # some editors save widgets by name
            if name not in values:
                continue
            assigned[name] = values[name]
        else:
            if i >= len(values):
                break
            assigned[name] = values[i]
            i += 1
            if has_seed_control(name.rsplit(".", 1)[-1], options) and i < len(values) and values[i] in SEED_CONTROL_VALUES:
                i += 1
            if any(options.get(flag) for flag in UPLOAD_FLAGS) and i < len(values) and values[i] in ("image", "audio", "video"):
                i += 1
        pending[0:0] = dynamic_combo_widgets(name, spec, assigned[name])
    return assigned


def types_connect(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: "*", "" and a missing type connect to anything; "A,B" lists overlap."""
    a = None if a in ("", "*") else a
    b = None if b in ("", "*") else b
    if not a or not b or a == b:
        return True
    a, b = str(a).lower(), str(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(types_connect(x, y) for x in a.split(",") for y in b.split(","))


def bypass_input_index(node: dict, slot: int, wanted: Any) -> int | None:
    """Which input of a bypassed UI node stands in for its output `slot` when an input of type `wanted`
    reads it, as the editor decides (ComfyUI frontend 1.32, ExecutableNodeDTO): the input at the same
    index if its type fits both the output and `wanted`, else the first input of exactly `wanted`'s type,
    else the first that fits both; None when no input fits (the reading input then gets nothing).
    The candidates are the inputs the file lists (sockets, then widgets fed by a link)."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    if not inputs:
        return None
    if wanted in ("*", ""):
        return slot if slot < len(inputs) else 0
    out_type = outputs[slot].get("type") if slot < len(outputs) else None
    same = inputs[slot] if slot < len(inputs) else None
    if same is not None and types_connect(same.get("type"), out_type) and types_connect(same.get("type"), wanted):
        return slot
    for index, entry in enumerate(inputs):
        if entry.get("type") == wanted:
            return index
    for index, entry in enumerate(inputs):
        if types_connect(entry.get("type"), out_type) and types_connect(entry.get("type"), wanted):
            return index
    return None


def ui_to_api(workflow: dict, input_types_of: Callable[[str], dict | None]) -> dict:
    """Converts an editor (UI-format) workflow to the API format the executor takes.

    `input_types_of(class_type)` returns the node class's INPUT_TYPES() dict, or None when the
    host has no such node (then the workflow is refused, naming the node).
    """
    nodes_by_id = {str(n.get("id")): n for n in workflow.get("nodes", []) if isinstance(n, dict)}
    links = {}
    for link in workflow.get("links", []) or []:
        if isinstance(link, dict):  # newer editors may save links as objects
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"), link.get("target_slot"), link.get("type")]
        if not isinstance(link, (list, tuple)) or len(link) < 5:
            raise WorkflowFormatError(f"malformed link entry {link!r}: expected [id, source, slot, target, slot, type]")
        links[link[0]] = (str(link[1]), int(link[2]))

    def upstream(link_id: Any, dst: str, input_name: str, wanted: Any) -> tuple[str, int] | None:
        """Follows a link back through reroutes and bypassed nodes; None when nothing feeds the input.

        `wanted` is the type of the input being resolved; past a bypassed node it becomes the type
        of the bypassed node's input that passes through (the editor's ExecutableNodeDTO)."""
        seen = set()
        while True:
            if link_id not in links:
                raise WorkflowFormatError(f"input '{input_name}' refers to link {link_id}, which the workflow does not contain", dst)
            src, slot = links[link_id]
            if src not in nodes_by_id:
                raise WorkflowFormatError(f"input '{input_name}' is linked to node {src}, which is not in the workflow", dst)
            node = nodes_by_id[src]
            if (src, slot) in seen:
                raise WorkflowFormatError(f"input '{input_name}' sits on a loop of reroutes or bypassed nodes", dst)
            seen.add((src, slot))
            node_inputs = node.get("inputs") or []
            if node.get("type") == "Reroute":
                linked = [i for i in node_inputs if i.get("link") is not None]
                if not linked:
                    return None
                link_id = linked[0]["link"]
            elif node.get("mode") == MODE_BYPASSED:
                index = bypass_input_index(node, slot, wanted)
                if index is None or node_inputs[index].get("link") is None:
                    return None
                wanted, link_id = node_inputs[index].get("type"), node_inputs[index]["link"]
            elif node.get("type") in EDITOR_ONLY_NODES:
                return None
            else:  # a muted node too: the caller drops the input, as the editor does
                return src, slot

    prompt = {}
    for node_id, node in nodes_by_id.items():
        class_type = node.get("type")
        if class_type in EDITOR_ONLY_NODES or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        if not isinstance(class_type, str):
            raise WorkflowFormatError("node has no type", node_id)
        input_types = input_types_of(class_type)
        if input_types is None:
            raise WorkflowFormatError(f"unknown node type '{class_type}' (is the pack that provides it installed?)", node_id, class_type)
        inputs = _assign_widget_values(node, input_types)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            source = upstream(slot["link"], node_id, name, slot.get("type"))
            if source is None:
                continue
            if nodes_by_id[source[0]].get("mode") == MODE_MUTED:  # the editor drops the input, its widget value too
                inputs.pop(name, None)
            else:
                inputs[name] = [source[0], source[1]]
        prompt[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": node.get("title") or class_type}}
    if not prompt:
        raise WorkflowFormatError("the workflow has no runnable nodes")
    return prompt


def find_structural_error(prompt: dict, known_class: Callable[[str], bool],
                          output_names: Callable[[str], list[str] | None] | None = None) -> WorkflowFormatError | None:
    """Checks an API-format prompt before the host sees it: node types, dangling links, links to an
    output slot the source node does not have (`output_names(class_type)` lists its outputs), cycles."""
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            return WorkflowFormatError("node entry must be an object with 'class_type' and 'inputs'", node_id)
        class_type = node.get("class_type")
        if not known_class(class_type):
            return WorkflowFormatError(f"unknown node type '{class_type}' (is the pack that provides it installed?)", node_id, class_type)
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                if str(value[0]) not in prompt:
                    return WorkflowFormatError(f"input '{name}' is linked to node {value[0]}, which is not in the workflow", node_id, class_type)
                source = prompt[str(value[0])]
                outputs = output_names(source.get("class_type")) if output_names and known_class(source.get("class_type")) else None
                if outputs is not None and not 0 <= value[1] < len(outputs):
                    listed = ", ".join(f"{i} {n}" for i, n in enumerate(outputs)) or "none"
                    return WorkflowFormatError(f"input '{name}' is linked to output {value[1]} of node {value[0]} ({source.get('class_type')}), "
                                               f"which has outputs: {listed}", node_id, class_type)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node_id: str) -> str | None:
        state[node_id] = 1
        for value in prompt[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                src = str(value[0])
                if state.get(src) == 1:
                    return src
                if src not in state:
                    found = visit(src)
                    if found:
                        return found
        state[node_id] = 2
        return None

    for node_id in prompt:
        if node_id not in state:
            found = visit(node_id)
            if found:
                return WorkflowFormatError("the workflow has a cycle: the node's output feeds back into its own inputs", found, prompt[found].get("class_type"))
    return None


def apply_overrides(prompt: dict, overrides: dict[str, Any], input_types_of: Callable[[str], dict | None]) -> None:
    """Applies `{"NODE_ID.INPUT": value}` to an API-format prompt in place, refusing unknown targets."""
    for key, value in (overrides or {}).items():
        node_id, _, input_name = str(key).partition(".")
        if not input_name:
            raise WorkflowFormatError(f"override '{key}' must look like NODE_ID.INPUT=VALUE")
        if node_id not in prompt:
            raise WorkflowFormatError(f"override '{key}': the workflow has no node {node_id}")
        class_type = prompt[node_id]["class_type"]
        types = input_types_of(class_type) or {}
        known = set(types.get("required", {})) | set(types.get("optional", {}))
        if input_name.split(".", 1)[0] not in known:  # format.codec: a dynamic combo's own widget
            raise WorkflowFormatError(f"override '{key}': {class_type} has no input '{input_name}' (it has: {', '.join(sorted(known))})", node_id, class_type)
        prompt[node_id]["inputs"][input_name] = value


def find_non_finite_number(prompt: dict, input_types_of: Callable[[str], dict | None]) -> WorkflowFormatError | None:
    """A FLOAT or INT input given NaN or an infinity (the host's range check lets NaN through)."""
    for node_id, node in prompt.items():
        types = input_types_of(node["class_type"]) or {}
        for name, value in node.get("inputs", {}).items():
            spec = (types.get("required") or {}).get(name) or (types.get("optional") or {}).get(name)
            kind = _kind_and_options(spec)[0] if spec is not None else None
            if kind in ("FLOAT", "INT") and isinstance(value, float) and not math.isfinite(value):
                return WorkflowFormatError(f"input '{name}' is {value}; expected a finite number", node_id, node["class_type"])
    return None


def parse_override(text: str) -> tuple[str, Any]:
    """'5.seed=42' -> ('5.seed', 42); values are JSON when they parse as JSON, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise WorkflowFormatError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
