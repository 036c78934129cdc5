"""Run an API-format prompt on the real host's executor and read node outputs (for tests that need a
node's raw output object, which run_graph's saved files do not give)."""

import asyncio
import uuid


def execute_prompt(host, prompt: dict, read: list[str]) -> tuple[dict, dict]:
    """({node id: its first output} for the ids in `read`, the host's history outputs (ui) by node id)."""
    from comfyui_audiovisual.runner.host import cached_output, new_executor
    from comfyui_audiovisual.runner.run import _QuietServer

    ok, error, outputs, node_errors = asyncio.run(host.execution.validate_prompt(uuid.uuid4().hex, prompt, None))
    assert ok, (error, node_errors)
    executor = new_executor(host, _QuietServer())
    executor.execute(prompt, uuid.uuid4().hex, {}, outputs)
    assert executor.success, executor.status_messages[-1]
    return {node_id: cached_output(executor, node_id).outputs[0][0] for node_id in read}, executor.history_result["outputs"]
