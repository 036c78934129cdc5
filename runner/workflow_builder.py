"""Builds editor (UI-format) workflows from a compact graph description and the host's node schemas.

Shipped workflows are generated with this (`python -m comfyui_audiovisual.runner.workflow_builder`),
so their widget order always matches the schemas the editor will read them with.

A graph is a list of `(node id, class_type, {input: value or ("src id", slot)}, title or None)`, each
optionally followed by a dict of node options: `{"bypassed": True}` ships the node bypassed (the
editor's Ctrl+B, saved as `"mode": 4`; it shows purple and the host runs the graph as if its
matching-type inputs were wired straight to its outputs, see workflow_format.ui_to_api).
"""

import json
import os
import sys

from .workflow_format import MODE_BYPASSED, has_seed_control, widget_names

TEMPLATE_HOST_VERSION = "0.3.75"
"""The host the shipped templates are written on (setup.sh's): widget order and sockets come from its
node schemas. Current hosts read them as their editor does (runner/workflow_format.py, docs/host_versions.md)."""
TEMPLATE_INDEX_FILE = "templates.json"
"""The editor's index of the templates, in web/ (served beside the extension, never listed as a template)."""
MODE_ALWAYS = 0
NODE_OPTIONS = {"bypassed"}
NOTE = "Note"  # the editor's own note (frontend only: the host never runs it): ("90", NOTE, {"text": ...}, title)
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}  # the editor's yellow note
NOTE_CHARS_PER_LINE = 44  # what fits a NODE_WIDTH_PX-wide note's text box
# what a widget without a default holds when the editor creates it (a linked STRING shows "")
EDITOR_WIDGET_DEFAULTS = {"STRING": "", "INT": 0, "FLOAT": 0.0, "BOOLEAN": False}

COLUMN_WIDTH_PX = 340
NODE_WIDTH_PX = 300
GAP_PX = 40  # between a node and the title bar of the one below it
TITLE_PX = 30

# What the editor (host + web/js/audiovisual.js) shows inside nodes beyond their sockets and
# widgets, in px, so that nodes never overlap once their previews appear.
DISPLAY_EXTRA_PX = {
    "LoadImage": 250,  # the picture
    "LoadAudio": 90,  # the player and the upload button
    "LoadVideo": 345,  # the video (its player needs 386 px of body with the widgets)
    "SaveImage": 250,  # the saved picture
    "AV_SaveAudioWAV": 172,  # spectrogram + player (PREVIEW_HEIGHT.audio in audiovisual.js)
    "AV_MelToAudio": 172,
    "AV_DecodeMelTokens": 116,  # spectrogram (PREVIEW_HEIGHT.mel)
    "AV_AudioToMel": 116,
    "AV_CaptionVideo": 170,  # the caption box (BOX_HEIGHT 64 in caption_preview.js) and the multiline instruction
    "AV_VATTConverter": 290,  # the caption box and two multiline inputs (caption, instruction): AV_CaptionVideo's 64 + 2 x 106
}


def graph_nodes(graph) -> list[tuple[str, str, dict, str | None, dict]]:
    """The graph's nodes as (node id, class_type, inputs, title, options); options default to {}."""
    nodes = []
    for entry in graph:
        if len(entry) not in (4, 5):
            raise ValueError(f"graph node {entry!r}: expected (id, class_type, inputs, title[, options])")
        options = dict(entry[4]) if len(entry) == 5 else {}
        unknown = set(options) - NODE_OPTIONS
        if unknown:
            raise ValueError(f"graph node {entry[0]} ({entry[1]}): unknown options {sorted(unknown)}, expected {sorted(NODE_OPTIONS)}")
        nodes.append((str(entry[0]), entry[1], entry[2], entry[3], options))
    return nodes


def _socket_inputs(input_types: dict) -> list[tuple[str, str]]:
    widgets = {name for name, _ in widget_names(input_types)}
    sockets = []
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            if name not in widgets:
                kind = spec[0] if isinstance(spec, (list, tuple)) else spec
                sockets.append((name, kind if isinstance(kind, str) else "COMBO"))
    return sockets


LIVE_PREVIEW_PX = 150  # a sampler whose "preview" input is connected shows the output forming


def _widget_kind(input_types: dict, name: str) -> str:
    for section in ("required", "optional"):
        spec = (input_types.get(section) or {}).get(name)
        if spec is not None:
            kind = spec[0] if isinstance(spec, (list, tuple)) else spec
            return kind if isinstance(kind, str) else "COMBO"
    raise KeyError(name)


def node_height_px(class_type: str, n_socket_rows: int, n_widgets: int, live_preview: bool = False) -> int:
    """The body height the editor gives the node (its computeSize: 20 px a socket row, 24 a widget)."""
    extra = DISPLAY_EXTRA_PX.get(class_type, 0) + (LIVE_PREVIEW_PX if live_preview else 0)
    return 20 * max(1, n_socket_rows) + 24 * n_widgets + 14 + extra


def note_height_px(text: str) -> int:
    """The height that shows the whole text of a note NODE_WIDTH_PX wide (16 px a wrapped line)."""
    lines = sum(max(1, -(-len(line) // NOTE_CHARS_PER_LINE)) for line in text.split("\n"))
    return 16 * lines + 24


def _note_node(node_id: str, inputs: dict, title: str | None, order: int, position: tuple[int, int], height: int) -> dict:
    if set(inputs) != {"text"} or not isinstance(inputs["text"], str) or not inputs["text"].strip():
        raise ValueError(f"note (node {node_id}): expected inputs {{'text': 'the note'}}, got {sorted(inputs)}")
    node = {"id": int(node_id), "type": NOTE, "pos": list(position), "size": [NODE_WIDTH_PX, height], "flags": {}, "order": order,
            "mode": MODE_ALWAYS, "inputs": [], "outputs": [], "properties": {"text": ""}, "widgets_values": [inputs["text"]],
            **NOTE_COLORS}
    if title:
        node["title"] = title
    return node


def _layout(graph, heights: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Columns by depth (longest path from a source); in a column, nodes stacked in order of appearance."""
    depth: dict[str, int] = {}
    by_id = {node_id: inputs for node_id, _, inputs, _, _ in graph}

    def node_depth(node_id: str) -> int:
        if node_id not in depth:
            sources = [v[0] for v in by_id[node_id].values() if isinstance(v, tuple)]
            depth[node_id] = 1 + max((node_depth(s) for s in sources), default=-1)
        return depth[node_id]

    next_y: dict[int, int] = {}
    positions = {}
    for node_id, _, _, _, _ in graph:
        column = node_depth(node_id)
        y = next_y.get(column, TITLE_PX)
        positions[node_id] = (column * COLUMN_WIDTH_PX, y)
        next_y[column] = y + heights[node_id] + GAP_PX + TITLE_PX
    return positions


def build_ui_workflow(graph, node_classes: dict, extra: dict | None = None) -> dict:
    """Returns the UI-format dict for `graph`, using `node_classes[class_type].INPUT_TYPES()` and outputs.

    Nodes whose options say `"bypassed": True` are written with `"mode": 4`, as the editor saves them."""
    graph = graph_nodes(graph)
    heights = {}
    for node_id, class_type, inputs, _, _ in graph:
        if class_type == NOTE:
            heights[node_id] = note_height_px(str(inputs.get("text", "")))
            continue
        cls = node_classes[class_type]
        input_types = cls.INPUT_TYPES()
        n_widgets = sum(2 if has_seed_control(n, o) else 1 for n, o in widget_names(input_types))
        rows = max(len(_socket_inputs(input_types)), len(getattr(cls, "RETURN_TYPES", ())))
        heights[node_id] = node_height_px(class_type, rows, n_widgets, live_preview=isinstance(inputs.get("preview"), tuple))
    positions = _layout(graph, heights)
    links, nodes = [], []
    outgoing: dict[tuple[str, int], list[int]] = {}
    for node_id, class_type, inputs, _, _ in graph:
        for name, value in inputs.items():
            if isinstance(value, tuple):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), None, None])
                outgoing.setdefault((value[0], value[1]), []).append(link_id)
    link_by_target = {(str(link[3]), i): link for i, link in enumerate(links)}
    for order, (node_id, class_type, inputs, title, options) in enumerate(graph):
        if class_type == NOTE:
            nodes.append(_note_node(node_id, inputs, title, order, positions[node_id], heights[node_id]))
            continue
        cls = node_classes[class_type]
        input_types = cls.INPUT_TYPES()
        sockets = _socket_inputs(input_types)
        ui_inputs = []

        def attach_link(entry: dict, source: tuple, slot: int, kind: str) -> None:
            """Points the first unattached link from `source` into this node at `slot` and the entry at it."""
            for (target, _), link in link_by_target.items():
                if target == node_id and link[4] is None and link[2] == source[1] and str(link[1]) == source[0]:
                    link[4], link[5] = slot, kind
                    entry["link"] = link[0]
                    return

        for slot, (name, kind) in enumerate(sockets):
            entry = {"name": name, "type": kind, "link": None}
            value = inputs.get(name)
            if isinstance(value, tuple):
                attach_link(entry, value, slot, kind)
            ui_inputs.append(entry)
        # a widget fed by a link (e.g. CreateVideo's fps from GetVideoComponents): the editor saves it
        # as an input that names its widget, after the sockets; the widget keeps a value beside it
        for name, _ in widget_names(input_types):
            value = inputs.get(name)
            if isinstance(value, tuple):
                slot, kind = len(ui_inputs), _widget_kind(input_types, name)
                entry = {"name": name, "type": kind, "widget": {"name": name}, "link": None}
                attach_link(entry, value, slot, kind)
                ui_inputs.append(entry)
        unknown = [n for n in inputs if n not in {s for s, _ in sockets} and n not in {w for w, _ in widget_names(input_types)}]
        if unknown:
            raise ValueError(f"{class_type} (node {node_id}) has no inputs named {unknown}")
        widgets_values = []
        for name, widget in widget_names(input_types):
            value = inputs.get(name, widget.get("default"))
            if isinstance(value, tuple):  # linked (see above): the widget shows its default
                value = widget.get("default")
            if value is None and isinstance((input_types.get("required", {}).get(name) or [None])[0], list):
                value = input_types["required"][name][0][0]
            if value is None:  # no default: what the editor's widget of that kind starts with
                value = EDITOR_WIDGET_DEFAULTS.get(_widget_kind(input_types, name))
            widgets_values.append(value)
            if has_seed_control(name, widget):
                widgets_values.append("fixed")
        return_types = list(getattr(cls, "RETURN_TYPES", ()))
        return_names = list(getattr(cls, "RETURN_NAMES", None) or return_types)
        ui_outputs = [{"name": return_names[i], "type": t, "slot_index": i, "links": outgoing.get((node_id, i), [])}
                      for i, t in enumerate(return_types)]
        x, y = positions[node_id]
        node = {"id": int(node_id), "type": class_type, "pos": [x, y], "size": [NODE_WIDTH_PX, heights[node_id]],
                "flags": {}, "order": order, "mode": MODE_BYPASSED if options.get("bypassed") else MODE_ALWAYS, "inputs": ui_inputs, "outputs": ui_outputs,
                "properties": {"Node name for S&R": class_type}, "widgets_values": widgets_values}
        if title:
            node["title"] = title
        nodes.append(node)
    for link in links:
        if link[4] is None:
            raise ValueError(f"link {link} found no socket on node {link[3]}")
    workflow = {"last_node_id": max(int(n[0]) for n in graph), "last_link_id": len(links), "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {**(extra or {})}, "version": 0.4}  # no "ds": the editor fits the view
    return workflow


def write_workflow(path: str, workflow: dict | list) -> None:
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(workflow, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def template_index(shipped_graphs: dict, index: list) -> list[dict]:
    """The editor's list of the shipped templates (web/templates.json): `[{"name", "title", "description"}]`
    in `index`'s order, the default first. Every shipped graph needs its entry, and every entry its graph."""
    names = [entry[0] for entry in index]
    missing = [name for name in shipped_graphs if name not in names]
    unknown = [name for name in names if name not in shipped_graphs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unknown or duplicated:
        raise ValueError(f"workflows/graphs.py TEMPLATE_INDEX: templates without a title and description: {missing}; "
                         f"entries without a graph in SHIPPED_GRAPHS: {unknown}; listed twice: {duplicated}")
    return [{"name": name, "title": title, "description": description} for name, title, description in index]


def host_version() -> str:
    """The booted host's version (its comfyui_version module), or "unknown"."""
    try:
        from comfyui_version import __version__
    except ImportError:
        return "unknown"
    return __version__


def main(argv: list[str] | None = None) -> int:
    """Regenerates every shipped workflow from `workflows/graphs.py`."""
    from . import host as host_boot
    from ..workflows.graphs import SHIPPED_GRAPHS, TEMPLATE_INDEX

    try:
        index = template_index(SHIPPED_GRAPHS, TEMPLATE_INDEX)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    host = host_boot.boot(cpu=True)
    version = host_version()
    if version != TEMPLATE_HOST_VERSION:
        print(f"error: the shipped templates are written on ComfyUI {TEMPLATE_HOST_VERSION} (setup.sh's host); this host is "
              f"{version} ({host.host_dir})", file=sys.stderr)
        return 2
    out_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "workflows")
    for name, (graph, description) in SHIPPED_GRAPHS.items():
        workflow = build_ui_workflow(graph, host.nodes.NODE_CLASS_MAPPINGS, extra={"description": description})
        write_workflow(os.path.join(out_dir, f"{name}.json"), workflow)
        print(os.path.join(out_dir, f"{name}.json"))
    index_path = os.path.join(os.path.dirname(out_dir), "web", TEMPLATE_INDEX_FILE)
    write_workflow(index_path, index)
    print(index_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
