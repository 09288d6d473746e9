"""A training process killed with SIGKILL resumes to the same weights as an uninterrupted run."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import checkpoint_state, kill_at_checkpoint


def train_cmd(corpus, run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "tfllm.cli",
        "train",
        "debug=fast",
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        "model.dropout=0.1",
        "trainer.max_steps=100",
        "trainer.checkpoint_every=20",
        "trainer.eval_every=50",
        "trainer.log_every=20",
        "trainer.callbacks=[]",
        "data.batch_size=8",
        *extra,
    ]


# The default run kills and resumes a run on prepared data (tests/data/test_prepared.py): the
# trainer's resume is the same code; this one, on data=text, runs with -m slow.
@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    # Muon's momentum still warming up when the run is killed (it follows the restored step);
    # NorMuon's running mean square per neuron is optimizer state a resume must restore too.
    [
        (),
        ("optimizer=muon", "ffn=swiglu", "optimizer.momentum_warmup_steps=80"),
        ("optimizer=muon", "ffn=swiglu", "optimizer.neuron_norm=true"),
    ],
    ids=["adamw", "muon", "normuon"],
)
def test_sigkill_then_resume_equals_uninterrupted(tiny_corpus, tmp_path, extra):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(
        train_cmd(tiny_corpus, full, *extra), check=True, capture_output=True, timeout=400
    )

    kill_at_checkpoint(train_cmd(tiny_corpus, killed, *extra), killed, 40)
    latest = tf.train.latest_checkpoint(str(killed / "checkpoints"))
    assert latest is not None and not latest.endswith("ckpt-100")

    resumed = subprocess.run(
        train_cmd(tiny_corpus, killed, *extra), capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = checkpoint_state(full), checkpoint_state(killed)
    assert a.keys() == b.keys()
    assert len(a) > 50  # model weights, optimizer moments, step counter
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
