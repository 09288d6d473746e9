import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def pytest_configure(config):
    from tfllm import registry

    registry.ensure_loaded()


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small public-domain text (Hamlet's opening) written to a file."""
    text = (
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
        "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
        "FRANCISCO:\nYou come most carefully upon your hour.\n\n"
        "BERNARDO:\n'Tis now struck twelve; get thee to bed, Francisco.\n\n"
        "FRANCISCO:\nFor this relief much thanks: 'tis bitter cold,\nAnd I am sick at heart.\n\n"
    ) * 12
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(args, cwd=None, timeout=300, check=True, env=None, input_text=None):
    """Run the real `tfllm` console script in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "tfllm.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tfllm {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc
