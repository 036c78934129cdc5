"""UI -> API conversion, without the host: widget order, seed control values, links, editor-only nodes."""

import json
import os

import pytest

from conftest import PACK_DIR

from comfyui_audiovisual.runner.workflow_format import (
    WorkflowFormatError,
    apply_overrides,
    find_structural_error,
    parse_override,
    ui_to_api,
)

TYPES = {
    "Sampler": {"required": {"tokens": ("AV_TOKENS", {}), "seed": ("INT", {"control_after_generate": True}), "steps": ("INT", {}),
                             "mode": ("COMBO", {"options": ["a", "b"]})},
                "optional": {"strength": ("FLOAT", {})}},
    "Source": {"required": {"name": (["x.png", "y.png"], {"image_upload": True})}},
    "Sink": {"required": {"tokens": ("AV_TOKENS", {}), "prefix": ("STRING", {})}},
}


def types_of(name):
    return TYPES.get(name)


def ui(nodes, links):
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "version": 0.4}


def test_widgets_map_in_schema_order_skipping_control_and_upload_values():
    workflow = ui(
        [
            {"id": 1, "type": "Source", "inputs": [], "outputs": [{"type": "AV_TOKENS", "links": [1]}], "widgets_values": ["y.png", "image"]},
            {"id": 2, "type": "Sampler", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 1}],
             "widgets_values": [42, "randomize", 16, "b", 0.5]},
            {"id": 3, "type": "Sink", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 2}], "widgets_values": ["out/x"]},
        ],
        [[1, 1, 0, 2, 0, "AV_TOKENS"], [2, 2, 0, 3, 0, "AV_TOKENS"]],
    )
    prompt = ui_to_api(workflow, types_of)
    assert prompt["1"]["inputs"] == {"name": "y.png"}
    assert prompt["2"]["inputs"] == {"tokens": ["1", 0], "seed": 42, "steps": 16, "mode": "b", "strength": 0.5}
    assert prompt["3"]["inputs"] == {"tokens": ["2", 0], "prefix": "out/x"}


def test_widget_converted_to_input_takes_the_link():
    workflow = ui(
        [
            {"id": 1, "type": "Source", "widgets_values": ["x.png"]},
            {"id": 2, "type": "Sampler", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 1},
                                                    {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 2}],
             "widgets_values": [1, "fixed", 8, "a"]},
            {"id": 3, "type": "Sink", "inputs": [{"name": "tokens", "link": 3}], "widgets_values": ["p"]},
        ],
        [[1, 1, 0, 2, 0, "AV_TOKENS"], [2, 1, 0, 2, 1, "INT"], [3, 2, 0, 3, 0, "AV_TOKENS"]],
    )
    assert ui_to_api(workflow, types_of)["2"]["inputs"]["steps"] == ["1", 0]


def test_reroutes_notes_and_muted_nodes_are_resolved_away():
    workflow = ui(
        [
            {"id": 1, "type": "Source", "widgets_values": ["x.png"]},
            {"id": 5, "type": "Reroute", "inputs": [{"name": "", "link": 1}]},
            {"id": 6, "type": "Note", "widgets_values": ["hello"]},
            {"id": 7, "type": "Sink", "mode": 2, "inputs": [{"name": "tokens", "link": 3}], "widgets_values": ["muted"]},
            {"id": 3, "type": "Sink", "inputs": [{"name": "tokens", "link": 2}], "widgets_values": ["p"]},
        ],
        [[1, 1, 0, 5, 0, "*"], [2, 5, 0, 3, 0, "AV_TOKENS"], [3, 1, 0, 7, 0, "AV_TOKENS"]],
    )
    prompt = ui_to_api(workflow, types_of)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["tokens"] == ["1", 0]


def test_an_input_fed_by_a_muted_node_is_dropped_with_its_widget_value():
    """As the editor's graphToPrompt: links into nodes left out of the prompt are removed afterwards."""
    workflow = ui(
        [
            {"id": 1, "type": "Source", "mode": 2, "outputs": [{"type": "AV_TOKENS", "links": [1]}], "widgets_values": ["x.png"]},
            {"id": 2, "type": "Sampler", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 1},
                                                    {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 2}],
             "widgets_values": [1, "fixed", 8, "a"]},
            {"id": 4, "type": "Sampler", "mode": 2, "outputs": [{"type": "INT", "links": [2]}], "widgets_values": [1, "fixed", 8, "a"]},
        ],
        [[1, 1, 0, 2, 0, "AV_TOKENS"], [2, 4, 0, 2, 1, "INT"]],
    )
    prompt = ui_to_api(workflow, types_of)
    assert set(prompt) == {"2"}
    assert prompt["2"]["inputs"] == {"seed": 1, "mode": "a"}


def test_a_bypassed_node_passes_through_the_input_of_the_reading_type_or_nothing():
    """Bypassed Sampler (inputs: tokens, a linked steps widget): an AV_TOKENS reader gets what feeds
    tokens, an INT reader what feeds steps; a STRING reader gets nothing and keeps its widget value."""
    workflow = ui(
        [
            {"id": 1, "type": "Source", "widgets_values": ["x.png"]},
            {"id": 4, "type": "Source", "widgets_values": ["y.png"]},
            {"id": 2, "type": "Sampler", "mode": 4, "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 1},
                                                               {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 2}],
             "outputs": [{"type": "AV_TOKENS", "links": [3, 4]}], "widgets_values": [1, "fixed", 8, "a"]},
            {"id": 3, "type": "Sink", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 3},
                                                 {"name": "prefix", "type": "STRING", "widget": {"name": "prefix"}, "link": 4}],
             "widgets_values": ["p"]},
            {"id": 5, "type": "Sampler", "inputs": [{"name": "tokens", "type": "AV_TOKENS", "link": 5},
                                                    {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 6}],
             "widgets_values": [2, "fixed", 9, "b"]},
        ],
        [[1, 1, 0, 2, 0, "AV_TOKENS"], [2, 4, 0, 2, 1, "INT"], [3, 2, 0, 3, 0, "AV_TOKENS"], [4, 2, 0, 3, 1, "STRING"],
         [5, 2, 0, 5, 0, "AV_TOKENS"], [6, 2, 0, 5, 1, "INT"]],
    )
    prompt = ui_to_api(workflow, types_of)
    assert set(prompt) == {"1", "4", "3", "5"}
    assert prompt["3"]["inputs"] == {"tokens": ["1", 0], "prefix": "p"}
    assert prompt["5"]["inputs"]["tokens"] == ["1", 0] and prompt["5"]["inputs"]["steps"] == ["4", 0]


def test_unknown_type_and_dangling_link_name_the_node():
    with pytest.raises(WorkflowFormatError, match="unknown node type 'Nope'") as e:
        ui_to_api(ui([{"id": 4, "type": "Nope"}], []), types_of)
    assert e.value.node_id == "4"
    with pytest.raises(WorkflowFormatError, match="link 9") as e:
        ui_to_api(ui([{"id": 3, "type": "Sink", "inputs": [{"name": "tokens", "link": 9}], "widgets_values": ["p"]}], []), types_of)
    assert e.value.node_id == "3"


def test_structural_errors_cycle_and_missing_node():
    cyclic = {"1": {"class_type": "Sink", "inputs": {"tokens": ["2", 0]}}, "2": {"class_type": "Sink", "inputs": {"tokens": ["1", 0]}}}
    assert "cycle" in str(find_structural_error(cyclic, lambda c: True))
    dangling = {"1": {"class_type": "Sink", "inputs": {"tokens": ["7", 0]}}}
    error = find_structural_error(dangling, lambda c: True)
    assert error.node_id == "1" and "node 7" in str(error)
    assert find_structural_error({"1": {"class_type": "Sink", "inputs": {}}}, lambda c: True) is None


def test_overrides_parse_json_and_refuse_unknown_inputs():
    assert parse_override("2.seed=42") == ("2.seed", 42)
    assert parse_override("3.prefix=run/a") == ("3.prefix", "run/a")
    prompt = {"2": {"class_type": "Sampler", "inputs": {"seed": 1}}}
    apply_overrides(prompt, {"2.seed": 7}, types_of)
    assert prompt["2"]["inputs"]["seed"] == 7
    with pytest.raises(WorkflowFormatError, match="has no input 'bogus'"):
        apply_overrides(prompt, {"2.bogus": 1}, types_of)
    with pytest.raises(WorkflowFormatError, match="no node 9"):
        apply_overrides(prompt, {"9.seed": 1}, types_of)


def test_a_seed_input_gets_the_editors_control_value_unless_its_option_says_no():
    """The frontend adds "control after generate" after an INT named seed / noise_seed unless the input
    sets control_after_generate itself; the builder writes and the reader skips that value alike."""
    from comfyui_audiovisual.runner.workflow_format import has_seed_control

    assert has_seed_control("seed", {}) and has_seed_control("noise_seed", {})
    assert has_seed_control("steps", {"control_after_generate": True})
    assert not has_seed_control("seed", {"control_after_generate": False}) and not has_seed_control("steps", {})
    workflow = json.load(open(os.path.join(PACK_DIR, "workflows", "video_to_audio_captioned.json")))
    caption = next(n for n in workflow["nodes"] if n["type"] == "AV_CaptionVideo")
    values = caption["widgets_values"]
    assert values[values.index(60) + 2:values.index(60) + 4] == [0, "fixed"]  # max_new_tokens, temperature, seed, its control


def _codec_option(codecs):
    """SaveVideo's codec on current hosts (0.33): a dynamic combo whose h264 option brings its own dynamic combo."""
    encoding = ("COMFY_DYNAMICCOMBO_V3", {"options": [{"key": "auto", "inputs": {}},
                                                      {"key": "re-encode", "inputs": {"required": {"crf": ("FLOAT", {}),
                                                                                                   "color_space": (["auto", "sRGB"], {})}}}]})
    options = [{"key": c, "inputs": {"optional": {"encoding": encoding}} if c == "h264" else {}} for c in codecs]
    return ("COMFY_DYNAMICCOMBO_V3", {"options": options})


DYNAMIC_TYPES = {
    "SaveVideo": {"required": {"video": ("VIDEO", {}), "filename_prefix": ("STRING", {}),
                               "format": ("COMFY_DYNAMICCOMBO_V3", {"options": [{"key": f, "inputs": {"required": {"codec": _codec_option(["auto", "h264"])}}}
                                                                                for f in ("auto", "mp4")]})},
                  "optional": {"codec": ("COMFY_DYNAMICCOMBO_V3", dict(_codec_option(["auto", "h264"])[1], hidden=True))}},
    "Source": TYPES["Source"],
}


def test_dynamic_combos_bring_their_option_widgets_after_them_with_nested_names():
    """Current frontends save a dynamic combo's value, then the widgets of the chosen option
    (parent.child, nested alike), then the node's next widgets; the API prompt names them so."""
    def save_video(values, inputs=()):
        workflow = ui([{"id": 1, "type": "Source", "widgets_values": ["x.png"]},
                       {"id": 9, "type": "SaveVideo", "inputs": [{"name": "video", "type": "VIDEO", "link": 1}, *inputs], "widgets_values": values}],
                      [[1, 1, 0, 9, 0, "VIDEO"], [2, 1, 0, 9, 1, "FLOAT"]])
        return ui_to_api(workflow, DYNAMIC_TYPES.get)["9"]["inputs"]

    # a 0.3.75 template (format, codec as plain combos) read by the current schema: the editor does the same
    assert save_video(["audiovisual/v", "auto", "auto"]) == {"video": ["1", 0], "filename_prefix": "audiovisual/v",
                                                               "format": "auto", "format.codec": "auto"}
    assert save_video(["v", "mp4", "h264", "re-encode", 20.0, "sRGB", "auto"]) == {
        "video": ["1", 0], "filename_prefix": "v", "format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode",
        "format.codec.encoding.crf": 20.0, "format.codec.encoding.color_space": "sRGB", "codec": "auto"}
    assert save_video(["v", "mp4", "h264", "auto", "h264", "auto"])["codec.encoding"] == "auto"  # the hidden codec too
    linked = save_video(["v", "mp4", "h264", "re-encode", 20.0, "sRGB"],
                        [{"name": "format.codec.encoding.crf", "type": "FLOAT", "widget": {"name": "format.codec.encoding.crf"}, "link": 2}])
    assert linked["format.codec.encoding.crf"] == ["1", 0] and linked["format.codec.encoding.color_space"] == "sRGB"
    by_name = save_video({"filename_prefix": "v", "format": "mp4", "format.codec": "auto"})
    assert by_name == {"video": ["1", 0], "filename_prefix": "v", "format": "mp4", "format.codec": "auto"}


def test_an_override_may_name_a_dynamic_combos_own_widget():
    prompt = {"9": {"class_type": "SaveVideo", "inputs": {"format": "mp4", "format.codec": "auto"}}}
    apply_overrides(prompt, {"9.format.codec": "h264"}, DYNAMIC_TYPES.get)
    assert prompt["9"]["inputs"]["format.codec"] == "h264"
    with pytest.raises(WorkflowFormatError, match="has no input 'nope.codec'"):
        apply_overrides(prompt, {"9.nope.codec": "h264"}, DYNAMIC_TYPES.get)


def test_a_link_to_an_output_the_source_lacks_names_both_nodes_and_its_outputs():
    prompt = {"1": {"class_type": "Source", "inputs": {}}, "2": {"class_type": "Sink", "inputs": {"tokens": ["1", 3]}}}
    outputs = {"Source": ["IMAGE", "MASK"], "Sink": []}.get
    error = find_structural_error(prompt, lambda c: True, outputs)
    assert error.node_id == "2"
    assert "input 'tokens' is linked to output 3 of node 1 (Source), which has outputs: 0 IMAGE, 1 MASK" in str(error)
    prompt["2"]["inputs"]["tokens"] = ["1", 1]
    assert find_structural_error(prompt, lambda c: True, outputs) is None


def test_nan_and_infinite_numbers_are_refused_by_name():
    from comfyui_audiovisual.runner.workflow_format import find_non_finite_number

    for bad in (float("nan"), float("inf"), -float("inf")):
        error = find_non_finite_number({"2": {"class_type": "Sampler", "inputs": {"seed": 1, "strength": bad}}}, types_of)
        assert error.node_id == "2" and f"input 'strength' is {bad}; expected a finite number" in str(error)
    assert find_non_finite_number({"2": {"class_type": "Sampler", "inputs": {"strength": 0.5, "seed": ["1", 0]}}}, types_of) is None
