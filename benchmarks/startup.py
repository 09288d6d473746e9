"""Start-up: how long a newcomer waits for each command's first answer.

    pip install -e .
    python benchmarks/startup.py [--repeats 3] [--chat-ckpt DIR]

Measured as a user meets them, each in a fresh process on this machine:

- `tfllm --help` and `tfllm list` (the second from the catalog cache, which the first run fills);
- `tfllm client` over gRPC and over REST, against `tfllm serve` of a small export (the embedded
  default's shape, trained 30 steps here);
- `tfllm chat` to its first token: in its own process (`keep_alive=0`), then the first launch
  (which starts the resident worker that keeps the model loaded) and later launches (which
  attach to it), with SmolLM2-135M-Instruct
  (`tfllm pretrained pull smollm2-135m-instruct`; `--chat-ckpt` to pick another checkpoint),
  and the same model exported and served, chatted with through `tfllm chat server=` given
  only the server's address (it runs without TensorFlow, and reads the chat template from the
  export's `describe` signature);
- a freshly served model's first request against the median of the next ten.

Medians of `--repeats` runs (run alone: other work on the machine skews them). Targets (issue
22): `--help`/`list` <= 1 s, clients <= 3 s, first chat token <= 5 s on a second launch, first
served request <= 2x a steady one. Prints a Markdown table and writes it (and JSON) to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]
from results_file import save_results  # noqa: E402

TFLLM = [sys.executable, "-m", "tfllm.cli"]
CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 40


def timed(args: list[str], cwd: str, stdin: str | None = None) -> float:
    """Seconds a `tfllm` command takes to finish (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(TFLLM + args, cwd=cwd, capture_output=True, text=True, input=stdin)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"tfllm {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def first_output(args: list[str], cwd: str, stdin: str, after: bytes = b"") -> float:
    """Seconds until a `tfllm` command writes its first byte of output after `after` (chat's
    first token, after its `assistant> ` prompt)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        TFLLM + args,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    seen = b""
    while len(seen) <= len(after):
        byte = proc.stdout.read(1)
        if not byte:
            break
        seen += byte
    first = seen[len(after) :]
    elapsed = time.perf_counter() - start
    proc.kill()
    proc.wait()
    if not first:
        raise RuntimeError(f"tfllm {' '.join(args)} wrote nothing")
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(model_dir: str, cwd: str, name: str = "lm"):
    """`tfllm serve` of `model_dir` as `name`, on two free ports: `(process, grpc, rest)`."""
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        TFLLM
        + ["serve", f"model_base_path={model_dir}", f"model_name={name}", f"port={grpc_port}"]
        + [f"rest_port={rest_port}"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, grpc_port, rest_port


def wait_available(client, timeout: float = 300.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            client.signatures()
            return time.perf_counter() - start
        except Exception:  # noqa: BLE001 (not up yet)
            time.sleep(0.1)
    raise RuntimeError("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chat-ckpt", default=None)
    args = parser.parse_args()
    from tfllm.serving.client import Client

    rows: list[tuple[str, float, str]] = []
    median = lambda xs: statistics.median(xs)  # noqa: E731
    with tempfile.TemporaryDirectory() as root:
        env_cache = os.path.join(root, "cache")
        os.environ["TFLLM_CACHE"] = env_cache  # a fresh catalog: the first list fills it
        rows.append(
            (
                "tfllm --help",
                median([timed(["--help"], root) for _ in range(args.repeats)]),
                "<= 1 s",
            )
        )
        first_list = timed(["list"], root)
        rows.append(("tfllm list (first, fills the catalog)", first_list, "-"))
        rows.append(
            ("tfllm list", median([timed(["list"], root) for _ in range(args.repeats)]), "<= 1 s")
        )

        with open(os.path.join(root, "corpus.txt"), "w", encoding="utf-8") as f:
            f.write(CORPUS)
        timed(["train", "data.path=corpus.txt", "run_dir=run", "trainer.max_steps=30"], root)
        timed(["export", "ckpt=run", "export.base_path=exports", "export.name=lm"], root)
        proc, grpc_port, rest_port = served(os.path.join(root, "exports", "lm"), root)
        try:
            client = Client("127.0.0.1", grpc_port, "lm", timeout=60)
            wait_available(client)
            first = time.perf_counter()
            client.generate(["ROMEO:"])
            first = time.perf_counter() - first
            steady = []
            for _ in range(10):
                t = time.perf_counter()
                client.generate(["ROMEO:"])
                steady.append(time.perf_counter() - t)
            rows.append(
                ("served model: first request", first, f"<= 2x steady ({2 * median(steady):.3f} s)")
            )
            rows.append(("served model: steady request (median of 10)", median(steady), "-"))
            for transport, port in (("grpc", grpc_port), ("rest", rest_port)):
                call = [
                    "client",
                    "model=lm",
                    f"port={port}",
                    f"transport={transport}",
                    "prompt=ROMEO:",
                ]
                rows.append(
                    (
                        f"tfllm client ({transport})",
                        median([timed(call, root) for _ in range(args.repeats)]),
                        "<= 3 s",
                    )
                )
        finally:
            proc.terminate()
            proc.wait()

        ckpt = args.chat_ckpt
        if ckpt is None:
            pulled = subprocess.run(
                TFLLM + ["pretrained", "pull", "smollm2-135m-instruct"],
                capture_output=True,
                text=True,
            )
            ckpt = pulled.stdout.strip() if pulled.returncode == 0 else None
        if ckpt:
            chat = ["chat", f"ckpt={ckpt}", "max_new_tokens=4"]
            alone = first_output([*chat, "keep_alive=0"], root, "Hi\n", after=b"assistant> ")
            rows.append(("tfllm chat keep_alive=0 (in process): first token", alone, "-"))
            try:
                launches = [
                    first_output(chat, root, "Hi\n", after=b"assistant> ")
                    for _ in range(1 + args.repeats)
                ]
            finally:  # the resident worker the first launch started: stop it now
                for entry in glob.glob(os.path.join(env_cache, "resident", "*.json")):
                    with open(entry) as f:
                        os.kill(json.load(f)["pid"], signal.SIGTERM)
            rows.append(
                ("tfllm chat: first token, first launch (starts the worker)", launches[0], "-")
            )
            rows.append(("tfllm chat: first token, later launches", median(launches[1:]), "<= 5 s"))
            # The same model served: `tfllm chat server=` runs without TensorFlow.
            timed(["export", f"ckpt={ckpt}", "export.base_path=exports", "export.name=chat"], root)
            proc, grpc_port, _ = served(os.path.join(root, "exports", "chat"), root, "chat")
            try:
                wait_available(Client("127.0.0.1", grpc_port, "chat", timeout=60))
                remote = [  # the server's address alone: the export describes its template
                    "chat",
                    f"server=127.0.0.1:{grpc_port}",
                    "model_name=chat",
                    "max_new_tokens=4",
                ]
                launches = [
                    first_output(remote, root, "Hi\n", after=b"assistant> ")
                    for _ in range(args.repeats)
                ]
                rows.append(
                    ("tfllm chat server= (served export): first token", median(launches), "<= 5 s")
                )
            finally:
                proc.terminate()
                proc.wait()

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        f"Start-up on {machine}; medians of {args.repeats} runs unless noted.",
        "",
        "| what | seconds | target |",
        "|---|---|---|",
        *[f"| {name} | {value:.3f} | {target} |" for name, value, target in rows],
    ]
    save_results("startup", "\n".join(lines), {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
