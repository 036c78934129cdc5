// Real-browser check of the pack in the host's editor (driven by tests/test_browser.py).
//
//   node check_editor.mjs <config.json>
//
// config: {url, workflows_dir, default_workflow, out_dir, chromium, run_timeout_s, help_node, template_index, sidebar_tab}
// Writes screenshots and report.json into out_dir; prints one JSON line (the report) and exits
// 0 when every check passed, 1 otherwise (report.failures says what failed).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const EXTENSION_NAME = "comfyui-audiovisual.editor";
const PACK_URL_PART = "/extensions/comfyui-audiovisual/";
const FAMILY_LABELS = ["load", "encode", "sample", "decode", "output", "control", "train"];
const VIEWPORT = { width: 1600, height: 1000 };

// What the host itself (ComfyUI 0.3.75, frontend 1.32.9) logs on a fresh profile with no saved
// user files, before any pack code runs: tolerated, everything else is a failure.
const HOST_MISSING_USER_FILES = [/^\/api\/userdata(\/|\?|$)/, /^\/user\.css$/, /^\/favicon\.ico$/];
const HOST_STARTUP_ERRORS = [/^TypeError: Cannot read properties of undefined \(reading 'id'\)/];

const origin = new URL(config.url).origin;
const report = { failures: [], screenshots: [], templates: {}, run: {}, console: { tolerated: [], internet: 0 } };
const fail = (what) => { report.failures.push(what); console.error(`FAIL ${what}`); };
const note = (what) => console.error(`.. ${what}`);

fs.mkdirSync(config.out_dir, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "av-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: config.chromium,
  headless: true,
  viewport: VIEWPORT,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"],
});
const page = context.pages()[0] ?? (await context.newPage());
let phase = "startup"; // "startup" until the app is up, then "checks"

const isLocal = (url) => url.startsWith(origin);
const isHostUserFile = (url) => {
  const u = new URL(url);
  return HOST_MISSING_USER_FILES.some((re) => re.test(u.pathname + (u.search ? "?" : "")) || re.test(u.pathname));
};
page.on("console", (message) => {
  if (message.type() !== "error") return;
  const text = message.text();
  const where = message.location()?.url || "";
  if (text.startsWith("Failed to load resource")) {
    // judged by the response / requestfailed handlers, which know the URL
    if (where && !isLocal(where)) report.console.internet++;
    return;
  }
  const fromPack = text.includes("audiovisual") || where.includes(PACK_URL_PART);
  if (!fromPack && phase === "startup" && HOST_STARTUP_ERRORS.some((re) => re.test(text))) {
    report.console.tolerated.push(text.split("\n")[0]);
    return;
  }
  fail(`console error (${phase}): ${text.split("\n").slice(0, 3).join(" | ")}${where ? ` at ${where}` : ""}`);
});
page.on("pageerror", (error) => fail(`uncaught exception (${phase}): ${error.message}`));
page.on("response", (response) => {
  const url = response.url();
  if (response.status() < 400 || !isLocal(url)) return;
  if (isHostUserFile(url)) report.console.tolerated.push(`${response.status()} ${new URL(url).pathname}`);
  else fail(`HTTP ${response.status()} for ${url}`);
});
const thumbnails = new Map(); // template name -> HTTP status of its thumbnail
page.on("response", (response) => {
  const match = response.url().match(/\/workflow_templates\/comfyui-audiovisual\/([^/?]+)\.jpg/);
  if (match) thumbnails.set(decodeURIComponent(match[1]), response.status());
});
page.on("requestfailed", (request) => {
  const url = request.url();
  if (!isLocal(url)) { report.console.internet++; return; }
  const error = request.failure()?.errorText || "";
  if (error.includes("ERR_ABORTED")) return; // cancelled by the page (a 404 already reported, or a replaced media source)
  fail(`request failed: ${url} (${error})`);
});

async function shot(name, clip) {
  const file = path.join(config.out_dir, `${name}.png`);
  await page.screenshot({ path: file, clip });
  report.screenshots.push(file);
  return file;
}

async function fitView() {
  await page.evaluate(() => {
    const canvas = window.app.canvas;
    const nodes = window.app.graph.nodes;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of nodes) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 60);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const rect = canvas.canvas.getBoundingClientRect();
    const top = 130, left = 70, margin = 30; // below the tab bar and the workflow menu, right of the sidebar
    const scale = Math.min(1, (rect.width - left - 2 * margin) / (x1 - x0), (rect.height - top - 2 * margin) / (y1 - y0));
    canvas.ds.scale = scale;
    canvas.ds.offset = [(left + margin) / scale - x0, (top + margin) / scale - y0];
    canvas.setDirty(true, true);
  });
  await page.waitForTimeout(600);
}

// The whole graph, fitted, without the editor's chrome around it.
async function graphShot(name) {
  await fitView();
  const clip = await page.evaluate(() => {
    const canvas = window.app.canvas;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of window.app.graph.nodes) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 60);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const rect = canvas.canvas.getBoundingClientRect();
    const [sx0, sy0] = canvas.ds.convertOffsetToCanvas([x0, y0]);
    const [sx1, sy1] = canvas.ds.convertOffsetToCanvas([x1, y1]);
    const pad = 16;
    return { x: rect.left + sx0 - pad, y: rect.top + sy0 - pad, width: sx1 - sx0 + 2 * pad, height: sy1 - sy0 + 2 * pad };
  });
  return shot(name, clip);
}

// A close-up of some nodes at 100% zoom.
async function closeUp(name, ids) {
  const clip = await page.evaluate((ids) => {
    const canvas = window.app.canvas;
    const nodes = ids.map((id) => window.app.graph.getNodeById(id));
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 20;
    const y0 = Math.min(...nodes.map((n) => n.pos[1])) - 60;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 20;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 20;
    const rect = canvas.canvas.getBoundingClientRect();
    canvas.ds.scale = 1;
    canvas.ds.offset = [(rect.width - (x1 - x0)) / 2 - x0, 140 - y0];
    canvas.setDirty(true, true);
    return { x: rect.left + (rect.width - (x1 - x0)) / 2, y: rect.top + 140, width: x1 - x0, height: Math.min(y1 - y0, rect.height - 150) };
  }, ids);
  await page.waitForTimeout(600);
  return shot(name, clip);
}

async function closeDialogs() {
  for (let i = 0; i < 5; i++) {
    const dialog = page.locator(".p-dialog:visible").first();
    if (!(await dialog.count())) return;
    const close = dialog.locator("button:has(i.pi-times), button.p-dialog-close-button, button[aria-label='Close']").first();
    if (await close.count()) await close.click({ timeout: 5000 }).catch(() => page.keyboard.press("Escape"));
    else await page.keyboard.press("Escape");
    await page.waitForTimeout(600);
  }
  fail(`a dialog does not close: ${(await page.locator(".p-dialog:visible").first().innerText()).slice(0, 200)}`);
}

// Loads a workflow and checks the editor shows it as written: every node known, the pack's nodes
// coloured and badged, widget values unchanged after a save (the preview widget is never saved).
async function loadAndCheck(name, workflow) {
  await page.evaluate(async (wf) => { await window.app.loadGraphData(structuredClone(wf)); }, workflow);
  await page.waitForTimeout(800);
  const state = await page.evaluate(() => {
    const saved = window.app.graph.serialize();
    return {
      nodes: window.app.graph.nodes.map((n) => {
        const badges = (n.badges || []).map((b) => (typeof b === "function" ? b() : b)?.text).filter(Boolean);
        return { id: n.id, type: n.type, registered: !!window.LiteGraph.registered_node_types[n.type], pack: n.type.startsWith("AV_"),
          color: n.color || null, badges, hasPreview: !!n.avPreview, captionBox: !!n.avCaptionBox, widgetNames: (n.widgets || []).map((w) => w.name), size: n.size.slice(), minSize: n.computeSize() };
      }),
      saved: Object.fromEntries(saved.nodes.map((n) => [n.id, n.widgets_values ?? []])),
      dialogs: [...document.querySelectorAll(".p-dialog")].filter((d) => d.offsetParent).map((d) => d.innerText.slice(0, 200)),
    };
  });
  const problems = [];
  const expected = new Map(workflow.nodes.map((n) => [n.id, n]));
  if (state.nodes.length !== workflow.nodes.length) problems.push(`${state.nodes.length} nodes in the editor, ${workflow.nodes.length} in the file`);
  for (const node of state.nodes) {
    const original = expected.get(node.id);
    if (!original || original.type !== node.type) problems.push(`node ${node.id} is ${node.type}, the file says ${original?.type}`);
    if (!node.registered) problems.push(`node ${node.id}: type ${node.type} is not registered (missing node)`);
    if (node.pack && !node.color) problems.push(`node ${node.id} (${node.type}) has no family colour`);
    if (node.pack && !node.badges.some((b) => FAMILY_LABELS.includes(b))) problems.push(`node ${node.id} (${node.type}) has no family badge (badges: ${node.badges})`);
    if ((node.type === "AV_CaptionVideo" || node.type === "AV_VATTConverter") && !node.captionBox) problems.push(`node ${node.id} (${node.type}) shows no caption box`);
    if (node.size[1] + 0.5 < node.minSize[1]) problems.push(`node ${node.id} (${node.type}) is ${node.size[1]} px tall, its content needs ${node.minSize[1]}`);
    // the pack's nodes save exactly the file's values; the host's own nodes may append theirs (upload buttons, players)
    const written = original?.widgets_values ?? [];
    const saved = node.pack ? state.saved[node.id] : (state.saved[node.id] ?? []).slice(0, written.length);
    if (original && JSON.stringify(saved) !== JSON.stringify(written)) {
      problems.push(`node ${node.id} (${node.type}) saves widgets ${JSON.stringify(state.saved[node.id])} (widgets ${node.widgetNames}), the file has ${JSON.stringify(original.widgets_values)}`);
    }
  }
  if (state.dialogs.length) problems.push(`a dialog opened: ${state.dialogs.join(" / ").replace(/\s+/g, " ")}`);
  await closeDialogs();
  const overlaps = await page.evaluate(() => {
    const boxes = window.app.graph.nodes.map((n) => ({ id: n.id, x0: n.pos[0], y0: n.pos[1] - 30, x1: n.pos[0] + n.size[0], y1: n.pos[1] + n.size[1] }));
    const hits = [];
    for (const a of boxes) for (const b of boxes) {
      if (a.id < b.id && a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1) hits.push(`${a.id}/${b.id}`);
    }
    return hits;
  });
  if (overlaps.length) problems.push(`nodes overlap: ${overlaps.join(", ")}`);
  for (const p of problems) fail(`template ${name}: ${p}`);
  report.templates[name] = { nodes: state.nodes.length, problems: problems.length };
  await fitView();
  await shot(`template_${name}`);
  return state;
}

try {
  // ---- 1. the editor starts and the pack's extension registers ------------------------------
  const extensionScript = page.waitForResponse((r) => r.url().includes(`${PACK_URL_PART}js/audiovisual.js`), { timeout: 120000 }).catch(() => null);
  await page.goto(config.url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.waitForFunction(() => window.app?.graph && window.app.vueAppReady && window.app.extensions?.length, null, { timeout: 120000 });
  await page.waitForTimeout(2500); // late start-up requests (user files, templates index)
  phase = "checks";
  // a fresh profile gets the Templates dialog a moment after start-up: wait for it, then close it
  await page.locator(".p-dialog").first().waitFor({ state: "visible", timeout: 15000 }).catch(() => {});
  await page.waitForTimeout(800); // its opening animation
  await closeDialogs();
  await page.locator(".p-dialog-mask").first().waitFor({ state: "detached", timeout: 10000 }).catch(() => {});
  // uncluttered screenshots: no minimap over the graph, no "Nodes 2.0" announcement
  await page.addStyleTag({ content: ".minimap-main-container { display: none !important; }" });
  await page.getByText("Introducing Nodes 2.0", { exact: false }).locator("xpath=ancestor::div[1]/following-sibling::button | ancestor::div[2]//button[last()]")
    .last().click({ timeout: 3000 }).catch(() => {});
  const script = await extensionScript;
  if (!script || script.status() !== 200) fail(`the extension script ${PACK_URL_PART}js/audiovisual.js was not served (${script?.status()})`);
  const registered = await page.evaluate((name) => window.app.extensions.some((e) => e.name === name), EXTENSION_NAME);
  if (!registered) fail(`extension ${EXTENSION_NAME} is not registered`);
  const socketColour = await page.evaluate(() => window.LGraphCanvas.link_type_colors.AV_TOKENS);
  if (!socketColour) fail("the pack's socket types have no link colour");
  await shot("editor_start");

  // ---- 2. the Templates dialog lists the pack's workflows with thumbnails; one loads from it ---
  const names = fs.readdirSync(config.workflows_dir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort();
  const workflows = Object.fromEntries(names.map((n) => [n, JSON.parse(fs.readFileSync(path.join(config.workflows_dir, `${n}.json`), "utf8"))]));
  await page.locator("button.templates-tab-button").first().click();
  const dialog = page.locator(".p-dialog:visible").first();
  await dialog.getByText("comfyui-audiovisual", { exact: true }).first().click({ timeout: 30000 });
  await page.waitForTimeout(1500);
  // each card shows its name and a thumbnail that the server sent (the dialog shows them as blob: URLs)
  await page.evaluate(() => {
    window.__avCards = (names) => names.map((name) => {
      const label = [...document.querySelectorAll(".p-dialog *")].find((e) => e.children.length === 0 && e.textContent.trim() === name);
      let card = label;
      for (let i = 0; card && i < 8 && !card.querySelector("img"); i++) card = card.parentElement;
      const img = card?.querySelector("img");
      return { name, label: !!label, thumbnail: !!img && img.complete && img.naturalWidth > 0 };
    });
  });
  // the dialog loads thumbnails as cards scroll into view: visit every card, then go back to the top
  for (const name of [...names, names[0]]) {
    await dialog.getByText(name, { exact: true }).first().scrollIntoViewIfNeeded({ timeout: 5000 }).catch(() => {});
    await page.waitForTimeout(300);
  }
  await page.waitForFunction((names) => window.__avCards(names).every((c) => c.thumbnail), names, { timeout: 20000 }).catch(() => {});
  const cards = await page.evaluate((names) => window.__avCards(names), names);
  for (const card of cards) {
    const served = thumbnails.get(card.name);
    if (!card.label) fail(`Templates dialog: no card for ${card.name}`);
    else if (served !== 200) fail(`Templates dialog: the thumbnail of ${card.name} was not served (${served ?? "never asked"})`);
    else if (!card.thumbnail) fail(`Templates dialog: the card of ${card.name} shows no thumbnail`);
  }
  // the pack's cards come in the index's order (web/templates.json), the default first
  const cardOrder = await page.evaluate((names) => {
    const labels = names.map((name) => [name, [...document.querySelectorAll(".p-dialog *")]
      .find((e) => e.children.length === 0 && e.textContent.trim() === name)]).filter(([, el]) => el);
    labels.sort(([, a], [, b]) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
    return labels.map(([name]) => name);
  }, names);
  report.templateOrder = cardOrder;
  const indexOrder = config.template_index.map((t) => t.name).filter((n) => cardOrder.includes(n));
  if (JSON.stringify(cardOrder) !== JSON.stringify(indexOrder)) fail(`Templates dialog: the pack's templates come as ${cardOrder}, the index says ${indexOrder}`);
  await shot("templates_dialog");
  const viaDialog = names.includes("audio_to_image") ? "audio_to_image" : names[0];
  await dialog.getByText(viaDialog, { exact: true }).first().click();
  await page.waitForFunction((n) => window.app.graph.nodes.length === n && !document.querySelector(".p-dialog:not([style*='display: none'])")?.offsetParent,
    workflows[viaDialog].nodes.length, { timeout: 30000 }).catch(() => fail(`Templates dialog: clicking ${viaDialog} did not load its ${workflows[viaDialog].nodes.length} nodes`));
  const loadedTypes = await page.evaluate(() => window.app.graph.nodes.map((n) => n.type).sort());
  if (JSON.stringify(loadedTypes) !== JSON.stringify(workflows[viaDialog].nodes.map((n) => n.type).sort())) fail(`Templates dialog: ${viaDialog} loaded other nodes: ${loadedTypes}`);
  await closeDialogs();
  await page.waitForTimeout(500);
  await shot("template_from_dialog");

  // ---- 2b. the pack's sidebar tab lists the templates with titles and descriptions; one opens --
  await page.locator(`button.${config.sidebar_tab}-tab-button`).first().click({ timeout: 15000 })
    .catch(() => fail(`sidebar: no ${config.sidebar_tab} tab button`));
  await page.waitForFunction((n) => document.querySelectorAll(".audiovisual-template").length === n, config.template_index.length, { timeout: 15000 })
    .catch(() => {});
  const listed = await page.evaluate(() => [...document.querySelectorAll(".audiovisual-template")].map((card) => ({
    name: card.dataset.template,
    title: card.querySelector(".audiovisual-template-title")?.textContent,
    description: card.querySelector(".audiovisual-template-description")?.textContent,
    thumbnail: (() => { const img = card.querySelector("img"); return !!img && img.complete && img.naturalWidth > 0; })(),
  })));
  report.sidebar = listed;
  if (JSON.stringify(listed.map(({ name, title, description }) => ({ name, title, description }))) !== JSON.stringify(config.template_index)) {
    fail(`sidebar: lists ${JSON.stringify(listed)}, the index is ${JSON.stringify(config.template_index)}`);
  }
  for (const card of listed) if (!card.thumbnail) fail(`sidebar: the card of ${card.name} shows no thumbnail`);
  await shot("templates_sidebar");
  const viaSidebar = config.template_index[0].name;
  await page.locator(`.audiovisual-template[data-template="${viaSidebar}"]`).click({ timeout: 10000 }).catch(() => {});
  await page.waitForFunction((n) => window.app.graph.nodes.length === n, workflows[viaSidebar].nodes.length, { timeout: 30000 })
    .catch(() => fail(`sidebar: clicking ${viaSidebar} did not load its ${workflows[viaSidebar].nodes.length} nodes`));
  const fromSidebar = await page.evaluate(() => window.app.graph.nodes.map((n) => n.type).sort());
  if (JSON.stringify(fromSidebar) !== JSON.stringify(workflows[viaSidebar].nodes.map((n) => n.type).sort())) fail(`sidebar: ${viaSidebar} loaded other nodes: ${fromSidebar}`);
  await page.locator(`button.${config.sidebar_tab}-tab-button`).first().click().catch(() => {}); // close the sidebar
  await page.waitForTimeout(400);

  // ---- 3. every template loads through app.loadGraphData -------------------------------------
  for (const name of names) await loadAndCheck(name, workflows[name]);

  // ---- 4. node help from the pack's docs, opened from the node library ------------------------
  if (config.help_node) {
    const docRequest = page.waitForResponse((r) => r.url().includes(`${PACK_URL_PART}docs/${config.help_node.id}/`), { timeout: 30000 }).catch(() => null);
    await page.locator("button.node-library-tab-button").first().click();
    const search = page.getByPlaceholder(/search/i).first();
    await search.fill(config.help_node.title);
    const item = page.getByText(config.help_node.title, { exact: true }).first();
    await item.hover({ timeout: 30000 });
    await page.locator(".p-tree-node-content:hover button, .p-tree-node-content:hover [class*=help]").last().click({ timeout: 10000 })
      .catch(async () => { await page.getByRole("button", { name: /help/i }).first().click({ timeout: 5000 }); });
    const response = await docRequest;
    if (!response || response.status() !== 200) fail(`node help: ${config.help_node.id}'s page was not fetched from the pack's docs (${response?.status()})`);
    await page.getByText(config.help_node.heading, { exact: false }).first().waitFor({ timeout: 15000 })
      .catch(() => fail(`node help: the help panel does not show "${config.help_node.heading}"`));
    await shot("node_help");
    await page.locator("button.node-library-tab-button").first().click(); // close the sidebar
    await page.waitForTimeout(400);
  }

  // ---- 5. the default template runs; live preview on the sampler; player + spectrogram --------
  const defaultName = config.default_workflow;
  const workflow = workflows[defaultName];
  await loadAndCheck(`${defaultName}_before_run`, workflow);
  const sampler = workflow.nodes.find((n) => n.type === "AV_VisualEchoesSampler")?.id;
  const saver = workflow.nodes.find((n) => n.type === "AV_SaveAudioWAV")?.id;
  const previewed = workflow.nodes.filter((n) => ["AV_DecodeMelTokens", "AV_MelToAudio", "AV_SaveAudioWAV"].includes(n.type)).map((n) => n.id);
  await page.evaluate(() => {
    const api = window.comfyAPI.api.api;
    window.__av = { events: [], previews: {} };
    for (const type of ["execution_start", "executed", "execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(type, (e) => window.__av.events.push({ type, detail: e.detail }));
    }
    api.addEventListener("b_preview_with_metadata", (e) => {
      const id = String(e.detail.displayNodeId);
      window.__av.previews[id] = (window.__av.previews[id] || 0) + 1;
    });
  });
  const started = Date.now();
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  // the sampler's live preview, on the node, while it runs
  const live = await page.waitForFunction((id) => (window.__av.previews[id] || 0) >= 2, String(sampler), { timeout: config.run_timeout_s * 1000 })
    .then(() => true).catch(() => false);
  if (!live) fail(`run: no live preview from the sampler (node ${sampler}) within ${config.run_timeout_s} s`);
  else {
    await page.waitForTimeout(700);
    const onNode = await page.evaluate((id) => {
      const node = window.app.graph.getNodeById(id);
      const img = node.imgs?.[0];
      return { shown: !!img && img.complete && img.naturalWidth > 0, fits: node.size[1] >= node.computeSize()[1] - 0.5, src: img?.src?.slice(0, 30) };
    }, sampler);
    if (!onNode.shown) fail(`run: the sampler's live preview is not drawn on node ${sampler} (${JSON.stringify(onNode)})`);
    await fitView();
    await shot(`${defaultName}_running`);
    await closeUp(`${defaultName}_running_sampler`, [sampler]);
    await fitView();
  }
  const end = await page.waitForFunction(() => window.__av.events.find((e) => e.type.startsWith("execution_") && e.type !== "execution_start"),
    null, { timeout: config.run_timeout_s * 1000 }).then((h) => h.jsonValue()).catch(() => null);
  report.run.seconds = Math.round((Date.now() - started) / 1000);
  if (!end) fail(`run: ${defaultName} did not finish within ${config.run_timeout_s} s`);
  else if (end.type !== "execution_success") fail(`run: ${defaultName} ended with ${end.type}: ${JSON.stringify(end.detail).slice(0, 500)}`);
  else {
    // every previewing node shows its spectrogram; the save node's player loads the WAV
    const ready = await page.waitForFunction((ids) => ids.every((id) => {
      const p = window.app.graph.getNodeById(id)?.avPreview;
      return p && p.image.complete && p.image.naturalWidth > 0 && (!p.audio || p.audio.readyState >= 1);
    }), previewed, { timeout: 30000 }).then(() => true).catch(() => false);
    const previews = await page.evaluate((ids) => Object.fromEntries(ids.map((id) => {
      const p = window.app.graph.getNodeById(id)?.avPreview;
      const visible = (el) => !!el && el.getBoundingClientRect().width > 0 && getComputedStyle(el).display !== "none";
      return [id, p ? { kind: p.kind, spectrogram: visible(p.image) && p.image.naturalWidth > 0, spectrogramSrc: p.image.src,
        player: !!p.audio, audioSrc: p.audio?.src || null, audioSeconds: p.audio?.duration ?? null, clipSeconds: p.spectrogramEntries[0]?.seconds ?? null,
        playEnabled: p.playButton ? !p.playButton.disabled && visible(p.playButton) : null } : null];
    })), previewed);
    report.run.previews = previews;
    if (!ready) fail(`run: previews not ready: ${JSON.stringify(previews)}`);
    for (const id of previewed) {
      const p = previews[id];
      if (!p) { fail(`run: node ${id} has no preview area`); continue; }
      if (!p.spectrogram) fail(`run: node ${id} shows no spectrogram`);
      if (p.kind === "audio") {
        if (!p.player || !p.audioSrc) fail(`run: node ${id} has no audio player with a source`);
        else if (!p.playEnabled) fail(`run: node ${id}'s play button is not usable`);
        else if (!(Math.abs(p.audioSeconds - p.clipSeconds) < 0.1)) fail(`run: node ${id} plays ${p.audioSeconds} s, the clip is ${p.clipSeconds} s`);
      }
    }
    const saved = previews[saver];
    if (saved && !/type=output/.test(saved.audioSrc || "")) fail(`run: the Save Audio player does not play the saved file (${saved.audioSrc})`);
    // the player plays: press play on the save node, the playhead moves
    const played = await page.evaluate(async (id) => {
      const p = window.app.graph.getNodeById(id).avPreview;
      p.playButton.click();
      const t0 = performance.now();
      while (performance.now() - t0 < 5000) {
        if (p.audio.currentTime > 0.05) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const result = { currentTime: p.audio.currentTime, playhead: getComputedStyle(p.playhead).display, error: p.audio.error?.message || null };
      return result;
    }, saver);
    report.run.playback = played;
    if (played.error || !(played.currentTime > 0.05)) fail(`run: pressing play did not play the saved audio (${JSON.stringify(played)})`);
    await page.waitForTimeout(300);
    await fitView();
    await shot(`${defaultName}_finished`);
    await graphShot(`${defaultName}_finished_graph`);
    await closeUp(`${defaultName}_finished_outputs`, previewed);
    await page.evaluate((id) => window.app.graph.getNodeById(id).avPreview.audio.pause(), saver);
  }
} catch (error) {
  fail(`the check stopped: ${error.stack || error}`);
  await shot("failure").catch(() => {});
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}

fs.writeFileSync(path.join(config.out_dir, "report.json"), JSON.stringify(report, null, 1));
console.log(JSON.stringify(report));
process.exit(report.failures.length ? 1 : 0);
