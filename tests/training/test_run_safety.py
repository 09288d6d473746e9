"""A run never loses progress and never fails with a traceback: a damaged checkpoint state file,
a diverging update, a rerun of a finished run, a save killed midway, a full disk and damaged
or hostile run files each end in a resumed run or one `tfllm: error:` line, with nothing lost."""

import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, train_here
from train_configs import train_config

from tfllm.components.tokenizers.base import load_tokenizer
from tfllm.files import atomic_write
from tfllm.registry import ConfigError
from tfllm.runs import checkpoint_candidates, latest_checkpoint
from tfllm.training.trainer import Trainer, TrainingDivergedError


def checkpoint_tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


def test_a_damaged_state_file_resumes_from_the_checkpoint_files(tiny_corpus, tmp_path):
    Trainer(train_config(tiny_corpus), str(tmp_path)).fit()  # 20 steps, ckpt-10 and ckpt-20
    state = tmp_path / "checkpoints" / "checkpoint"
    state.write_bytes(b"model_checkpoint_path: {{{ garbage \x00\xff")
    assert checkpoint_candidates(str(tmp_path / "checkpoints"))[1] is False
    assert latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")

    trainer = Trainer(train_config(tiny_corpus, "trainer.max_steps=30"), str(tmp_path))
    trainer.fit()
    assert trainer.start_step == 20, "the run started over instead of resuming"
    assert trainer.step == 30
    # The state file is whole again, and the damaged one is kept beside it.
    restored = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    assert restored.model_checkpoint_path.endswith("ckpt-30")
    assert (tmp_path / "checkpoints" / "checkpoint.damaged").read_bytes().startswith(b"model_")


def test_checkpoints_are_found_from_a_relative_path(tiny_corpus, tmp_path, monkeypatch):
    Trainer(train_config(tiny_corpus, "trainer.max_steps=10"), str(tmp_path / "run")).fit()
    monkeypatch.chdir(tmp_path)
    candidates, state_ok = checkpoint_candidates(os.path.join("run", "checkpoints"))
    assert state_ok and candidates == [str(tmp_path / "run" / "checkpoints" / "ckpt-10")]
    assert tf.train.load_checkpoint(latest_checkpoint("run/checkpoints")) is not None


def test_non_finite_weights_are_never_saved_or_named_as_last_good(tiny_corpus, tmp_path):
    cfg = train_config(
        tiny_corpus,
        "schedule.peak_learning_rate=1e39",
        "schedule.warmup_steps=0",
        "trainer.steps_per_execution=1",
        "trainer.checkpoint_every=1",
        "trainer.log_every=1",
        "trainer.eval_every=100",
        "trainer.max_steps=10",
        "trainer.callbacks=[]",
    )
    with pytest.raises(TrainingDivergedError) as caught:
        Trainer(cfg, str(tmp_path)).fit()
    candidates, _ = checkpoint_candidates(str(tmp_path / "checkpoints"))
    for prefix in candidates:
        for name, value in checkpoint_tensors(prefix).items():
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), (
                    f"{os.path.basename(prefix)} holds non-finite {name}"
                )
    named = latest_checkpoint(str(tmp_path / "checkpoints"))
    if named is None:
        assert "no checkpoint was saved" in str(caught.value)
    else:
        assert f"last good checkpoint is {named}" in str(caught.value)


def test_rerunning_a_finished_run_keeps_its_metrics(tiny_corpus, tmp_path):
    first = Trainer(train_config(tiny_corpus), str(tmp_path)).fit()
    before = (tmp_path / "metrics.json").read_bytes()
    assert "val_loss" in json.loads(before)
    again = Trainer(train_config(tiny_corpus), str(tmp_path)).fit()
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert again["val_loss"] == pytest.approx(first["val_loss"])
    assert again["loss"] == pytest.approx(first["loss"])


def test_a_save_killed_midway_leaves_no_stale_folder_after_resume(tiny_corpus, tmp_path):
    Trainer(train_config(tiny_corpus, "trainer.max_steps=10"), str(tmp_path)).fit()
    stale = tmp_path / "checkpoints" / "ckpt-20_temp"
    stale.mkdir()
    (stale / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 64)
    trainer = Trainer(train_config(tiny_corpus), str(tmp_path))
    trainer.fit()
    assert trainer.start_step == 10
    assert not stale.exists()
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if p.endswith("_temp")]


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    atomic_write(str(path), '{"old": true}')

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(str(path), '{"new": true}')
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["tokenizer.json"], "a temporary file was left behind"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b'"a string"',
        b'{"module": "os", "class_name": "system", "config": {"command": "touch PWNED"}}',
        b'{"module": "builtins", "class_name": "eval", "config": "1"}',
        b"[" * 100000,
    ],
    ids=["empty", "truncated", "string", "os.system", "eval", "deep"],
)
def test_a_damaged_or_hostile_tokenizer_file_is_one_error_naming_it(tmp_path, payload):
    (tmp_path / "tokenizer.json").write_bytes(payload)
    with pytest.raises(ConfigError, match="tokenizer: .*tokenizer.json"):
        load_tokenizer(str(tmp_path))
    assert not (tmp_path / "PWNED").exists() and not os.path.exists("PWNED")


def cli_train(corpus, run_dir, *extra, **kwargs):
    args = [
        "train",
        "debug=fast",
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        "trainer.callbacks=[]",
        *extra,
    ]
    return run_cli(args, check=False, **kwargs)


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tfllm: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize(
    "override, match",
    [
        ("seed=abc", "seed: 'abc'"),
        ("seed=-1", "seed: -1"),
        ("data.path=EMPTY", "data.path.*no text"),
    ],
)
def test_bad_seeds_and_empty_data_name_the_key(tiny_corpus, tmp_path, override, match):
    # ConfigError is what every command prints as one `tfllm: error:` line.
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cfg = train_config(tiny_corpus, override.replace("EMPTY", str(empty)))
    with pytest.raises(ConfigError, match=match):
        Trainer(cfg, str(tmp_path / "run"))


def test_a_damaged_tokenizer_file_is_one_error_line(tiny_corpus, tmp_path):
    # A run whose tokenizer file was truncated (a full disk before writes were atomic): the
    # error names the file, and the checkpoints are still there.
    run = tmp_path / "c"
    train_here(["debug=fast", f"data.path={tiny_corpus}", "trainer.max_steps=10"], run)
    (run / "tokenizer" / "tokenizer.json").write_bytes(b"")
    proc = cli_train(tiny_corpus, run)
    assert_one_error_line(proc, "tokenizer.json")
    assert (run / "checkpoints" / "ckpt-10.index").exists()


def _limit_file_size():
    # Writes past 256 KiB fail with EFBIG (a full disk, as the checkpoint writer sees it).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))


@pytest.mark.slow  # two CLI runs (37 s); by default a save killed midway and a damaged state
# file resume
def test_a_full_disk_at_checkpoint_time_is_one_error_and_the_run_resumes(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    args = ["train", "debug=fast", f"data.path={tiny_corpus}", f"run_dir={run}"]
    proc = subprocess.run(
        [sys.executable, "-m", "tfllm.cli", *args, "trainer.callbacks=[]"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,
        stdin=subprocess.DEVNULL,
    )
    assert_one_error_line(proc, "could not write checkpoint ckpt-10", "run the same command again")
    # What was written before is whole, and nothing half-written is left in the folder.
    assert load_tokenizer(str(run / "tokenizer")).vocabulary_size > 10
    assert "model" in (run / "config.yaml").read_text()
    assert not [p for p in os.listdir(run / "checkpoints") if "_temp" in p]
    # With space again, the same command runs to the end.
    cli_train(tiny_corpus, run).check_returncode()
    assert json.loads((run / "metrics.json").read_text())["step"] == 20
