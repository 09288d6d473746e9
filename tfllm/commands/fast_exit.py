"""A command that succeeded ends its process without the interpreter's teardown.

Once TensorFlow is imported, the interpreter's own teardown (freeing tens of thousands of
module objects, then TensorFlow's C++ statics) takes 1.6 to 2 s of CPU on a 2-core machine, after
the command's work is done and its files are written. So a `tfllm` command that returned
normally ends the way the interpreter would end it, up to that teardown: threads that are not
daemons are joined, the `atexit` handlers run (logging's handlers are flushed and closed, the
filter of TensorFlow's log lines hands over what it still holds) and the standard streams are
flushed. Then the process leaves with `os._exit`.

A command that fails takes the ordinary way out: an error can leave a file or a TensorBoard
writer open, and its destructor writes what is buffered. So does a worker of a multi-worker
cluster (`TF_CONFIG` set), whose TensorFlow takes leave of the other workers in that teardown.

Example:

>>> import subprocess, sys
>>> code = "from tfllm.commands.fast_exit import finish; print('done', end=''); finish(3)"
>>> proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
>>> (proc.stdout, proc.returncode)
('done', 3)
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def applies() -> bool:
    """Whether this process may skip the teardown: not a worker of a multi-worker cluster."""
    return "TF_CONFIG" not in os.environ


def finish(code: int = 0) -> NoReturn:
    """End the process with exit status `code` after what a normal exit does before its
    teardown: join the non-daemon threads, run the `atexit` handlers, flush stdout and stderr.
    Call it from the main thread."""
    # CPython's own exit path, in its order: `threading._shutdown` runs the threading exit
    # hooks (an executor's idle workers are told to stop) and joins the non-daemon threads.
    threading._shutdown()  # noqa: SLF001
    atexit._run_exitfuncs()  # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(code)
