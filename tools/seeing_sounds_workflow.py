"""Writes workflows/audio_to_image_flux.json (SeeingSounds on the user's FLUX) from workflows/graphs.py.

    .venv/bin/python tools/seeing_sounds_workflow.py [--out workflows/audio_to_image_flux.json]
    .venv/bin/python tools/workflow_picture.py workflows/audio_to_image_flux.json workflows/audio_to_image_flux.jpg --scale 0.4

The graph ships its optional text branch bypassed, which the shared builder
(runner/workflow_builder.py) does not write yet. This script builds the workflow with
`build_ui_workflow` and then marks those nodes the way the editor saves a bypassed node
(`"mode": 4`). A linked STRING widget without a default (CLIP Text Encode's `text`) gets "" instead of
null. Once the builder writes bypassed nodes, the graph joins SHIPPED_GRAPHS and this script goes.
"""

import argparse
import os
import sys

MODE_BYPASSED = 4


def build_with_bypassed_nodes(graph, node_classes: dict, bypassed=(), extra: dict | None = None) -> dict:
    from comfyui_audiovisual.runner.workflow_builder import build_ui_workflow
    from comfyui_audiovisual.runner.workflow_format import widget_names

    workflow = build_ui_workflow(graph, node_classes, extra=extra)
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    for node_id, class_type, inputs, _ in graph:
        values, index = nodes[node_id]["widgets_values"], 0
        for name, options in widget_names(node_classes[class_type].INPUT_TYPES()):
            if isinstance(inputs.get(name), tuple) and values[index] is None:
                values[index] = ""
            index += 2 if options.get("control_after_generate") else 1
    for node_id in bypassed:
        nodes[node_id]["mode"] = MODE_BYPASSED
    return workflow


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(here, "workflows", "audio_to_image_flux.json"))
    options = parser.parse_args(argv)
    from comfyui_audiovisual.runner import host as host_boot
    from comfyui_audiovisual.runner.workflow_builder import write_workflow
    from comfyui_audiovisual.workflows import graphs

    host = host_boot.boot(cpu=True)
    workflow = build_with_bypassed_nodes(graphs.AUDIO_TO_IMAGE_FLUX, host.nodes.NODE_CLASS_MAPPINGS, graphs.SEEING_SOUNDS_FLUX_BYPASSED,
                                         extra={"description": graphs.AUDIO_TO_IMAGE_FLUX_DESCRIPTION})
    write_workflow(options.out, workflow)
    print(options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
