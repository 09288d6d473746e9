"""Quiet by default: TensorFlow's log lines stay off the terminal unless asked for.

TensorFlow writes from C++ straight to file descriptor 2 (absl's `I0000 ...` lines: CUDA
probing, oneDNN and CPU-feature notices), and `TF_CPP_MIN_LOG_LEVEL` does not reach the lines
written before absl's logging starts. So a `tfllm` command points descriptor 2 at a pipe whose
lines pass through `NOISE` on their way to the terminal, while Python's own `sys.stderr` (tfllm's
messages, warnings and tracebacks) writes to the terminal directly, never delayed. TensorFlow's
and absl's Python loggers are set to errors only, and Python warnings raised inside
TensorFlow and Keras are not shown. `tfllm --verbose ...` (or `TFLLM_VERBOSE=1`) shows it all.

Example:

>>> bool(NOISE.match("I0000 00:00:1796309468.812917   14413 cudart_stub.cc:31] Could not find"))
True
>>> bool(NOISE.match("tfllm: error: data.path: no such file"))
False
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading
import warnings

VERBOSE_ENV = "TFLLM_VERBOSE"

# Lines TensorFlow, XLA and absl write from C++; fatal (F) lines still pass.
NOISE = re.compile(
    r"(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] (?:tensorflow|external|xla)/"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)


def verbose_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """`(verbose, argv without --verbose)`: the flag may stand anywhere; the environment
    switch `TFLLM_VERBOSE=1` asks too."""
    flags = {"--verbose", "-v"}
    rest = [a for a in argv if a not in flags]
    env = os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")
    return env or len(rest) != len(argv), rest


def quiet_python_logs() -> None:
    """TensorFlow's and absl's Python loggers to errors only (absl logs an INFO line at every
    checkpoint); Python warnings from inside TensorFlow and Keras hidden."""
    for name in ("tensorflow", "absl", "h5py", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|keras_hub|absl|tf_keras)(\.|$)")


# Seconds an unfinished line may wait for the rest of it before it is shown as it is.
PARTIAL_WAIT = 0.05


class _Filter:
    """Descriptor 2 through a pipe and a thread that drops `NOISE` lines."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self.terminal = os.dup(2)  # where stderr really goes
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        # Python's own messages bypass the pipe: immediate, and a terminal stays a terminal.
        sys.stderr = open(  # noqa: SIM115 (lives as long as the process)
            self.terminal,
            "w",
            buffering=1,
            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            closefd=False,
        )
        self.thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _pump(self, read_end: int) -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                if pending and not select.select([pipe], [], [], PARTIAL_WAIT)[0]:
                    # A line that stays unfinished is a prompt (`input()` at a terminal writes
                    # its prompt to descriptor 2): shown now, not when a line break follows.
                    self._forward(pending)
                    pending = b""
                    continue
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._forward(line + b"\n")
            if pending:
                self._forward(pending)

    def _forward(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        noise = NOISE.search(text)
        if noise is None:
            os.write(self.terminal, line)
        elif noise.start() > 0:  # a TensorFlow line written right after a prompt: the prompt
            os.write(self.terminal, text[: noise.start()].encode())

    def close(self) -> None:
        """Descriptor 2 back to the terminal; what is still in the pipe is shown first."""
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self.terminal, 2)  # closes the pipe's last write end held here
            self.thread.join(timeout=2.0)


_installed: list[_Filter] = []


def install(verbose: bool) -> None:
    """Make this process quiet (once), or, with `verbose`, leave every line visible."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if verbose or _installed:
        return
    quiet_python_logs()
    try:
        _installed.append(_Filter())
    except OSError:  # no descriptor 2 to redirect (a daemon): nothing to keep quiet
        pass
