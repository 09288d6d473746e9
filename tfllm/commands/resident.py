"""A chat model kept loaded between `tfllm chat` launches (`keep_alive=`, as Ollama keeps one).

Loading a checkpoint and tracing its decode step take most of a chat's first reply (on two
cores and SmolLM2-135M: TensorFlow's import 5 s, loading 5 s, the trace 13 s). So `tfllm chat
ckpt=DIR` hands the model to a worker process: the first launch starts one, which loads the
checkpoint, traces the decode step once and listens on 127.0.0.1; every launch, the first
included, then talks to it over HTTP without importing TensorFlow, and a later launch finds it
already warm. The worker answers only requests that carry the token it wrote into its
registry file (readable by its owner alone), serves one reply at a time, and exits after
`keep_alive` seconds without a request (each launch sets it anew, as Ollama's does), or
when sent SIGTERM (`kill PID`, the pid being in the registry file).

One worker per checkpoint state: its key covers the checkpoint's folder, the sizes and times of
its config, tokenizer and checkpoint files (a retrained run gets a new worker) and
`jit_compile`. The registry lives in `<tfllm cache>/resident/<key>.json`, the worker's log
beside it in `<key>.log`. `keep_alive=0` chats in the launching process instead.

Example (the worker's side runs as `python -m tfllm.commands.resident`):

>>> worker_key("/nonexistent", False) == worker_key("/nonexistent", False)
True
>>> worker_key("/nonexistent", False) == worker_key("/nonexistent", True)
False
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tfllm.cache import cache_dir
from tfllm.commands.common import CommandError
from tfllm.version import __version__

START_TIMEOUT_S = 900.0  # loading and tracing a large checkpoint on two cores
ERROR_PREFIX = "error: "  # the worker's last log line when the checkpoint cannot be served
MAX_SESSIONS = 64  # the worker forgets the least recently used conversation beyond this


def worker_key(ckpt: str, jit_compile: bool) -> str:
    """The worker a checkpoint's current files and `jit_compile` map to."""
    base = os.path.abspath(ckpt)
    stamp = []
    for folder, _, names in sorted(os.walk(base)):
        for name in sorted(names):
            if name.endswith((".log", ".jsonl")) or "events.out" in name:
                continue  # logs and metrics change without changing the model
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            path = os.path.relpath(os.path.join(folder, name), base)
            stamp.append([path, info.st_size, info.st_mtime_ns])
    text = json.dumps([base, stamp, bool(jit_compile), __version__])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def registry_dir() -> Path:
    return cache_dir() / "resident"


# ----- the launching side (no TensorFlow) ----------------------------------------------------
class _Connection:
    """Requests to one worker: JSON in, JSON (or JSON lines) out, with its bearer token."""

    def __init__(self, info: dict[str, Any], timeout: float = 600.0):
        self.info = info
        self.timeout = timeout

    def _open(self, method: str, path: str, body: dict | None, timeout: float):
        conn = http.client.HTTPConnection("127.0.0.1", int(self.info["port"]), timeout=timeout)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.info['token']}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        return conn, conn.getresponse()

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        conn, response = self._open(method, path, body, timeout or self.timeout)
        try:
            payload = json.loads(response.read() or b"{}")
        finally:
            conn.close()
        if response.status != 200:
            raise _refused(response.status, payload)
        return payload

    def lines(self, path: str, body: dict) -> Iterator[dict[str, Any]]:
        conn, response = self._open("POST", path, body, self.timeout)
        try:
            if response.status != 200:
                raise _refused(response.status, json.loads(response.read() or b"{}"))
            for line in response:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def _refused(status: int, payload: dict[str, Any]) -> CommandError:
    """The worker's own message for a request it refused, else its HTTP status."""
    return CommandError(payload.get("error", f"the chat worker answered {status}"))


def _alive(info: dict[str, Any]) -> bool:
    try:
        answer = _Connection(info).call("GET", "/health", timeout=5.0)
    except (OSError, CommandError, ValueError):
        return False
    return answer.get("pid") == info.get("pid")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one launch starts a worker; the others wait for it
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_or_start(ckpt: str, jit_compile: bool, keep_alive: float) -> dict[str, Any]:
    """The registry entry (`pid`, `port`, `token`) of the warm worker for this checkpoint,
    starting one (and waiting until it is warm) when none answers."""
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = worker_key(ckpt, jit_compile)
    registry, log = folder / f"{key}.json", folder / f"{key}.log"
    with _locked(folder / f"{key}.lock"):
        info = _read(registry)
        if info is not None and _alive(info):
            return info
        registry.unlink(missing_ok=True)  # a worker that died without cleaning up
        command = [sys.executable, "-m", "tfllm.commands.resident", "--ckpt", ckpt]
        command += ["--keep-alive", str(keep_alive), "--registry", str(registry)]
        command += ["--jit-compile"] if jit_compile else []
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this launch and its terminal
                env=dict(
                    os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
                ),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = _read(registry)
            if info is not None and info.get("pid") == worker.pid:
                return info
            if worker.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-12:]
                if tail and tail[-1].startswith(ERROR_PREFIX):  # the user's mistake, said once
                    raise CommandError(tail[-1][len(ERROR_PREFIX) :])
                raise CommandError(
                    "the chat worker stopped before it was ready "
                    f"(exit {worker.returncode}; its log: {log}):\n" + "\n".join(tail)
                )
            time.sleep(0.05)
        worker.kill()
        raise CommandError(f"the chat worker was not ready in {START_TIMEOUT_S:.0f} s (log: {log})")


class ResidentSession:
    """A conversation held by a resident worker, with `ChatSession`'s interface as `tfllm chat`
    uses it: `reply(message, on_text)`, `reset()`, `finish_reason`, `sources`, `cited`."""

    def __init__(self, info: dict[str, Any], settings: dict[str, Any], keep_alive: float):
        self._connection = _Connection(info)
        made = self._connection.call(
            "POST", "/sessions", {"settings": settings, "keep_alive": keep_alive}
        )
        self.id = made["id"]
        self.config = SimpleNamespace(max_new_tokens=made["max_new_tokens"])
        self.finish_reason: str | None = None
        self.sources: list[SimpleNamespace] = []
        self.cited: list[int] = []

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        parts: list[str] = []
        for line in self._connection.lines(f"/sessions/{self.id}/reply", {"message": message}):
            if "error" in line:
                raise ValueError(line["error"])
            if "text" in line:
                parts.append(line["text"])
                if on_text is not None:
                    on_text(line["text"])
            if line.get("done"):
                self.finish_reason = line["finish_reason"]
                self.sources = [SimpleNamespace(**p) for p in line["sources"]]
                self.cited = list(line["cited"])
                return "".join(parts)
        raise ValueError(f"the chat worker stopped mid-reply (its log: {registry_dir()})")

    def reset(self) -> None:
        self._connection.call("POST", f"/sessions/{self.id}/reset", {})

    def close(self) -> None:
        with contextlib.suppress(OSError, CommandError):
            self._connection.call("DELETE", f"/sessions/{self.id}", timeout=5.0)


def open_resident_session(plain: dict[str, Any]) -> ResidentSession:
    """A `tfllm chat` conversation with the warm worker of `plain["ckpt"]` (started if need be)."""
    keep_alive = float(plain["keep_alive"])
    # Paths as this launch means them: the worker may have been started from another folder.
    plain = dict(plain, ckpt=os.path.abspath(str(plain["ckpt"])))
    if plain.get("kb"):
        plain["kb"] = os.path.abspath(str(plain["kb"]))
    info = find_or_start(plain["ckpt"], bool(plain["jit_compile"]), keep_alive)
    try:
        return ResidentSession(info, plain, keep_alive)
    except OSError as e:
        raise CommandError(f"the chat worker (pid {info['pid']}) did not answer: {e}") from None


# ----- the worker ----------------------------------------------------------------------------
class Worker:
    """The loaded model, its traced streamer and the conversations held for launches."""

    def __init__(self, ckpt: str, jit_compile: bool, keep_alive: float):
        from tfllm.generation.streaming import TokenStreamer
        from tfllm.runs import load_run

        self.ckpt = ckpt
        self.model, self.tokenizer, self.run_cfg = load_run(ckpt)
        self.streamer = TokenStreamer(self.model, jit_compile=jit_compile)
        self.keep_alive = keep_alive
        self.sessions: dict[str, Any] = {}
        self.lock = threading.Lock()  # one generation at a time: the model is shared
        self.counting = threading.Lock()  # guards `busy` and `last_used`
        self.last_used = time.monotonic()
        self.busy = 0

    def warm(self) -> None:
        """Trace the decode step now, not on the first reply."""
        from tfllm.generation import prompts
        from tfllm.generation.settings import GenerationConfig

        ids = prompts.prompt_ids(self.tokenizer, "Hello", add_bos=False)[:4] or [0]
        for _ in self.streamer.stream(ids, GenerationConfig(max_new_tokens=2), []):
            pass

    def open(self, settings: dict[str, Any]) -> tuple[str, Any]:
        from tfllm.commands.chat import open_session

        loaded = (self.model, self.tokenizer, self.run_cfg, self.streamer)
        session = open_session(dict(settings, ckpt=self.ckpt), loaded=loaded)
        key = secrets.token_hex(8)
        self.sessions[key] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        return key, session

    def idle_for(self) -> float:
        return 0.0 if self.busy else time.monotonic() - self.last_used


def _handler(worker: Worker, token: str):
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a streamed reply ends when the connection closes

        def log_message(self, *args: Any) -> None:  # the log holds errors, not every request
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _begin(self) -> dict[str, Any] | None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._send(401, {"error": "this chat worker needs its token"})
                return None
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {"error": "the request is not JSON"})
                return None

        def _session(self, key: str) -> Any:
            session = worker.sessions.get(key)
            if session is None:
                self._send(404, {"error": "the chat worker has forgotten this conversation"})
            return session

        def do_GET(self) -> None:
            if self._begin() is None:
                return
            if self.path == "/health":
                self._send(200, {"pid": os.getpid(), "ckpt": worker.ckpt})
            else:
                self._send(404, {"error": f"no such path: {self.path}"})

        def do_DELETE(self) -> None:
            if self._begin() is None:
                return
            worker.sessions.pop(self.path.rsplit("/", 1)[-1], None)
            self._send(200, {})

        def do_POST(self) -> None:
            body = self._begin()
            if body is None:
                return
            with worker.counting:
                worker.busy += 1
            try:
                self._post(body)
            finally:
                with worker.counting:
                    worker.busy -= 1
                    worker.last_used = time.monotonic()

        def _post(self, body: dict[str, Any]) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["sessions"]:
                try:
                    key, session = worker.open(body["settings"])
                except (CommandError, KeyError, TypeError, ValueError) as e:
                    self._send(400, {"error": str(e)})
                    return
                worker.keep_alive = float(body.get("keep_alive", worker.keep_alive))
                self._send(200, {"id": key, "max_new_tokens": session.config.max_new_tokens})
            elif len(parts) == 3 and parts[0] == "sessions" and parts[2] == "reset":
                session = self._session(parts[1])
                if session is not None:
                    session.reset()
                    self._send(200, {})
            elif len(parts) == 3 and parts[0] == "sessions" and parts[2] == "reply":
                session = self._session(parts[1])
                if session is not None:
                    self._reply(session, str(body.get("message", "")))
            else:
                self._send(404, {"error": f"no such path: {self.path}"})

        def _reply(self, session: Any, message: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()

            gone = []

            def line(payload: dict[str, Any]) -> None:
                if gone:
                    return
                try:
                    self.wfile.write(json.dumps(payload).encode() + b"\n")
                    self.wfile.flush()
                except OSError:  # the launch went away (Ctrl-C): the reply still completes,
                    gone.append(True)  # so the conversation stays whole for the next one

            with worker.lock:
                try:
                    session.reply(message, on_text=lambda text: line({"text": text}))
                except ValueError as e:  # reported to the user, who keeps chatting
                    line({"error": str(e)})
                    return
                except Exception as e:  # noqa: BLE001 (logged here, reported there)
                    print(f"reply failed: {e!r}", flush=True)
                    line({"error": f"the chat worker failed: {e}"})
                    return
            sources = [{"id": p.id, "text": p.text} for p in session.sources]
            done = {"done": True, "finish_reason": session.finish_reason, "cited": session.cited}
            line(dict(done, sources=sources))

    return Handler


def serve(ckpt: str, jit_compile: bool, keep_alive: float, registry: str) -> None:
    """Load, warm, listen, register; exit after `keep_alive` idle seconds."""
    from http.server import ThreadingHTTPServer

    from tfllm.files import atomic_write

    worker = Worker(ckpt, jit_compile, keep_alive)
    worker.warm()
    token = secrets.token_urlsafe(24)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(worker, token))
    server.daemon_threads = True
    entry = {"pid": os.getpid(), "port": server.server_address[1], "token": token, "ckpt": ckpt}
    old_mask = os.umask(0o077)  # the token is the key to the model: its owner's alone
    try:
        atomic_write(registry, json.dumps(entry))
    finally:
        os.umask(old_mask)
    worker.last_used = time.monotonic()

    def watch() -> None:
        while worker.idle_for() < worker.keep_alive:
            time.sleep(min(1.0, max(0.05, worker.keep_alive / 10)))
        server.shutdown()

    threading.Thread(target=watch, daemon=True).start()
    # `kill PID` stops it as idleness does: unregistered (serve_forever returns once the
    # shutdown, asked from another thread, is seen).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"chat worker {os.getpid()} serving {ckpt} on port {entry['port']}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if (_read(Path(registry)) or {}).get("pid") == os.getpid():
            Path(registry).unlink(missing_ok=True)
        print(f"chat worker {os.getpid()} exiting", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a tfllm chat worker (started by tfllm chat)")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--keep-alive", type=float, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args(argv)
    from tfllm.commands import quiet
    from tfllm.registry import ConfigError

    quiet.quiet_python_logs()
    try:
        serve(args.ckpt, args.jit_compile, args.keep_alive, args.registry)
    except (ConfigError, CommandError) as e:
        print(ERROR_PREFIX + str(e).replace("\n", " "), flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
