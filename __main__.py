"""`python -m comfyui_audiovisual {run,serve,train,evaluate} ...`"""

import atexit
import os
import sys

from .runner.cli import main


def _exit_without_teardown(code: int) -> None:
    """Ends a finished `run` at once: the atexit handlers run (logging, the host's temp folder) and the
    output is flushed, but the interpreter's teardown of torch and the host's modules (about 1.8 s on
    a 2-core CPU, a tenth of the cold main job) is skipped. Every file was written and closed before."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    if sys.argv[1:2] == ["run"]:
        _exit_without_teardown(int(code or 0))
    sys.exit(code)
