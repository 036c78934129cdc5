// Shows the caption that Caption Video (audio) or the VATT Converter wrote, on the node itself, as the host's own
// "Preview as Text" node shows its text: a read-only text box (not saved with the workflow) filled
// from the node's ui output {"text": [caption]} when it runs. Select and copy from it to paste the
// caption into Encode Text, or edit it in the graph with the host's string nodes (docs/vatt.md).
// Public host API only: app.registerExtension, node callbacks, addDOMWidget.
import { app } from "../../../scripts/app.js";

const CAPTION_NODES = new Set(["AV_CaptionVideo", "AV_VATTConverter"]);
const WIDGET_NAME = "caption_preview";
const PLACEHOLDER = "The caption appears here when this node runs.";
const BOX_HEIGHT = 64;

function addCaptionBox(node) {
  const box = document.createElement("textarea");
  box.readOnly = true;
  box.placeholder = PLACEHOLDER;
  box.spellcheck = false;
  box.style.cssText = "width: 100%; height: 100%; box-sizing: border-box; resize: none; padding: 4px 6px; " +
    "border-radius: 6px; border: 1px solid var(--border-color, #4e4e4e); background: var(--comfy-input-bg, #222); " +
    "color: var(--input-text, #ddd); font: 12px/1.35 Inter, Arial, sans-serif;";
  const widget = node.addDOMWidget(WIDGET_NAME, "av_caption", box, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => box.value,
    setValue: (value) => { box.value = value ?? ""; },
    getMinHeight: () => BOX_HEIGHT,
  });
  widget.serialize = false; // never part of widgets_values: keeps saved workflows positional
  node.avCaptionBox = box;
}

function showCaption(node, output) {
  const text = output?.text;
  if (!node.avCaptionBox || text == null) return;
  node.avCaptionBox.value = Array.isArray(text) ? text.join("\n") : String(text);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "comfyui-audiovisual.caption-preview",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!CAPTION_NODES.has(nodeData?.name)) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addCaptionBox(this);
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      showCaption(this, output);
      return result;
    };
  },

  // Outputs restored by the host (switching workflow tabs, opening a queue item).
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs || {})) {
      if (String(id).includes(":")) continue;
      const node = app.graph?.getNodeById(Number(id));
      if (node && CAPTION_NODES.has(node.comfyClass || node.type)) showCaption(node, output);
    }
  },
});
