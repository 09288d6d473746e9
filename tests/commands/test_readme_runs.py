"""Every `tfllm` command of README.md, run in order in a fresh folder, shrunk to a few steps:
each must succeed. (docs/*.md commands are checked to parse in `test_docs_commands.py`, and
docs/python.md runs whole in `test_python_api.py`.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_docs_commands import COMMAND_LINES, PULLED

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
TINY = "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n" * 60
SHRINK_TRAIN = [
    "trainer.max_steps=3",
    "trainer.eval_every=3",
    "trainer.log_every=3",
    "trainer.checkpoint_every=3",
    "trainer.eval_batches=2",
    "trainer.callbacks=[progress]",
]
# What cannot run here, and why (everything else must).
NOT_HERE = {
    "source=model.gguf": "needs a GGUF file of one's own (conversion is tested on local files)",
    "source=hf_model_dir": "needs a Hugging Face model folder of one's own",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shrink(argv: list[str], ports: dict[str, int], chat_model: str = "") -> list[str]:
    """The command as this test runs it: few steps, small lengths, local paths and ports; a
    placeholder checkpoint is the default run, or the chat model where few-shot prompts need
    a longer context than the default run's 64 tokens."""
    fewshot = "eval=fewshot" in argv
    out = []
    for arg in argv:
        arg = arg.replace("../shared/", f"{SHARED}/")
        arg = {"data.sequence_length=4096": "data.sequence_length=512"}.get(arg, arg)
        arg = {"attention.window=128": "attention.window=32"}.get(arg, arg)
        arg = arg.replace("ckpt=DIR", f"ckpt={chat_model if fewshot else 'runs/default'}")
        out.append(arg)
    name = out[0]
    if name == "train" or (name == "launch" and "train" in out):
        out += SHRINK_TRAIN
    if name == "serve":
        out += [f"port={ports['grpc']}", f"rest_port={ports['rest']}"]
    if name == "client":
        out += [f"port={ports['grpc']}"]
    if name == "evaluate" and "eval=perplexity" in out:
        out += ["eval.max_chars=20000"]
    if name == "chat":
        out += ["max_new_tokens=4"]
    return out


def pull(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tfllm.cli", "pretrained", "pull", name],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    if not (SHARED / "data" / "tinyshakespeare.txt").exists():
        pytest.skip("../shared/data is not here")
    (tmp_path / "my_corpus").mkdir()
    (tmp_path / "my_corpus" / "a.txt").write_text(TINY, encoding="utf-8")
    rows = "sentence\tlabel\n" + "".join(
        f"{t}\t{label}\n" for t, label in [("a fine play", 1), ("a dull play", 0)] * 4
    )
    (tmp_path / "dev.tsv").write_text(rows, encoding="utf-8")
    (tmp_path / "train.tsv").write_text(rows, encoding="utf-8")
    ports = {"grpc": free_port(), "rest": free_port()}
    server = None
    ran, skipped = [], []
    try:
        for where, argv in COMMAND_LINES:
            if not where.startswith("README.md"):
                continue
            reason = next((why for key, why in NOT_HERE.items() if key in argv), None)
            if reason:
                skipped.append((where, reason))
                continue
            if any(PULLED in a for a in argv):
                path = pull("smollm2-135m-instruct" if argv[0] == "chat" else "minilm-l6-v2")
                argv = [a.replace(PULLED, path) for a in argv]
            chat_model = pull("smollm2-135m-instruct") if "eval=fewshot" in argv else ""
            command = [sys.executable, "-m", "tfllm.cli", *shrink(argv, ports, chat_model)]
            if argv[0] == "serve":
                server = subprocess.Popen(
                    command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                wait_for(ports["grpc"])
                ran.append(where)
                continue
            stdin = "Hi\n" if argv[0] == "chat" else None
            proc = subprocess.run(
                command, cwd=tmp_path, capture_output=True, text=True, input=stdin, timeout=900
            )
            assert proc.returncode == 0, (where, command, proc.stderr[-3000:])
            ran.append(where)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert len(ran) >= 25, ran
    assert [r for _, r in skipped] == list(NOT_HERE.values())


def wait_for(port: int, timeout: float = 300.0) -> None:
    """Until the served model answers its metadata on `port`."""
    from tfllm.serving.client import Client

    client = Client("127.0.0.1", port, "lm", timeout=5)
    start = time.time()
    while time.time() - start < timeout:
        try:
            client.signatures()
            return
        except Exception:  # noqa: BLE001 (not up yet)
            time.sleep(0.5)
    raise AssertionError(f"the server on {port} did not come up")


def test_shrinking_keeps_what_a_command_means():
    ports = {"grpc": 1, "rest": 2}
    shrunk = shrink(["train", "attention=local", "attention.window=128"], ports)
    assert shrunk[:3] == ["train", "attention=local", "attention.window=32"]
    assert "trainer.max_steps=3" in shrunk
    assert shrink(["client", "model=lm"], ports)[-1] == "port=1"
    assert os.path.isabs(shrink(["x", "data.path=../shared/d.txt"], ports)[1].split("=")[1])
