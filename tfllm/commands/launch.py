"""`tfllm launch workers=N [max_restarts=K] [host=H] -- train ...`: run a tfllm command as N
MultiWorkerMirroredStrategy workers on this machine.

Each worker is a `tfllm` process with its own `TF_CONFIG` (a cluster of 127.0.0.1 ports, its own
task index). The launcher prefixes and forwards their output, and supervises them as a job
scheduler would: when a worker fails (crashes, is killed, or stops after a SIGTERM), the others are
stopped and all are started again — up to `max_restarts` times — and resume from the chief's
last checkpoint. SIGTERM or Ctrl-C to the launcher is forwarded to the workers (which save a
checkpoint and exit), and nothing is restarted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tfllm.registry import ConfigError

STOP_GRACE_SECONDS = 60.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago (bound to port 0, then released)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def parse_port_range(text: str) -> tuple[int, int]:
    """`ports=29500-29510` (or one port, `29500`) as `(first, last)`.

    >>> parse_port_range("29500-29510"), parse_port_range("29500")
    ((29500, 29510), (29500, 29500))
    """
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ConfigError(f"ports: expected FIRST-LAST or one port, got '{text}'") from None
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(f"ports: {text} is not a range of ports in [1, 65535]")
    return lo, hi


def ports_in_range(count: int, first: int, last: int, host: str = "127.0.0.1") -> list[int]:
    """The first `count` ports in `[first, last]` that are free now (a firewall's allowed
    range, say)."""
    found = []
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise ConfigError(f"ports: fewer than {count} free ports in {first}-{last} on {host}")


def tf_config(hosts: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` of worker `index` in a cluster of `hosts` (`host:port` each)."""
    return json.dumps(
        {"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}}
    )


@dataclass
class LaunchResult:
    """How a launch ended.

    Attributes:
        returncode: 0 when every worker finished; otherwise the failing worker's status.
        restarts: how many times the workers were restarted.
        attempts: the exit status of every worker, per attempt.
    """

    returncode: int
    restarts: int
    attempts: list[list[int]] = field(default_factory=list)


class Launcher:
    """Starts and supervises `workers` local worker processes running `tfllm <command...>`.

    Args:
        command: the tfllm command line after `--`, e.g. `["train", "run_dir=runs/x"]`.
        workers: number of worker processes.
        max_restarts: how many times a failed group is restarted.
        host: the address the workers listen on.
        env: extra environment for the workers.
        python: the interpreter (default: this one).
        ports: `(first, last)`: the workers' ports come from this range (default: any free).
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        max_restarts: int = 0,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        python: str | None = None,
        ports: tuple[int, int] | None = None,
    ):
        if workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers}")
        if max_restarts < 0:
            raise ConfigError(f"max_restarts must be >= 0, got {max_restarts}")
        if not command:
            raise ConfigError("nothing to launch: put the tfllm command after `--`")
        self.command = list(command)
        self.workers = workers
        self.max_restarts = max_restarts
        self.host = host
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.ports = ports
        self.processes: list[subprocess.Popen] = []
        self._stopping = False
        self._lock = threading.Lock()

    def _start(self) -> None:
        if self.ports is None:
            ports = free_ports(self.workers, self.host)
        else:
            ports = ports_in_range(self.workers, *self.ports, host=self.host)
        hosts = [f"{self.host}:{port}" for port in ports]
        self.processes = []
        for index in range(self.workers):
            env = dict(os.environ, **self.env)
            env["TF_CONFIG"] = tf_config(hosts, index)
            env.setdefault("PYTHONUNBUFFERED", "1")
            proc = subprocess.Popen(
                [self.python, "-m", "tfllm.cli", *self.command],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
            )
            threading.Thread(target=self._forward, args=(proc, index), daemon=True).start()
            self.processes.append(proc)

    def _forward(self, proc: subprocess.Popen, index: int) -> None:
        for line in proc.stdout:
            with self._lock:
                sys.stdout.write(f"[worker {index}] {line}")
                sys.stdout.flush()

    def _stop_all(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True
        self.log(f"got signal {signum}: stopping the workers (they save a checkpoint)")
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def log(self, message: str) -> None:
        with self._lock:
            print(f"[launch] {message}", file=sys.stderr, flush=True)

    def run(self) -> LaunchResult:
        """Run to completion (or until restarts run out); return how it ended."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        result = LaunchResult(returncode=0, restarts=0)
        try:
            while True:
                self._start()
                self.log(
                    f"started {self.workers} workers (attempt {result.restarts + 1}): "
                    f"pids {[p.pid for p in self.processes]}"
                )
                failed = self._supervise()
                result.attempts.append([p.returncode for p in self.processes])
                if failed is None:
                    result.returncode = 0
                    return result
                index, code = failed
                result.returncode = code if code > 0 else 128 - code
                if self._stopping:
                    self.log("stopped on request; not restarting")
                    return result
                if result.restarts >= self.max_restarts:
                    self.log(
                        f"worker {index} failed with status {code}; no restarts left "
                        f"(max_restarts={self.max_restarts})"
                    )
                    return result
                result.restarts += 1
                self.log(
                    f"worker {index} failed with status {code}: restarting all workers from the "
                    f"last checkpoint ({result.restarts}/{self.max_restarts})"
                )
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _supervise(self) -> tuple[int, int] | None:
        """Wait until all workers succeed (None) or one fails: then stop the rest and return
        `(index, status)` of the first failure."""
        while True:
            codes = [p.poll() for p in self.processes]
            for index, code in enumerate(codes):
                if code not in (None, 0):
                    # The survivors would block forever in their next collective: stop them.
                    self._stop_all(signal.SIGTERM if self._stopping else signal.SIGKILL)
                    return index, code
            if all(code == 0 for code in codes):
                return None
            time.sleep(0.2)


def parse_launch_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split `workers=2 max_restarts=1 -- train ...` into launcher options and the command."""
    argv = list(argv)
    if "--" not in argv:
        raise ConfigError(
            "usage: tfllm launch workers=N [max_restarts=K] [host=127.0.0.1] "
            "[ports=FIRST-LAST] -- train ..."
        )
    split = argv.index("--")
    options: dict[str, str] = {}
    for item in argv[:split]:
        key, sep, value = item.partition("=")
        if not sep or key not in ("workers", "max_restarts", "host", "ports"):
            raise ConfigError(
                f"tfllm launch: unknown option '{item}'; options are workers=N, max_restarts=K, "
                "host=ADDRESS, ports=FIRST-LAST, then -- and the tfllm command"
            )
        options[key] = value
    return options, argv[split + 1 :]


def prepare_command(command: Sequence[str]) -> list[str]:
    """Make a `train` command multi-worker: the strategy, and one `run_dir` for all workers (each
    worker's Hydra would otherwise name its own timestamped directory)."""
    command = list(command)
    if command and command[0] == "train":
        keys = {c.partition("=")[0].lstrip("+~") for c in command[1:]}
        if "trainer.strategy" not in keys:
            command.append("trainer.strategy=multi_worker_mirrored")
        if "run_dir" not in keys:
            command.append(f"run_dir=runs/launch-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    return command


def main(argv: Sequence[str]) -> None:
    options, command = parse_launch_args(argv)
    try:
        workers = int(options.get("workers", "2"))
        restarts = int(options.get("max_restarts", "0"))
    except ValueError as e:
        raise ConfigError(f"tfllm launch: workers and max_restarts are integers ({e})") from None
    launcher = Launcher(
        prepare_command(command),
        workers=workers,
        max_restarts=restarts,
        host=options.get("host", "127.0.0.1"),
        ports=parse_port_range(options["ports"]) if "ports" in options else None,
    )
    sys.exit(launcher.run().returncode)
