"""Multi-worker training on localhost, preemption, checkpoint fallback, divergence, and MFU.

The multi-worker test is real: `tfllm launch` starts two worker processes with their own
`TF_CONFIG` on 127.0.0.1 ports, and MultiWorkerMirroredStrategy all-reduces over RING collectives.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import AtStep, SigtermAt
from hydra import compose, initialize_config_dir

from tfllm.commands.launch import (
    parse_launch_args,
    parse_port_range,
    ports_in_range,
    prepare_command,
    tf_config,
)
from tfllm.config import config_dir, to_plain
from tfllm.registry import ConfigError
from tfllm.training.trainer import Trainer, TrainingDivergedError

CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 30
# The same run for one and two workers: 12 steps, a loss logged every 2, checkpoints every 4.
RUN = [
    "debug=fast",
    "trainer.max_steps=12",
    "trainer.steps_per_execution=2",
    "trainer.log_every=2",
    "trainer.eval_every=12",
    "trainer.checkpoint_every=4",
    "trainer.callbacks=[tensorboard]",
    "trainer.jit_compile=false",  # compiling would cost more than these 12 steps
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def train_config(corpus, *overrides):
    merged = {o.split("=")[0]: o for o in [*RUN, f"data.path={corpus}", "run_dir=x", *overrides]}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(merged.values()))
    plain = to_plain(cfg)
    plain.pop("run_dir")
    return plain


def losses(run_dir):
    """`{step: train/loss}` from the run's TensorBoard events."""
    out = {}
    for event_file in sorted((run_dir / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def worker_pid(launcher_pid, index):
    """The pid of the launcher's child whose TF_CONFIG names task `index` (Linux /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        config = [e for e in environ if e.startswith(b"TF_CONFIG=")]
        if parent == launcher_pid and config:
            if json.loads(config[0][len("TF_CONFIG=") :])["task"]["index"] == index:
                return int(entry)
    raise AssertionError(f"no worker {index} under launcher {launcher_pid}")


def launch(corpus, run_dir, *extra, kill_worker_at_step=None):
    """`tfllm launch workers=2` as a user runs it; optionally SIGKILL worker 1 once the chief
    has written a checkpoint at `kill_worker_at_step`."""
    args = [sys.executable, "-m", "tfllm.cli", "launch", "workers=2", *extra, "--", "train"]
    args += [*RUN, f"data.path={corpus}", f"run_dir={run_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    killed = None
    if kill_worker_at_step is not None:
        index = run_dir / "checkpoints" / f"ckpt-{kill_worker_at_step}.index"
        deadline = time.monotonic() + 240
        while not index.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert index.exists(), "the chief never wrote the checkpoint to kill after"
        killed = worker_pid(proc.pid, 1)
        os.kill(killed, signal.SIGKILL)
    out, err = proc.communicate(timeout=400)
    return proc.returncode, out, err, killed


def test_two_workers_equal_one(corpus, tmp_path):
    # One worker, in this process, with the same global batch.
    single_dir = tmp_path / "single"
    Trainer(train_config(corpus), str(single_dir)).fit()
    single = json.loads((single_dir / "metrics.json").read_text())

    # Two workers, uninterrupted.
    multi_dir = tmp_path / "multi"
    code, out, err, _ = launch(corpus, multi_dir)
    assert code == 0, err[-3000:]
    multi = json.loads((multi_dir / "metrics.json").read_text())
    assert multi["num_workers"] == 2 and multi["step"] == 12
    digests = re.findall(r"\[worker 1\].*weights sha256 ([0-9a-f]{64})", out)
    assert digests == [multi["weights_sha256"]], "worker 1 holds exactly the chief's weights"
    one, two = losses(single_dir), losses(multi_dir)
    assert sorted(one) == sorted(two) == [2, 4, 6, 8, 10, 12]
    np.testing.assert_allclose(
        [two[s] for s in sorted(two)], [one[s] for s in sorted(one)], atol=1e-5
    )
    assert abs(multi["val_loss"] - single["val_loss"]) < 1e-5
    assert not (multi_dir / ".workers").exists(), "worker scratch checkpoints are cleaned up"


@pytest.mark.slow
def test_a_killed_worker_restarts_the_group_and_ends_with_uninterrupted_weights(corpus, tmp_path):
    multi_dir = tmp_path / "multi"
    code, _, err, _ = launch(corpus, multi_dir)
    assert code == 0, err[-3000:]
    multi = json.loads((multi_dir / "metrics.json").read_text())
    # Worker 1 SIGKILLed after the step-4 checkpoint: the launcher restarts both, they resume
    # from the chief's checkpoint, and finish with the uninterrupted run's weights.
    killed_dir = tmp_path / "killed"
    code, out, err, killed = launch(corpus, killed_dir, "max_restarts=1", kill_worker_at_step=4)
    assert code == 0, err[-3000:]
    assert "worker 1 failed with status -9: restarting all workers" in err
    assert re.search(r"resumed from .*ckpt-(4|8) at step (4|8)", out + err)
    final = json.loads((killed_dir / "metrics.json").read_text())
    assert final["step"] == 12
    assert final["weights_sha256"] == multi["weights_sha256"]


def test_launcher_arguments_and_worker_configs():
    options, command = parse_launch_args(["workers=3", "max_restarts=2", "--", "train", "a=b"])
    assert options == {"workers": "3", "max_restarts": "2"} and command == ["train", "a=b"]
    with pytest.raises(ConfigError, match="usage: tfllm launch"):
        parse_launch_args(["workers=2", "train"])
    with pytest.raises(ConfigError, match="unknown option 'worker=2'"):
        parse_launch_args(["worker=2", "--", "train"])
    prepared = prepare_command(["train", "run_dir=r"])
    assert prepared == ["train", "run_dir=r", "trainer.strategy=multi_worker_mirrored"]
    assert any(c.startswith("run_dir=runs/launch-") for c in prepare_command(["train"]))
    options, _ = parse_launch_args(["ports=29500-29510", "--", "train"])
    assert parse_port_range(options["ports"]) == (29500, 29510)
    with pytest.raises(ConfigError, match="ports: expected FIRST-LAST"):
        parse_port_range("a-b")
    # Ports come from the range, skipping one that is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        assert ports_in_range(2, port, port + 40) == sorted(ports_in_range(2, port + 1, port + 40))
        with pytest.raises(ConfigError, match="fewer than 1 free ports"):
            ports_in_range(1, port, port)
    config = json.loads(tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1))
    assert config == {
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1},
    }


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_from_it(corpus, tmp_path):
    cfg = train_config(corpus, "trainer.callbacks=[]")
    trainer = Trainer(cfg, str(tmp_path))
    # The signal arrives after step 4's checks: the run stops at the next boundary, step 6.
    trainer.callbacks.append(SigtermAt(4))
    logs = trainer.fit()
    assert logs["preempted_at_step"] == 6  # not a checkpoint_every multiple: saved on SIGTERM
    assert (tmp_path / "checkpoints" / "ckpt-6.index").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
    resumed = Trainer(cfg, str(tmp_path))
    logs = resumed.fit()
    assert resumed.start_step == 6 and resumed.step == 12
    assert "preempted_at_step" not in logs
    uninterrupted = Trainer(cfg, str(tmp_path / "straight"))
    uninterrupted.fit()
    assert resumed.weights_digest() == uninterrupted.weights_digest()


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous(corpus, tmp_path):
    cfg = train_config(corpus, "trainer.callbacks=[]", "trainer.max_steps=8")
    Trainer(cfg, str(tmp_path)).fit()
    ckpts = tmp_path / "checkpoints"
    data = next(ckpts.glob("ckpt-8.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])  # a crash mid-write
    cfg["trainer"]["max_steps"] = 12
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(cfg, str(tmp_path))
        trainer.fit()
    assert trainer.start_step == 4 and trainer.step == 12
    assert any("ckpt-8" in str(w.message) and "falling back" in str(w.message) for w in caught)

    # Every checkpoint unreadable: a clear error, not a silent restart from step 0.
    for f in ckpts.glob("ckpt-*.index"):
        f.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Trainer(cfg, str(tmp_path)).fit()


class _Poison(AtStep):
    """Writes NaN into one weight at `step`, as a diverging run would."""

    def act(self, trainer):
        weight = trainer.model.trainable_variables[0]
        weight.assign(tf.fill(weight.shape, float("nan")))


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    cfg = train_config(corpus, "trainer.callbacks=[]")
    trainer = Trainer(cfg, str(tmp_path))
    trainer.callbacks.append(_Poison(6))  # after the step-4 checkpoint, before step 8's
    with pytest.raises(TrainingDivergedError, match=r"loss became nan .* at step 8.*ckpt-4"):
        trainer.fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-4.index"]
    restored = Trainer(cfg, str(tmp_path))
    restored._restore()
    assert restored.start_step == 4
    assert all(np.all(np.isfinite(w.numpy())) for w in restored.model.weights)


def test_train_step_compiles_with_static_shapes_for_tpu(corpus, tmp_path):
    trainer = Trainer(train_config(corpus, "trainer.jit_compile=true"), str(tmp_path))
    spec = trainer._train_iterator().element_spec
    assert all(s.shape.is_fully_defined() for s in tf.nest.flatten(spec)), spec
    with pytest.raises(ConfigError, match="trainer.strategy=tpu"):
        from tfllm.training.strategy import build_strategy

        build_strategy("tpu")


def test_bench_peak_and_mfu(corpus, tmp_path, monkeypatch, capsys):
    from tfllm.commands.inspect import bench_main as bench_command
    from tfllm.training.flops import load_peak, training_flops_per_token

    monkeypatch.setenv("TFLLM_CACHE", str(tmp_path / "cache"))
    bench_command(["peak", "size=256", "repeats=3"])
    assert "GFLOP/s median of 3" in capsys.readouterr().out
    peak = load_peak("float32")
    assert peak and peak > 1e8  # any CPU does 0.1 GFLOP/s

    trainer = Trainer(train_config(corpus, "trainer.callbacks=[]"), str(tmp_path / "run"))
    logs = trainer.fit()
    assert 0 < logs["mfu"] < 1
    expected = logs["tokens_per_sec"] * trainer.flops_per_token / peak
    assert logs["mfu"] == pytest.approx(expected)
    # 6N + 12 L D T, by hand for this model (tied head: the embedding counts once).
    backbone = trainer.model.backbone
    n = sum(int(np.prod(w.shape)) for w in trainer.model.trainable_weights)
    n -= int(np.prod(backbone.positional.weights[0].shape))  # learned positions: a lookup
    by_hand = 6 * n + 12 * backbone.num_layers * backbone.hidden_dim * 32
    assert training_flops_per_token(trainer.model, 32) == by_hand


def test_max_seconds_stops_with_an_evaluation_and_a_checkpoint(corpus, tmp_path):
    cfg = train_config(corpus, "trainer.callbacks=[]", "trainer.max_seconds=0.001")
    trainer = Trainer(cfg, str(tmp_path))
    logs = trainer.fit()
    assert logs["stopped_at_step"] == trainer.step == 2  # one execution of 2 steps
    assert "val_loss" in logs
    assert (tmp_path / "checkpoints" / "ckpt-2.index").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 2
