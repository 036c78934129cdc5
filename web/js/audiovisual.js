// The pack's editor extension: family colours and badges on the pack's nodes, link colours for its
// socket types, and a spectrogram view (with a player for audio) on the nodes that make audio or
// a mel spectrogram. The masked sampler's live preview uses the host's own node preview.
// Public host API only: app.registerExtension, node callbacks, addDOMWidget, api.apiURL.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const EXTENSION_NAME = "comfyui-audiovisual.editor";
const CATEGORY_ROOT = "audiovisual/";

// One colour per family (node title bar, node body, badge). Muted, like the host's own node colours.
const FAMILIES = {
  loaders: { label: "load", color: "#243352", bgcolor: "#34466b", badge: "#5577c4" },
  encode: { label: "encode", color: "#1f3d3d", bgcolor: "#2e5555", badge: "#3f9a9a" },
  sample: { label: "sample", color: "#27402a", bgcolor: "#38583b", badge: "#4d9a55" },
  decode: { label: "decode", color: "#46361f", bgcolor: "#624c2c", badge: "#b38338" },
  output: { label: "output", color: "#3a2a46", bgcolor: "#513b61", badge: "#8a62ad" },
  control: { label: "control", color: "#2a363b", bgcolor: "#3f5159", badge: "#5f8796" },
  train: { label: "train", color: "#3d3d22", bgcolor: "#555530", badge: "#99993f" },
};

// Socket colours for the pack's own types (the same as the template thumbnails).
const SOCKET_COLOURS = {
  AV_VQ_TOKENIZER: "#FFB74D",
  AV_TOKENS: "#F06292",
  AV_MEL: "#BA68C8",
  AV_MASKGEN: "#FF8A65",
  AV_VOCODER: "#4DD0E1",
  AV_ENCODER: "#9575CD",
  AV_EMBEDDING: "#AED581",
  AV_MAPPER: "#4DB6AC",
  AV_AUDIOLDM: "#7986CB",
  AV_AUDIO_ADAPTER: "#DCE775",
  AV_CODEC: "#FFD54F",
  AV_VATT: "#A1887F",
};

// Nodes that always get the preview area ("audio": player + spectrogram, "mel": spectrogram).
// Any other pack node that sends "audio" / "av_spectrogram" ui data gets one when it first runs.
const PREVIEW_KIND = {
  AV_SaveAudioWAV: "audio",
  AV_MelToAudio: "audio",
  AV_DecodeMelTokens: "mel",
  AV_AudioToMel: "mel",
};
const PREVIEW_WIDGET = "audioUI"; // the name the host's audio extension looks for on nodes with "audio" outputs
const PREVIEW_HEIGHT = { audio: 168, mel: 112 };
const MIN_NODE_WIDTH = 300;

function isPackNode(nodeData) {
  return typeof nodeData?.category === "string" && nodeData.category.startsWith(CATEGORY_ROOT);
}

function familyOf(nodeData) {
  const family = nodeData.category.slice(CATEGORY_ROOT.length).split("/")[0];
  return FAMILIES[family] ? family : null;
}

function viewURL(entry) {
  const params = new URLSearchParams({ filename: entry.filename, type: entry.type || "output", subfolder: entry.subfolder || "" });
  return api.apiURL(`/view?${params}`);
}

function formatSeconds(s) {
  if (!Number.isFinite(s)) return "–";
  return s < 60 ? `${s.toFixed(2)} s` : `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

function describeClip(entry, kind) {
  const parts = [];
  if (kind === "mel") parts.push("mel spectrogram");
  if (kind === "mel" && entry?.seconds != null) parts.push(formatSeconds(entry.seconds)); // audio: the player shows it
  if (kind !== "mel" && entry?.sample_rate_hz) parts.push(`${entry.sample_rate_hz.toLocaleString("en-US")} Hz`);
  if (entry?.channels) parts.push(entry.channels === 1 ? "mono" : entry.channels === 2 ? "stereo" : `${entry.channels} ch`);
  return parts.join(" · ");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// ---- the preview widget ------------------------------------------------------------------------

class SpectrogramPreview {
  constructor(node, kind) {
    this.node = node;
    this.kind = kind;
    this.audioEntries = [];
    this.spectrogramEntries = [];
    this.index = 0;
    this.frame = null;

    this.root = el("div", `av-preview av-preview-${kind}`);
    this.view = el("div", "av-spectrogram");
    this.image = el("img", "av-spectrogram-image");
    this.image.alt = "spectrogram";
    this.image.draggable = false;
    this.playhead = el("div", "av-playhead");
    this.placeholder = el("div", "av-placeholder",
      kind === "audio" ? "The player and the spectrogram appear here when this node runs." : "The mel spectrogram appears here when this node runs.");
    this.view.append(this.image, this.playhead, this.placeholder);
    this.root.append(this.view);

    this.controls = el("div", "av-controls");
    if (kind === "audio") {
      this.audio = el("audio", "av-audio");
      this.audio.preload = "auto";
      this.playButton = el("button", "av-button av-play", "▶");
      this.playButton.title = "Play / pause";
      this.playButton.disabled = true;
      this.playButton.addEventListener("click", (e) => {
        e.stopPropagation();
        this.togglePlay();
      });
      this.time = el("span", "av-time", "");
      this.download = el("a", "av-button av-download", "⤓");
      this.download.title = "Download the WAV";
      this.download.hidden = true;
      this.controls.append(this.playButton, this.time);
      this.audio.addEventListener("play", () => this.onPlayState());
      this.audio.addEventListener("pause", () => this.onPlayState());
      this.audio.addEventListener("ended", () => {
        this.audio.currentTime = 0; // back to the start: the playhead leaves the right edge
        this.onPlayState();
      });
      this.audio.addEventListener("loadedmetadata", () => this.drawPlayhead());
      this.audio.addEventListener("timeupdate", () => this.drawPlayhead());
      this.view.addEventListener("pointerdown", (e) => this.seekTo(e));
      this.root.append(this.audio);
    }
    this.caption = el("span", "av-caption", "");
    this.pager = el("span", "av-pager");
    this.previous = el("button", "av-button", "‹");
    this.previous.title = "Previous clip of the batch";
    this.next = el("button", "av-button", "›");
    this.next.title = "Next clip of the batch";
    this.pageLabel = el("span", "av-page", "");
    this.pager.append(this.previous, this.pageLabel, this.next);
    this.previous.addEventListener("click", (e) => { e.stopPropagation(); this.show(this.index - 1); });
    this.next.addEventListener("click", (e) => { e.stopPropagation(); this.show(this.index + 1); });
    this.controls.append(this.caption, this.pager);
    if (this.download) this.controls.append(this.download);
    this.root.append(this.controls);
    this.image.addEventListener("error", () => {
      if (!this.image.getAttribute("src")) return;
      this.root.classList.remove("av-has-spectrogram");
      this.placeholder.textContent = "The preview file is gone (the server empties its temp folder when it starts). Run again.";
    });
    this.image.addEventListener("load", () => this.root.classList.add("av-has-spectrogram"));
    this.update(null);
  }

  get clipCount() {
    return Math.max(this.audioEntries.length, this.spectrogramEntries.length);
  }

  update(output) {
    this.audioEntries = Array.isArray(output?.audio) ? output.audio : [];
    this.spectrogramEntries = Array.isArray(output?.av_spectrogram) ? output.av_spectrogram : [];
    this.show(0);
  }

  show(index) {
    const count = this.clipCount;
    this.index = count ? (index + count) % count : 0;
    const audioEntry = this.audioEntries[this.index];
    const specEntry = this.spectrogramEntries[this.index];
    this.root.classList.toggle("av-empty", count === 0);
    this.pager.hidden = count < 2;
    this.pageLabel.textContent = `${this.index + 1}/${count}`;
    this.caption.textContent = count ? describeClip(specEntry, this.kind) : "";
    if (specEntry) {
      this.image.src = viewURL(specEntry);
    } else {
      this.image.removeAttribute("src");
      this.root.classList.remove("av-has-spectrogram");
      this.placeholder.textContent = count ? "No spectrogram for this clip." : this.placeholder.textContent;
    }
    if (this.audio) {
      this.audio.pause();
      if (audioEntry) {
        this.audio.src = viewURL(audioEntry);
        this.download.href = viewURL(audioEntry);
        this.download.download = audioEntry.filename;
        this.download.hidden = false;
      } else {
        this.audio.removeAttribute("src");
        this.download.hidden = true;
      }
      this.playButton.disabled = !audioEntry;
      this.seconds = specEntry?.seconds;
      this.onPlayState();
    }
    this.drawPlayhead();
  }

  togglePlay() {
    if (!this.audio?.getAttribute("src")) return;
    if (this.audio.paused) this.audio.play().catch(() => {});
    else this.audio.pause();
  }

  duration() {
    const d = this.audio?.duration;
    return Number.isFinite(d) && d > 0 ? d : this.seconds;
  }

  seekTo(event) {
    if (!this.audio?.getAttribute("src") || event.button !== 0) return;
    event.stopPropagation();
    const rect = this.view.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    const duration = this.duration();
    if (!duration) return;
    this.audio.currentTime = fraction * duration;
    if (this.audio.paused) this.audio.play().catch(() => {});
    this.drawPlayhead();
  }

  onPlayState() {
    if (!this.audio) return;
    const playing = !this.audio.paused && !this.audio.ended;
    this.playButton.textContent = playing ? "❚❚" : "▶";
    this.root.classList.toggle("av-playing", playing);
    cancelAnimationFrame(this.frame);
    if (playing) {
      const tick = () => {
        this.drawPlayhead();
        this.frame = requestAnimationFrame(tick);
      };
      tick();
    } else {
      this.drawPlayhead();
    }
  }

  drawPlayhead() {
    if (!this.audio) return;
    const duration = this.duration();
    const t = this.audio.currentTime || 0;
    this.time.textContent = this.audio.getAttribute("src") ? `${formatSeconds(t)} / ${formatSeconds(duration)}` : "";
    const visible = !!duration && (t > 0 || !this.audio.paused);
    this.playhead.style.display = visible ? "block" : "none";
    if (visible) this.playhead.style.left = `${Math.min(100, (100 * t) / duration)}%`;
  }

  dispose() {
    cancelAnimationFrame(this.frame);
    if (this.audio) {
      this.audio.pause();
      this.audio.removeAttribute("src");
    }
    this.root.remove();
  }
}

function ensurePreview(node, kind) {
  if (node.avPreview) return node.avPreview;
  const preview = new SpectrogramPreview(node, kind);
  // The host's audio extension sets `src` on the element of a widget named "audioUI" when it
  // restores outputs; our onNodeOutputsUpdated does the real work, so the property only has to exist.
  Object.defineProperty(preview.root, "src", { set() {}, get() { return ""; }, configurable: true });
  const widget = node.addDOMWidget(PREVIEW_WIDGET, "av_preview", preview.root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => PREVIEW_HEIGHT[kind],
  });
  widget.serialize = false; // never part of widgets_values: keeps saved workflows positional
  widget.onRemove = () => preview.dispose();
  node.avPreview = preview;
  fitNode(node);
  return preview;
}

function fitNode(node) {
  const wanted = node.computeSize();
  const width = Math.max(node.size[0], MIN_NODE_WIDTH);
  const height = Math.max(node.size[1], wanted[1]);
  if (width !== node.size[0] || height !== node.size[1]) node.setSize([width, height]);
  node.setDirtyCanvas?.(true, true);
}

function showOutput(node, output) {
  if (!output || !(Array.isArray(output.audio) || Array.isArray(output.av_spectrogram))) return;
  const kind = PREVIEW_KIND[node.comfyClass] || (Array.isArray(output.audio) && output.audio.length ? "audio" : "mel");
  ensurePreview(node, kind).update(output);
  fitNode(node);
}

// ---- colours and badges ------------------------------------------------------------------------

function styleNode(node, family) {
  const style = FAMILIES[family];
  if (!style) return;
  node.color = style.color;
  node.bgcolor = style.bgcolor;
  node.badges = node.badges || [];
  const Badge = window.LGraphBadge;
  if (Badge) {
    const badge = new Badge({ text: style.label, fgColor: "#ffffff", bgColor: style.badge });
    node.badges.push(() => badge);
  }
}

function keepSocketColours() {
  // The host resets the colour of every data type when it loads a colour palette: these keep the
  // pack's colours unless a palette names the type itself.
  const targets = [window.LGraphCanvas?.link_type_colors, app.canvas?.default_connection_color_byType];
  for (const table of targets) {
    if (!table) continue;
    for (const [type, colour] of Object.entries(SOCKET_COLOURS)) {
      let override = table[type] || "";
      Object.defineProperty(table, type, {
        configurable: true,
        enumerable: true,
        get: () => override || colour,
        set: (value) => { override = value || ""; },
      });
    }
  }
}

const STYLE = `
.av-preview { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%; box-sizing: border-box;
  padding: 2px 0 4px; font: 12px/1.3 Inter, Arial, sans-serif; color: var(--input-text, #ddd); }
.av-spectrogram { position: relative; flex: 1 1 auto; min-height: 48px; border-radius: 6px; overflow: hidden;
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #4e4e4e); }
.av-preview-audio .av-spectrogram { cursor: pointer; }
.av-spectrogram-image { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: fill; display: none;
  user-select: none; -webkit-user-drag: none; }
.av-has-spectrogram .av-spectrogram-image { display: block; }
.av-has-spectrogram .av-placeholder { display: none; }
.av-placeholder { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  padding: 8px 14px; text-align: center; color: var(--descrip-text, #999); font-size: 11px; }
.av-playhead { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #fff;
  box-shadow: 0 0 3px rgba(0,0,0,.8); display: none; pointer-events: none; }
.av-controls { display: flex; align-items: center; gap: 6px; min-height: 24px; flex: 0 0 auto; white-space: nowrap; }
.av-button { display: inline-flex; align-items: center; justify-content: center; min-width: 24px; height: 22px;
  padding: 0 6px; border-radius: 4px; border: 1px solid var(--border-color, #4e4e4e);
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); font-size: 11px; cursor: pointer;
  text-decoration: none; box-sizing: border-box; }
.av-button:disabled { opacity: .4; cursor: default; }
.av-button:not(:disabled):hover { filter: brightness(1.3); }
.av-play { min-width: 30px; }
.av-time { font-variant-numeric: tabular-nums; color: var(--input-text, #ddd); }
.av-caption { flex: 1 1 auto; overflow: hidden; text-overflow: ellipsis; color: var(--descrip-text, #999); text-align: right; }
.av-preview-mel .av-caption { text-align: left; }
.av-empty .av-controls { display: none; }
.av-pager { display: inline-flex; align-items: center; gap: 3px; }
.av-pager[hidden], .av-download[hidden] { display: none; }
.av-page { font-variant-numeric: tabular-nums; color: var(--descrip-text, #999); }
`;

function injectStyle() {
  if (document.getElementById("av-editor-style")) return;
  const style = document.createElement("style");
  style.id = "av-editor-style";
  style.textContent = STYLE;
  document.head.append(style);
}

app.registerExtension({
  name: EXTENSION_NAME,

  async setup() {
    injectStyle();
    keepSocketColours();
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;
    const family = familyOf(nodeData);
    const kind = PREVIEW_KIND[nodeData.name];

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      styleNode(this, family);
      if (kind) ensurePreview(this, kind);
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      if (this.avPreview) fitNode(this); // a saved size smaller than the preview needs
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      showOutput(this, output);
      return result;
    };
  },

  // Outputs restored by the host (switching workflow tabs, opening a queue item).
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs || {})) {
      if (String(id).includes(":")) continue; // inside a subgraph: shown when the subgraph is opened and run
      const node = app.graph?.getNodeById(Number(id));
      if (node && isPackNode(node.constructor?.nodeData)) showOutput(node, output);
    }
  },
});
