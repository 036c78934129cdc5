"""Draw a UI-format workflow (nodes where the editor puts them, links between slots) as a PNG.

    .venv/bin/python tools/workflow_picture.py workflows/image_to_audio.json docs/image_to_audio_workflow.png
    for w in workflows/*.json; do .venv/bin/python tools/workflow_picture.py $w ${w%.json}.jpg --scale 0.4; done

The second line makes the thumbnails the editor's Templates dialog shows for the pack's workflows.

For the README: a picture of the graph that needs no browser. Only what the JSON holds is drawn:
node titles (or types), input and output slot names, widget values, and links coloured by type.
Bypassed nodes ("mode": 4) are drawn purple, as the editor shows them; notes yellow, with their text.
"""

import argparse
import json
import os
import sys

from PIL import Image, ImageDraw, ImageFont

TITLE_H, SLOT_H, PAD = 30, 22, 20
BACKGROUND, NODE, TITLE_BAR, TEXT, DIM_TEXT = (32, 32, 36), (53, 53, 58), (70, 70, 80), (230, 230, 230), (160, 160, 168)
MODE_BYPASSED, BYPASSED_NODE, BYPASSED_TITLE_BAR = 4, (95, 48, 100), (125, 60, 132)
NOTE_TYPES, NOTE_NODE, NOTE_TITLE_BAR, NOTE_LINE_H = {"Note", "MarkdownNote"}, (102, 85, 51), (68, 51, 34), 16
LINK_COLOURS = {"IMAGE": (100, 181, 246), "AUDIO": (129, 199, 132), "MASK": (200, 200, 200), "AV_VQ_TOKENIZER": (255, 183, 77),
                "AV_TOKENS": (240, 98, 146), "AV_MEL": (186, 104, 200), "AV_MASKGEN": (255, 138, 101), "AV_VOCODER": (77, 208, 225)}


def _font(size):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def node_height(node) -> int:
    if node.get("type") in NOTE_TYPES:  # the editor's own size: its text box scrolls
        return TITLE_H + int(node["size"][1])
    slots = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
    return TITLE_H + SLOT_H * (slots + len(node.get("widgets_values", []) or [])) + 10


def _wrapped(draw, text: str, font, width_px: float) -> list[str]:
    """The text's lines, each paragraph wrapped at word boundaries to width_px."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) > width_px:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _bezier(start, end, steps=40):
    (x0, y0), (x1, y1) = start, end
    bend = max(60, abs(x1 - x0) / 2)
    c0, c1 = (x0 + bend, y0), (x1 - bend, y1)
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * x0 + b * c0[0] + c * c1[0] + d * x1, a * y0 + b * c0[1] + c * c1[1] + d * y1))
    return points


def draw_workflow(workflow: dict, scale: float = 1.0) -> Image.Image:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    if not nodes:
        raise ValueError("workflow has no nodes")
    left = min(n["pos"][0] for n in nodes.values()) - PAD
    top = min(n["pos"][1] for n in nodes.values()) - PAD
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values()) + PAD
    bottom = max(n["pos"][1] + node_height(n) for n in nodes.values()) + PAD
    image = Image.new("RGB", (int(right - left), int(bottom - top)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, slot_font = _font(15), _font(12)

    def origin(node):
        return node["pos"][0] - left, node["pos"][1] - top

    def slot_y(node, index):
        return origin(node)[1] + TITLE_H + SLOT_H * index + SLOT_H // 2

    for node in nodes.values():
        x, y = origin(node)
        width, height = node["size"][0], node_height(node)
        if node.get("type") in NOTE_TYPES:
            draw.rounded_rectangle([x, y, x + width, y + height], radius=8, fill=NOTE_NODE)
            draw.rounded_rectangle([x, y, x + width, y + TITLE_H], radius=8, fill=NOTE_TITLE_BAR)
            draw.text((x + 10, y + 7), node.get("title") or node["type"], font=title_font, fill=TEXT)
            line_y = y + TITLE_H + 6
            for line in _wrapped(draw, str((node.get("widgets_values") or [""])[0]), slot_font, width - 20):
                if line_y + NOTE_LINE_H > y + height:
                    break
                draw.text((x + 10, line_y), line, font=slot_font, fill=TEXT)
                line_y += NOTE_LINE_H
            continue
        bypassed = node.get("mode") == MODE_BYPASSED
        draw.rounded_rectangle([x, y, x + width, y + height], radius=8, fill=BYPASSED_NODE if bypassed else NODE)
        draw.rounded_rectangle([x, y, x + width, y + TITLE_H], radius=8, fill=BYPASSED_TITLE_BAR if bypassed else TITLE_BAR)
        draw.text((x + 10, y + 7), node.get("title") or node["type"], font=title_font, fill=TEXT)
        for i, slot in enumerate(node.get("inputs", [])):
            colour = LINK_COLOURS.get(slot.get("type"), DIM_TEXT)
            draw.ellipse([x - 5, slot_y(node, i) - 5, x + 5, slot_y(node, i) + 5], fill=colour)
            draw.text((x + 10, slot_y(node, i) - 8), slot["name"], font=slot_font, fill=DIM_TEXT)
        for i, slot in enumerate(node.get("outputs", [])):
            colour = LINK_COLOURS.get(slot.get("type"), DIM_TEXT)
            draw.ellipse([x + width - 5, slot_y(node, i) - 5, x + width + 5, slot_y(node, i) + 5], fill=colour)
            label_width = draw.textlength(slot["name"], font=slot_font)
            draw.text((x + width - 10 - label_width, slot_y(node, i) - 8), slot["name"], font=slot_font, fill=DIM_TEXT)
        first_widget = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
        for j, value in enumerate(node.get("widgets_values", []) or []):
            draw.text((x + 10, slot_y(node, first_widget + j) - 8), str(value)[:40], font=slot_font, fill=TEXT)

    for link_id, from_id, from_slot, to_id, to_slot, link_type in workflow.get("links", []):
        if from_id not in nodes or to_id not in nodes:
            raise ValueError(f"link {link_id} joins missing node {from_id if from_id not in nodes else to_id}")
        source, target = nodes[from_id], nodes[to_id]
        start = (origin(source)[0] + source["size"][0], slot_y(source, from_slot))
        end = (origin(target)[0], slot_y(target, to_slot))
        draw.line(_bezier(start, end), fill=LINK_COLOURS.get(link_type, DIM_TEXT), width=3)
    if scale != 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow", help="a UI-format workflow JSON")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--scale", type=float, default=0.75)
    args = parser.parse_args(argv)
    with open(args.workflow) as f:
        workflow = json.load(f)
    if "nodes" not in workflow:
        raise SystemExit(f"{args.workflow}: not a UI-format workflow (no 'nodes'); API-format files hold no positions")
    picture = draw_workflow(workflow, args.scale)
    stem, extension = os.path.splitext(args.out)
    tmp = f"{stem}.partial{extension}"  # PIL picks the format from the extension (.png, .jpg)
    picture.save(tmp, quality=90) if extension.lower() in (".jpg", ".jpeg") else picture.save(tmp)
    os.replace(tmp, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
