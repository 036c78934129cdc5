// The pack's templates in the editor, in the order and with the titles of web/templates.json (written
// by the workflow builder from workflows/graphs.py TEMPLATE_INDEX). The host's Templates dialog titles
// a custom node pack's templates by their file names and lists them in the order its server finds the
// files; it reads no titles or descriptions for them (frontends 1.32 to 1.49). So:
//  - in the host's dialog (Templates > Extensions > this pack) the templates come in the index's order,
//    the default first;
//  - the "Audio-visual" sidebar tab lists them with their titles, one-line descriptions and thumbnails;
//    a click opens one, as the host's dialog does.
// Public host API only: app.registerExtension, app.extensionManager.registerSidebarTab, app.loadGraphData,
// api.apiURL and api.getWorkflowTemplates (wrapped to reorder this pack's own entry, nothing else).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const EXTENSION_NAME = "comfyui-audiovisual.templates";
const SIDEBAR_TAB_ID = "audiovisual-templates";
const INDEX_URL = new URL("../templates.json", import.meta.url).href;
// this pack's folder name under custom_nodes: the key of its entry in /workflow_templates
const MODULE = decodeURIComponent(new URL(import.meta.url).pathname.split("/extensions/")[1].split("/")[0]);

let indexRequest = null;
function templateIndex() {
  indexRequest ??= fetch(INDEX_URL, { cache: "no-store" }).then((response) => {
    if (!response.ok) throw new Error(`${INDEX_URL}: HTTP ${response.status}`);
    return response.json();
  });
  return indexRequest;
}

/** `names` (file names the server found) in the index's order; names the index lacks go last, sorted. */
function inIndexOrder(names, index) {
  const order = index.map((entry) => entry.name);
  return [...order.filter((name) => names.includes(name)), ...names.filter((name) => !order.includes(name)).sort()];
}

const hostTemplateList = api.getWorkflowTemplates.bind(api);
api.getWorkflowTemplates = async function () {
  const byModule = await hostTemplateList();
  if (Array.isArray(byModule?.[MODULE])) {
    try {
      byModule[MODULE] = inIndexOrder(byModule[MODULE], await templateIndex());
    } catch (error) {
      console.warn(`[${EXTENSION_NAME}] template order: ${error}`);
    }
  }
  return byModule;
};

function templateURL(name, extension) {
  return api.apiURL(`/workflow_templates/${encodeURIComponent(MODULE)}/${encodeURIComponent(name)}.${extension}`);
}

async function openTemplate(entry, status) {
  status.textContent = `Opening ${entry.title}...`;
  try {
    const response = await fetch(templateURL(entry.name, "json"), { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    await app.loadGraphData(await response.json(), true, true, entry.name);
    status.textContent = "";
  } catch (error) {
    status.textContent = `Could not open ${entry.name}.json: ${error.message}`;
  }
}

function element(tag, style, text) {
  const el = document.createElement(tag);
  Object.assign(el.style, style);
  if (text !== undefined) el.textContent = text;
  return el;
}

async function renderSidebar(container) {
  container.replaceChildren();
  const root = element("div", { padding: "8px", display: "flex", flexDirection: "column", gap: "8px", overflowY: "auto", height: "100%" });
  root.className = "audiovisual-templates";
  root.append(element("div", { fontWeight: "bold", fontSize: "14px" }, "Audio-visual templates"));
  const status = element("div", { fontSize: "12px", opacity: "0.8" });
  container.append(root);
  let index;
  try {
    index = await templateIndex();
  } catch (error) {
    root.append(element("div", { fontSize: "12px" }, `The template list could not be read: ${error.message}`));
    return;
  }
  for (const entry of index) {
    const card = element("button", {
      display: "flex", gap: "8px", alignItems: "flex-start", textAlign: "left", padding: "6px", cursor: "pointer",
      background: "var(--comfy-input-bg, #222)", color: "var(--input-text, #ddd)", border: "1px solid var(--border-color, #444)",
      borderRadius: "6px",
    });
    card.className = "audiovisual-template";
    card.dataset.template = entry.name;
    card.title = `Open ${entry.name}.json`;
    const thumbnail = element("img", { width: "96px", height: "64px", objectFit: "cover", flex: "none", borderRadius: "4px" });
    thumbnail.src = templateURL(entry.name, "jpg");
    thumbnail.alt = "";
    const text = element("div", { display: "flex", flexDirection: "column", gap: "2px" });
    const title = element("div", { fontWeight: "bold", fontSize: "13px" }, entry.title);
    title.className = "audiovisual-template-title";
    const description = element("div", { fontSize: "12px", opacity: "0.8" }, entry.description);
    description.className = "audiovisual-template-description";
    text.append(title, description);
    card.append(thumbnail, text);
    card.addEventListener("click", () => openTemplate(entry, status));
    root.append(card);
  }
  root.append(status);
}

app.registerExtension({
  name: EXTENSION_NAME,
  setup() {
    const manager = app.extensionManager;
    if (typeof manager?.registerSidebarTab !== "function") return; // the host's Templates dialog still lists them
    manager.registerSidebarTab({
      id: SIDEBAR_TAB_ID,
      icon: "pi pi-volume-up",
      title: "Audio-visual",
      tooltip: "Audio-visual templates (comfyui-audiovisual)",
      type: "custom",
      render: (container) => {
        renderSidebar(container);
      },
    });
  },
});
