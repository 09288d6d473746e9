"""`tfllm chat keep_alive=N`: a resident worker keeps the model loaded and traced between
launches; later launches attach to it without TensorFlow and answer as an in-process chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import run_cli, train_here

ECHO_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"
# The chat command in a process that reports, at its end, whether it imported TensorFlow.
REPORTING = (
    "import sys\n"
    "from tfllm.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    print('\\nTENSORFLOW', 'tensorflow' in sys.modules)\n"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident")
    corpus = root / "corpus.txt"
    corpus.write_text("BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me.\n\n" * 40)
    train_here(["debug=fast", f"data.path={corpus}", "trainer.max_steps=10"], root / "run")
    return root / "run"


def chat(run, cache, keep_alive, messages, *extra):
    args = [
        "chat",
        f"ckpt={run}",
        f"template='{ECHO_TEMPLATE}'",  # quoted for Hydra
        "max_new_tokens=6",
        f"keep_alive={keep_alive}",
        *extra,
    ]
    proc = subprocess.run(
        [sys.executable, "-c", REPORTING, *args],
        capture_output=True,
        text=True,
        timeout=300,
        input="".join(m + "\n" for m in messages),
        env=dict(os.environ, TFLLM_CACHE=str(cache), PYTHONUNBUFFERED="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def registry(cache):
    entries = list((cache / "resident").glob("*.json"))
    assert len(entries) == 1, entries
    return json.loads(entries[0].read_text())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_later_launches_attach_to_the_warm_worker_and_answer_as_in_process(run, tmp_path):
    cache = tmp_path / "cache"
    messages = ["BERNARDO:", "/reset", "FRANCISCO:", "Who's there?"]
    local = chat(run, cache, 0, messages)
    assert "TENSORFLOW True" in local.stdout
    assert not (cache / "resident").exists()  # keep_alive=0: no worker

    first = chat(run, cache, 30, messages)
    worker = registry(cache)
    assert alive(worker["pid"])
    second = chat(run, cache, 30, messages)
    assert registry(cache)["pid"] == worker["pid"]  # the same worker answered both launches
    # The launches talked to the worker: neither imported TensorFlow.
    assert "TENSORFLOW False" in first.stdout and "TENSORFLOW False" in second.stdout
    replies = local.stdout.replace("TENSORFLOW True", "")
    assert "(conversation reset)" in replies and replies.count("assistant> ") == 3
    for launched in (first, second):  # same rules, same replies, same cut marks
        assert launched.stdout.replace("TENSORFLOW False", "") == replies
        assert launched.stderr.count("was cut at max_new_tokens=6") == local.stderr.count(
            "was cut at max_new_tokens=6"
        )

    entry = (cache / "resident").glob("*.json").__next__()
    stale = entry.read_text()
    os.kill(worker["pid"], 15)  # `kill PID` stops a worker cleanly: it unregisters
    deadline = time.time() + 30
    while alive(worker["pid"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(worker["pid"]) and not entry.exists()

    entry.write_text(stale)  # what a SIGKILLed worker leaves: the next launch starts another
    third = chat(run, cache, 1, messages[:1])
    replacement = registry(cache)["pid"]
    assert replacement != worker["pid"]
    assert third.stdout.split("\n")[0] == replies.split("\n")[0]
    deadline = time.time() + 30  # keep_alive=1: it exits once idle, and unregisters
    while alive(replacement) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(replacement)
    assert not list((cache / "resident").glob("*.json"))


def test_bad_settings_are_refused_before_a_worker_starts(run, tmp_path):
    cache = tmp_path / "cache"
    env = {"TFLLM_CACHE": str(cache)}
    bad = run_cli(["chat", f"ckpt={run}", "temperature=-1"], check=False, env=env, input_text="")
    assert bad.returncode != 0 and "temperature" in bad.stderr
    none = run_cli(["chat", f"ckpt={run}"], check=False, env=env, input_text="hi\n")
    assert none.returncode != 0 and "no chat template" in none.stderr
    negative = run_cli(
        ["chat", f"ckpt={run}", "keep_alive=-5"], check=False, env=env, input_text=""
    )
    assert negative.returncode != 0 and "keep_alive" in negative.stderr
    assert not (cache / "resident").exists()  # refused before any worker was started
