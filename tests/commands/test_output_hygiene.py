"""What a newcomer sees: no TensorFlow log lines unless asked, a did-you-mean for a mistyped
key, and no folders a command was not asked to write."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import foreign_lines, run_cli, train_here


def test_commands_print_no_tensorflow_lines_and_only_the_folders_asked_for(tiny_corpus, tmp_path):
    """`generate` and `list` here; `train` and `export` in tests/serving/test_serving.py, whose
    fixture runs them as a user does."""
    train_here(["debug=fast", f"data.path={tiny_corpus}", "trainer.max_steps=3"], tmp_path / "run")
    before = sorted(p.name for p in tmp_path.iterdir())
    generate = run_cli(
        ["generate", "ckpt=run", "prompt=BERNARDO:", "max_new_tokens=4"], cwd=tmp_path
    )
    listing = run_cli(["list"], cwd=tmp_path)
    for name, proc in [("generate", generate), ("list", listing)]:
        assert foreign_lines(proc.stderr) == [], (name, proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_stderr_filter_drops_tensorflow_lines_only(tmp_path):
    """C++ lines on descriptor 2 pass the filter unless they are TensorFlow's; Python's own
    stderr bypasses it; verbose keeps everything."""
    script = (
        "import os, sys\n"
        "from tfllm.commands import quiet\n"
        "quiet.install(verbose=sys.argv[1] == '1')\n"
        "os.write(2, b'I0000 00:00:1796309468.812917   14413 cudart_stub.cc:31] noise\\n')\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called\\n')\n"
        "os.write(2, b'kept from C\\n')\n"
        "print('from python', file=sys.stderr)\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", script, "0"], capture_output=True, text=True, cwd=tmp_path
    )
    assert quiet.returncode == 0
    assert sorted(quiet.stderr.splitlines()) == ["from python", "kept from C"]
    loud = subprocess.run(
        [sys.executable, "-c", script, "1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "noise" in loud.stderr and "absl::InitializeLog" in loud.stderr


def test_an_unfinished_line_on_descriptor_2_is_shown_while_the_process_waits(tmp_path):
    """`input()` at a terminal writes its prompt to descriptor 2 with no line break and waits:
    the filter shows the prompt then, not once a line break comes."""
    import select

    script = (
        "import os, sys\n"
        "from tfllm.commands import quiet\n"
        "quiet.install(verbose=False)\n"
        "os.write(2, b'you> ')\n"
        "sys.stdin.readline()\n"  # waits for an answer to the prompt
        # TensorFlow's line right after a prompt (imported on another thread meanwhile)
        "os.write(2, b'you> I0000 00:00:1796309468.812917   14413 cpu_feature_guard.cc:2] x\\n')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "the prompt did not arrive while the process waited for its answer"
        assert os.read(proc.stderr.fileno(), 100) == b"you> "
        proc.stdin.write(b"answer\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == b"you> "  # the prompt, without the line after it
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "args, hint",
    [
        (["train", "trainer.max_step=10"], "Did you mean 'trainer.max_steps'"),
        (["train", "traner.max_steps=10"], "traner: no such key. Did you mean 'trainer'?"),
        (["client", "model=lm", "promt=hi"], "Did you mean 'prompt'"),
        (["export", "ckpt=x", "export.nam=lm"], "Did you mean 'export.name'"),
    ],
)
def test_a_mistyped_key_gets_a_did_you_mean(args, hint, tmp_path):
    proc = run_cli(args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("tfllm: error: ") and hint in proc.stderr, proc.stderr
    assert "not in struct" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_refused_run_leaves_no_folder(tmp_path):
    proc = run_cli(["train", "data.path=no/such/corpus"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "data.path" in proc.stderr
    assert list(tmp_path.iterdir()) == []
