"""Where a workflow's memory goes: runs it on the host in this process (as `python -m
comfyui_audiovisual run` does) and records, for each node in execution order, the resident memory
when it starts, the highest resident memory while it runs (/proc polled every 2 ms) and when it ends,
and how much it raised the process's high-water mark (ru_maxrss, exact). Prints one JSON object.

    python benchmarks/node_memory.py WORKFLOW [--set NODE.INPUT=VALUE ...] --out DIR

A library too: `profile_workflow(...)` returns the same dict; `run_profile(...)` runs it in a fresh
process (so one run's memory never counts in another's) and returns it. Benchmarks print it with
`stage_table(...)`. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Poller:
    """Highest RSS since the last `take()`, from a thread polling /proc/self/statm."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s, self.peak, self._stop = interval_s, _rss(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval_s)

    def take(self) -> int:
        peak, self.peak = max(self.peak, _rss()), _rss()
        return peak

    def stop(self):
        self._stop.set()
        self._thread.join()


def profile_workflow(workflow: str, overrides: dict, out_dir: str, input_limits: bool = True) -> dict:
    """Runs the workflow once in this process; {"boot_mb", "rows": [{node, class, start_mb, peak_mb, end_mb,
    raised_max_mb}], "after_mb", "max_rss_mb", "files"}. `input_limits=False` skips the runner's refusal of
    input files over its limits (audio or video over 600 s) before the host decodes them, as the host's own
    server runs a workflow from the editor."""
    from comfyui_audiovisual.runner import host as host_boot
    from comfyui_audiovisual.runner import run as runner_run
    from comfyui_audiovisual.runner.run import run_workflow

    if not input_limits:
        runner_run.check_input_file = lambda *args, **kwargs: None

    host = host_boot.boot(cpu=True)
    execution = host.execution
    rows, poller = [], _Poller()
    original = execution.execute

    async def measured(server, dynprompt, caches, current_item, *args, **kwargs):
        class_type = dynprompt.get_node(current_item)["class_type"]
        poller.take()
        start, max_before = _rss(), _max_rss()
        try:
            return await original(server, dynprompt, caches, current_item, *args, **kwargs)
        finally:
            rows.append({"node": current_item, "class": class_type, "start_mb": start / MB, "peak_mb": poller.take() / MB,
                         "end_mb": _rss() / MB, "raised_max_mb": (_max_rss() - max_before) / MB})

    boot_mb = _rss() / MB
    execution.execute = measured
    try:
        files = run_workflow(workflow, overrides, out_dir=out_dir, cpu=True, progress=None)
    finally:
        execution.execute = original
        poller.stop()
    return {"boot_mb": boot_mb, "rows": rows, "after_mb": _rss() / MB, "max_rss_mb": _max_rss() / MB, "files": files}


def run_profile(workflow: str, overrides: dict, out_dir: str, input_limits: bool = True) -> dict:
    """profile_workflow in a fresh process (threads as this one's environment sets them)."""
    command = [sys.executable, os.path.abspath(__file__), workflow, "--out", out_dir] + ([] if input_limits else ["--no-input-limits"])
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, cwd=PACK_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_table(profiles: dict[str, dict]) -> str:
    """A markdown table: one row per node, one column pair (peak during the node, raise of the high-water
    mark) per profile, in the first profile's node order."""
    names = list(profiles)
    first = profiles[names[0]]
    head = "| node | " + " | ".join(f"{n}: peak MB | {n}: raised max MB" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    lines.append("| (host and pack booted) | " + " | ".join(f"{p['boot_mb']:.0f} | " for p in profiles.values()) + " |")
    for i, row in enumerate(first["rows"]):
        cells = []
        for p in profiles.values():
            match = next((r for r in p["rows"] if r["node"] == row["node"]), None)
            cells.append(f"{match['peak_mb']:.0f} | {match['raised_max_mb']:+.0f}" if match else "- | -")
        lines.append(f"| {row['node']} {row['class']} | " + " | ".join(cells) + " |")
    lines.append("| process peak (ru_maxrss) | " + " | ".join(f"{p['max_rss_mb']:.0f} | " for p in profiles.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow")
    parser.add_argument("--set", action="append", default=[], help="NODE.INPUT=VALUE (as the run command's --set)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-input-limits", action="store_true",
                        help="skip the runner's refusal of media over 600 s (the host's server has none)")
    args = parser.parse_args(argv)
    from comfyui_audiovisual.runner.workflow_format import parse_override

    overrides = dict(parse_override(text) for text in args.set)
    result = profile_workflow(args.workflow, overrides, args.out, input_limits=not args.no_input_limits)
    sys.stdout.flush()
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # the interpreter's teardown is not measured and takes seconds


if __name__ == "__main__":
    sys.exit(main())
