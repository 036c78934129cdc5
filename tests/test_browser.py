"""The pack in a real browser: headless Chromium, driven by playwright-core (tests/browser/check_editor.mjs),
against the host's real server. The editor extension loads without console errors, every template
loads (from the Templates dialog and through app.loadGraphData), a node's help comes from the pack's
docs, and the default template runs with the sampler's live preview, then shows its player and
spectrograms. Screenshots go to tests/_artifacts/browser/.

Needs `bash setup.sh --browser` (Chromium from Debian, Node.js, playwright-core pinned in
tests/browser/package.json). Without them the test is skipped, except under CI (CI or
AV_REQUIRE_BROWSER set), where it fails and says what is missing.
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS_DIR, PACK_DIR

BROWSER_DIR = os.path.join(PACK_DIR, "tests", "browser")
OUT_DIR = os.path.join(ARTIFACTS_DIR, "browser")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
RUN_TIMEOUT_S = 600  # the default template on two shared CPU cores; ~20 s on an idle one
HELP_NODE = {"id": "AV_SaveAudioWAV", "title": "Save Audio (WAV)", "heading": "download button saves the WAV"}


def _missing() -> list[str]:
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium ({CHROMIUM})")
    if shutil.which("node") is None:
        missing.append("Node.js (node)")
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")):
        missing.append("playwright-core (tests/browser/node_modules)")
    return missing


@pytest.fixture(scope="module")
def browser_tools():
    missing = _missing()
    if missing:
        message = f"the real-browser test needs {', '.join(missing)}: run `bash setup.sh --browser`"
        if os.environ.get("CI") or os.environ.get("AV_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


def test_editor_in_real_browser(browser_tools, server):
    with open(os.path.join(PACK_DIR, "web", "templates.json"), encoding="utf-8") as f:
        template_index = json.load(f)
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    os.makedirs(OUT_DIR)
    config = {
        "url": server["url"],
        "workflows_dir": os.path.join(PACK_DIR, "workflows"),
        "default_workflow": "image_to_audio",
        "out_dir": OUT_DIR,
        "chromium": CHROMIUM,
        "run_timeout_s": RUN_TIMEOUT_S,
        "help_node": HELP_NODE,
        "template_index": template_index,
        "sidebar_tab": "audiovisual-templates",
    }
    config_path = os.path.join(OUT_DIR, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    result = subprocess.run(["node", os.path.join(BROWSER_DIR, "check_editor.mjs"), config_path], cwd=BROWSER_DIR,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S * 2 + 300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"check_editor.mjs printed no report (exit {result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(lines[-1])
    failures = "\n".join(report["failures"])
    server_log = server["log"].read_text()[-2000:] if report["failures"] else ""
    assert result.returncode == 0 and not report["failures"], f"{failures}\n\nserver log tail:\n{server_log}\n\nscreenshots: {OUT_DIR}"
    # what the script must have seen, not only the absence of failures
    templates = sorted(f[:-5] for f in os.listdir(config["workflows_dir"]) if f.endswith(".json"))
    assert set(templates) <= set(report["templates"]), report["templates"]
    # the editor lists the pack's templates in the index's order, the default first, titled in the sidebar
    assert report["templateOrder"][0] == "image_to_audio", report["templateOrder"]
    assert [card["title"] for card in report["sidebar"]] == [entry["title"] for entry in template_index], report["sidebar"]
    previews = report["run"]["previews"]
    assert {p["kind"] for p in previews.values()} == {"audio", "mel"}, previews
    assert all(p["spectrogram"] for p in previews.values()), previews
    assert report["run"]["playback"]["currentTime"] > 0.05, report["run"]
    for name in ("editor_start", "templates_dialog", "templates_sidebar", "image_to_audio_running", "image_to_audio_finished_outputs"):
        path = os.path.join(OUT_DIR, f"{name}.png")
        assert os.path.getsize(path) > 10_000, f"{path} is missing or blank"
