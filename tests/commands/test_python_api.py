"""The Python API (`tfllm.load`, `tfllm.train`, `tfllm.evaluate`): docs/python.md runs as
written, and a loaded run, its export and the CLI answer alike."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python.md"


def doc_blocks(marker: str = "") -> list[str]:
    """The ```python blocks of docs/python.md whose fence says `python {marker}`."""
    fence = re.escape(f"python {marker}".strip())
    return re.findall(rf"```{fence}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def run_blocks(blocks: list[str], cwd: pathlib.Path, timeout: int) -> subprocess.CompletedProcess:
    script = cwd / "doc_blocks.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# Trains, exports and validates as a notebook would (about a minute): with -m slow, beside
# tests/commands/test_docs_run.py; the API's behaviour is tested below.
@pytest.mark.slow
def test_docs_python_runs_as_written(tiny_corpus):
    folder = tiny_corpus.parent
    (folder / "corpus.txt").write_text(tiny_corpus.read_text(encoding="utf-8"), encoding="utf-8")
    blocks = doc_blocks()
    assert len(blocks) >= 4
    proc = run_blocks(blocks, folder, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("runs/notebook ") and lines[1] == "causal_lm 32"
    assert lines[2] == "length 23"
    assert (folder / "exports" / "notebook" / "1" / "saved_model.pb").exists()


@pytest.mark.slow
def test_docs_python_pretrained_blocks_run(tmp_path):
    proc = run_blocks(doc_blocks("slow"), tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(3, 384)" in proc.stdout


def test_load_refuses_what_is_not_a_model(tmp_path):
    import tfllm
    from tfllm.registry import ConfigError

    with pytest.raises(ConfigError, match="neither a tfllm run or checkpoint"):
        tfllm.load(str(tmp_path))
    assert "load" in tfllm.__all__ and callable(tfllm.train)


def test_answers_keep_the_shape_they_were_asked_in():
    from tfllm.api.answers import as_list, shaped

    assert shaped([["a"], ["b"]], single=False, per_prompt=1) == ["a", "b"]
    assert shaped([["a", "b"]], single=True, per_prompt=2) == ["a", "b"]
    with pytest.raises(ValueError, match="prompts: pass a string"):
        as_list([], "prompts")
