"""The workflow builder, without the host: a widget fed by a link is written the way the editor saves
it (an input naming its widget, after the sockets, its value kept among the widgets), and converts
back to the same API prompt."""

from comfyui_audiovisual.runner.workflow_builder import build_ui_workflow
from comfyui_audiovisual.runner.workflow_format import ui_to_api


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
