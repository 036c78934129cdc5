"""The workflow builder: a widget fed by a link is written the way the editor saves it (an input naming
its widget, after the sockets, its value kept among the widgets) and converts back to the same API
prompt; a bypassed node is written with mode 4 and left out of the prompt, its matching-type input
passed through as the editor does. With the host: every shipped template is exactly what the builder
writes from workflows/graphs.py."""

import json
import os

import pytest

from comfyui_audiovisual.runner.workflow_builder import build_ui_workflow, template_index, write_workflow
from comfyui_audiovisual.runner.workflow_format import ui_to_api
from conftest import PACK_DIR


class Components:
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"video": ("VIDEO", {})}}


class Mux:
    RETURN_TYPES = ("VIDEO",)

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"images": ("IMAGE", {}), "fps": ("FLOAT", {"default": 30.0}), "label": ("STRING", {"default": "x"})},
                "optional": {"audio": ("AUDIO", {})}}


class Source:
    RETURN_TYPES = ("VIDEO",)

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"file": (["a.mp4"], {})}}


CLASSES = {"Components": Components, "Mux": Mux, "Source": Source}
GRAPH = [
    ("1", "Source", {"file": "a.mp4"}, None),
    ("2", "Components", {"video": ("1", 0)}, None),
    ("3", "Mux", {"images": ("2", 0), "fps": ("2", 2), "label": "y", "audio": ("2", 1)}, "Muxed"),
]


def test_a_linked_widget_is_written_as_an_input_naming_its_widget():
    workflow = build_ui_workflow(GRAPH, CLASSES)
    mux = next(n for n in workflow["nodes"] if n["id"] == 3)
    assert [i["name"] for i in mux["inputs"]] == ["images", "audio", "fps"]  # sockets first, then the linked widget
    fps = mux["inputs"][2]
    assert fps["widget"] == {"name": "fps"} and fps["type"] == "FLOAT" and fps["link"] is not None
    assert mux["widgets_values"] == [30.0, "y"]  # the widget keeps its default beside the link
    link = next(l for l in workflow["links"] if l[0] == fps["link"])
    assert link[1:] == [2, 2, 3, 2, "FLOAT"]  # from output 2 of node 2 into slot 2 of node 3


def test_the_built_workflow_converts_back_to_the_graph():
    prompt = ui_to_api(build_ui_workflow(GRAPH, CLASSES), lambda name: CLASSES[name].INPUT_TYPES())
    assert prompt["3"]["inputs"] == {"images": ["2", 0], "fps": ["2", 2], "label": "y", "audio": ["2", 1]}
    assert prompt["2"]["inputs"] == {"video": ["1", 0]} and prompt["1"]["inputs"] == {"file": "a.mp4"}


class Blur:  # IMAGE in, IMAGE out, and a widget
    RETURN_TYPES = ("IMAGE",)

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"images": ("IMAGE", {}), "radius": ("FLOAT", {"default": 1.0})}}


class Swap:  # two inputs and two outputs of the same type
    RETURN_TYPES = ("IMAGE", "IMAGE")

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"a": ("IMAGE", {}), "b": ("IMAGE", {})}}


class Caption:  # STRING out, but no STRING socket: a bypassed Caption passes nothing on
    RETURN_TYPES = ("STRING",)

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"images": ("IMAGE", {}), "text": ("STRING", {})}}


class Pair:
    RETURN_TYPES = ("VIDEO",)

    @staticmethod
    def INPUT_TYPES():
        return {"required": {"first": ("IMAGE", {}), "second": ("IMAGE", {}), "label": ("STRING", {"default": "x"})},
                "optional": {"extra": ("IMAGE", {})}}


BYPASS_CLASSES = {**CLASSES, "Blur": Blur, "Swap": Swap, "Caption": Caption, "Pair": Pair}
BYPASSED = {"bypassed": True}
BYPASS_GRAPH = [
    ("1", "Source", {"file": "a.mp4"}, None),
    ("2", "Components", {"video": ("1", 0)}, None),
    ("3", "Blur", {"images": ("2", 0), "radius": 2.0}, "Blur (off)", BYPASSED),
    ("4", "Blur", {"images": ("3", 0), "radius": 3.0}, None, BYPASSED),  # two bypassed in a row
    ("5", "Swap", {"a": ("2", 0), "b": ("4", 0)}, None, BYPASSED),
    ("6", "Caption", {"images": ("2", 0), "text": "hi"}, None, BYPASSED),
    ("7", "Pair", {"first": ("5", 0), "second": ("5", 1), "label": ("6", 0), "extra": ("3", 0)}, None),
]


def test_a_bypassed_node_is_written_with_mode_4_and_the_rest_with_mode_0():
    workflow = build_ui_workflow(BYPASS_GRAPH, BYPASS_CLASSES)
    modes = {n["id"]: n["mode"] for n in workflow["nodes"]}
    assert modes == {1: 0, 2: 0, 3: 4, 4: 4, 5: 4, 6: 4, 7: 0}
    blur = next(n for n in workflow["nodes"] if n["id"] == 3)
    assert blur["title"] == "Blur (off)" and blur["widgets_values"] == [2.0]  # otherwise written as any node
    caption = next(n for n in workflow["nodes"] if n["id"] == 6)
    assert caption["widgets_values"] == ["hi"]
    pair = next(n for n in workflow["nodes"] if n["id"] == 7)
    assert pair["widgets_values"] == ["x"]  # the linked label keeps its default


def test_a_linked_string_widget_without_a_default_shows_an_empty_string():
    graph = [*BYPASS_GRAPH[:2], ("6", "Caption", {"images": ("2", 0), "text": ("1", 0)}, None)]
    caption = next(n for n in build_ui_workflow(graph, BYPASS_CLASSES)["nodes"] if n["id"] == 6)
    assert caption["widgets_values"] == [""]  # as the editor's STRING widget starts (null would not load)


def test_the_prompt_of_a_graph_with_bypassed_nodes_is_what_the_host_runs():
    """As the editor's graphToPrompt (frontend 1.32): bypassed nodes are left out; an input they feed reads
    what feeds the bypassed node's input at the same index if its type fits, else its first input of the
    reading input's type, else nothing (a linked widget then keeps its value)."""
    prompt = ui_to_api(build_ui_workflow(BYPASS_GRAPH, BYPASS_CLASSES), lambda name: BYPASS_CLASSES[name].INPUT_TYPES())
    assert set(prompt) == {"1", "2", "7"}
    assert prompt["7"]["inputs"] == {
        "first": ["2", 0],  # Swap's output 0 <- its input 0 (a) <- Components
        "second": ["2", 0],  # Swap's output 1 <- its input 1 (b) <- Blur 4 <- Blur 3 <- Components
        "extra": ["2", 0],  # Blur 3 <- Components
        "label": "x",  # Caption has no STRING socket: nothing passes, the widget's value stays
    }


def test_a_bypassed_input_at_the_same_index_wins_over_the_first_of_its_type():
    graph = [
        ("1", "Source", {"file": "a.mp4"}, None),
        ("2", "Components", {"video": ("1", 0)}, None),
        ("8", "Blur", {"images": ("2", 0)}, None),
        ("5", "Swap", {"a": ("2", 0), "b": ("8", 0)}, None, BYPASSED),
        ("7", "Pair", {"first": ("5", 1), "second": ("5", 0)}, None),
    ]
    prompt = ui_to_api(build_ui_workflow(graph, BYPASS_CLASSES), lambda name: BYPASS_CLASSES[name].INPUT_TYPES())
    assert prompt["7"]["inputs"]["first"] == ["8", 0] and prompt["7"]["inputs"]["second"] == ["2", 0]


def test_unknown_node_options_are_refused():
    with pytest.raises(ValueError, match=r"node 1 \(Source\): unknown options \['muted'\]"):
        build_ui_workflow([("1", "Source", {"file": "a.mp4"}, None, {"muted": True})], BYPASS_CLASSES)


def test_every_shipped_template_is_what_the_builder_writes(host, tmp_path):
    """workflows/*.json are generated (python -m comfyui_audiovisual.runner.workflow_builder), none by hand:
    each equals the builder's output from workflows/graphs.py byte for byte, and has its thumbnail."""
    from comfyui_audiovisual.runner.workflow_builder import TEMPLATE_HOST_VERSION, host_version
    from comfyui_audiovisual.workflows.graphs import SHIPPED_GRAPHS

    if host_version() != TEMPLATE_HOST_VERSION:  # another host's schemas write other files; it reads these as its editor does
        pytest.skip(f"the templates are written on ComfyUI {TEMPLATE_HOST_VERSION}; this host is {host_version()}")
    folder = os.path.join(PACK_DIR, "workflows")
    shipped = sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".json"))
    assert shipped == sorted(SHIPPED_GRAPHS)
    for name, (graph, description) in SHIPPED_GRAPHS.items():
        built = tmp_path / f"{name}.json"
        write_workflow(str(built), build_ui_workflow(graph, host.nodes.NODE_CLASS_MAPPINGS, extra={"description": description}))
        with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as f:
            assert f.read() == built.read_text(encoding="utf-8"), f"workflows/{name}.json is stale: regenerate it with the builder"
        assert os.path.isfile(os.path.join(folder, f"{name}.jpg")), f"workflows/{name}.jpg: draw it with tools/workflow_picture.py"


def test_the_flux_template_ships_its_text_branch_bypassed_and_runs_without_it(host):
    with open(os.path.join(PACK_DIR, "workflows", "audio_to_image_flux.json"), encoding="utf-8") as f:
        workflow = json.load(f)
    assert {n["id"] for n in workflow["nodes"] if n["mode"] == 4} == {45, 46, 47}
    prompt = ui_to_api(workflow, lambda name: host.nodes.NODE_CLASS_MAPPINGS[name].INPUT_TYPES())
    assert not {"45", "46", "47"} & set(prompt)
    assert "text_conditioning" not in prompt["44"]["inputs"]  # CLIP Text Encode has no CONDITIONING input to pass on
    assert prompt["44"]["inputs"]["adapter"] == ["43", 0] and prompt["44"]["inputs"]["audio_embedding"] == ["42", 0]
    assert prompt["50"]["inputs"]["positive"] == ["44", 0] and prompt["50"]["inputs"]["negative"] == ["44", 0]


def test_the_editor_template_index_is_what_the_builder_writes():
    """web/templates.json (the order, titles and one-line descriptions the editor extension shows) is the
    builder's output from workflows/graphs.py TEMPLATE_INDEX: the default first, one line each."""
    from comfyui_audiovisual.runner.workflow_builder import TEMPLATE_INDEX_FILE, template_index
    from comfyui_audiovisual.workflows.graphs import SHIPPED_GRAPHS, TEMPLATE_INDEX

    index = template_index(SHIPPED_GRAPHS, TEMPLATE_INDEX)
    with open(os.path.join(PACK_DIR, "web", TEMPLATE_INDEX_FILE), encoding="utf-8") as f:
        assert json.load(f) == index, "web/templates.json is stale: regenerate it with the builder"
    assert index[0]["name"] == "image_to_audio"  # the README's main job opens the list
    assert sorted(entry["name"] for entry in index) == sorted(SHIPPED_GRAPHS)
    for entry in index:
        assert entry["title"] != entry["name"] and entry["title"][0].isupper(), entry
        assert "\n" not in entry["description"] and 20 <= len(entry["description"]) <= 110, entry
    assert len({entry["title"] for entry in index}) == len(index)


def test_a_template_without_its_index_entry_is_refused():
    graphs = {"a": ([], "A."), "b": ([], "B.")}
    with pytest.raises(ValueError, match=r"templates without a title and description: \['b'\]; entries without a graph "
                                         r"in SHIPPED_GRAPHS: \['c'\]; listed twice: \['a'\]"):
        template_index(graphs, [("a", "A", "a."), ("c", "C", "c."), ("a", "A", "a.")])
    assert template_index(graphs, [("b", "B", "b."), ("a", "A", "a.")]) == [
        {"name": "b", "title": "B", "description": "b."}, {"name": "a", "title": "A", "description": "a."}]
