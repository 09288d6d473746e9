"""The `tfllm` console script end to end, in fresh processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from tfllm.runs import load_run


def model_weights(run_dir):
    model, _, _ = load_run(str(run_dir))
    # Keyed by path without the auto-numbered model name (two loads in one process differ).
    return {v.path.split("/", 1)[1]: v.numpy() for v in model.weights}


# Out of the default run (its time budget): test_output_hygiene trains and generates through
# the CLI, and test_python_api's docs run does both again.
@pytest.mark.slow
def test_train_then_generate_prints_text(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        [
            "train",
            "debug=fast",
            f"data.path={tiny_corpus}",
            f"run_dir={run}",
            "trainer.max_steps=150",
            "schedule.peak_learning_rate=3e-3",
        ]
    )
    assert f"trained to {run}" in proc.stdout
    out = run_cli(
        [
            "generate",
            f"ckpt={run}",
            "prompt=BERNARDO:",
            "max_new_tokens=40",
            "temperature=0.7",
            "seed=1",
            "num_return_sequences=2",
        ]
    ).stdout
    samples = [s for s in out.split("-" * 40 + "\n") if s]
    assert len(samples) == 2 and all(s.startswith("BERNARDO:") for s in samples)
    generated = "".join(s[len("BERNARDO:") :] for s in samples)
    assert sum(c.isalpha() for c in generated) > 10  # words, not just whitespace
    assert set(generated) <= set(tiny_corpus.read_text())
    # Longer than the 32-token context: what fits, and a note on stderr says so.
    longer = run_cli(
        [
            "generate",
            f"ckpt={run}",
            "prompt=",
            "max_new_tokens=100",
            "temperature=0.8",
            "stop_at_eos=false",
            "seed=3",
        ]
    )
    assert 20 <= len(longer.stdout.rstrip("\n")) <= 31  # eos starts it: 31 positions are left
    assert "ended at the model's context of 32 tokens, before max_new_tokens=100" in longer.stderr


@pytest.mark.slow  # 45 s each; the multi-worker tests cover distribution in the default run
@pytest.mark.parametrize("optimizer", [[], ["optimizer=muon", "ffn=swiglu"]], ids=["adamw", "muon"])
def test_mirrored_on_two_logical_cpus_matches_one_device(tiny_corpus, tmp_path, optimizer):
    # Muon with swiglu: its fused kernels (qkv, gate_up) are orthogonalized by parts
    common = [
        "debug=fast",
        f"data.path={tiny_corpus}",
        "trainer.max_steps=10",
        "trainer.callbacks=[]",
        *optimizer,
    ]
    run_cli(["train", *common, f"run_dir={tmp_path / 'one'}"])
    run_cli(
        [
            "train",
            *common,
            f"run_dir={tmp_path / 'two'}",
            "trainer.strategy=mirrored",
            "trainer.logical_cpus=2",
        ]
    )
    one, two = model_weights(tmp_path / "one"), model_weights(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 5
    for key in one:
        np.testing.assert_allclose(one[key], two[key], atol=1e-5, err_msg=key)


@pytest.mark.slow  # three training processes
def test_multirun_sweeps_overrides(tiny_corpus, tmp_path):
    proc = run_cli(
        [
            "train",
            "-m",
            "debug=fast",
            f"data.path={tiny_corpus}",
            "trainer.max_steps=5",
            "trainer.callbacks=[]",
            "positional=rope,alibi",
            f"hydra.sweep.dir={tmp_path}",
        ],
        timeout=400,
    )
    assert proc.stdout.count("trained to") == 2
    assert (tmp_path / "0" / "checkpoints").is_dir() and (tmp_path / "1" / "checkpoints").is_dir()
    assert "name: alibi" in (tmp_path / "1" / "config.yaml").read_text()


def test_bad_config_exits_with_a_clear_error_and_trains_nothing(tiny_corpus, tmp_path):
    proc = run_cli(
        [
            "train",
            "debug=fast",
            f"data.path={tiny_corpus}",
            f"run_dir={tmp_path}/r",
            "attention.name=flash",
        ],
        check=False,
    )
    assert proc.returncode == 2
    assert "attention.name: Unknown attention 'flash'" in proc.stderr
    assert "tfllm list attention" in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()
    proc = run_cli(["train", "attention=flash"], check=False, cwd=tmp_path)
    assert proc.returncode != 0 and "mha" in proc.stderr  # Hydra lists the options
    proc = run_cli(["train", "trainer.max_stepz=3"], check=False, cwd=tmp_path)
    assert proc.returncode != 0 and "max_stepz" in proc.stderr
    # A wrong ckpt= is refused before TensorFlow loads: these run with a `tensorflow` that
    # fails to import.
    blocked = tmp_path / "no_tensorflow" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
    (tmp_path / "not_a_run").mkdir()
    env = {"PYTHONPATH": str(blocked.parent)}
    for command in (["generate"], ["export", "export.name=lm"], ["quantize", f"out={tmp_path}/q"]):
        proc = run_cli([*command, f"ckpt={tmp_path}/nowhere"], check=False, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"tfllm: error: ckpt: no such directory: {tmp_path}/nowhere")
    proc = run_cli(
        ["prune", f"ckpt={tmp_path}/not_a_run", "out=x", "sparsity=0.5"], check=False, env=env
    )
    assert proc.returncode == 2 and "is not a tfllm run directory" in proc.stderr, proc.stderr
    assert not (tmp_path / "q").exists()
    # So is a value the command needs and was not given (`???` in its YAML): nothing is
    # written under a folder named `???`.
    for command, missing in (
        (["export", "ckpt=run"], "export.name"),
        (["tokenizer", "train"], "out"),
        (["client", "prompt=hi"], "model"),
        (["train", "data=chat"], "data.train, data.val"),
        (["chat"], "ckpt"),  # (or server=, for a served export)
    ):
        proc = run_cli(command, check=False, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"tfllm: error: {missing}: required, not set (pass "), (
            proc.stderr
        )
    assert not list(tmp_path.rglob("???"))
    proc = run_cli(["serve"], check=False, env=env)
    assert proc.returncode == 2 and "pass model_base_path= and model_name=" in proc.stderr
    # So are bad decoding settings and evaluations (a run folder is all these read first).
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    for command, message in (
        (["generate", "prompt=hi", "temperature=abc"], "temperature: 'abc' is not a number"),
        (["generate", "prompt=hi", "stop=[1]"], "stop: [1] is not a list of strings"),
        (["chat", "top_k=many"], "top_k: 'many' is not a whole number"),
        (["evaluate"], "data.path: eval=perplexity needs data.path=..."),
        (["export", "export.name=lm", "export.top_k=x"], "export.top_k: 'x' is not a whole number"),
        (["export", "export.name=lm", "export.version=0"], "export.version must be a positive"),
        (["quantize", f"out={tmp_path}/q", "mode=int4"], "quantization.mode must be one of"),
    ):
        proc = run_cli([*command, f"ckpt={tmp_path}/run"], check=False, env=env)
        assert proc.returncode == 2 and proc.stderr.startswith(f"tfllm: error: {message}"), (
            proc.stderr
        )
    prepare = ["data", "prepare", f"out={tmp_path}/d", "tokenizer=char"]
    for args, message in (
        (["source=nowhere.txt"], "source: no such file or directory: nowhere.txt"),
        ([f"source={tmp_path}/run/config.yaml", "val_fraction=2"], "val_fraction: must be in"),
    ):
        proc = run_cli([*prepare, *args], check=False, env=env)
        assert proc.returncode == 2 and proc.stderr.startswith(f"tfllm: error: {message}")
    # So is a wrong name or value in a training config, once `tfllm list`'s catalog is cached
    # (were it not, these commands would read the registry, and fail to import TensorFlow).
    from tfllm.commands.catalog import CATALOG_FILE, catalog_from_registry

    env["TFLLM_CACHE"] = str(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    catalog = json.dumps(catalog_from_registry())  # what `tfllm list` caches, built here
    (tmp_path / "cache" / CATALOG_FILE).write_text(catalog, encoding="utf-8")
    for override, message in (
        ("attention.name=flash", "attention.name: Unknown attention 'flash'. Available"),
        ("+attention.heads=3", "attention.heads: attention 'mha' takes no argument 'heads'"),
        ("trainer.max_steps=-1", "trainer.max_steps must be positive, got -1"),
        ("schedule.name=cosin", "schedule.name: Unknown schedule 'cosin'. Did you mean 'cosine'?"),
    ):
        args = ["train", "debug=fast", override, f"run_dir={tmp_path}/b"]
        proc = run_cli(args, check=False, env=env)
        assert proc.returncode == 2 and f"tfllm: error: {message}" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()
    # A valid config passes that check and goes on to load TensorFlow.
    proc = run_cli(["train", "debug=fast", f"run_dir={tmp_path}/ok"], check=False, env=env)
    assert proc.returncode != 0 and "tensorflow was imported" in proc.stderr, proc.stderr
    proc = run_cli(["trian"], check=False)
    assert proc.returncode == 2 and "Did you mean 'train'" in proc.stderr


def test_list_shows_components_with_their_package():
    out = run_cli(["list", "positional"]).stdout
    for name in ("alibi", "learned", "none", "rope", "sinusoidal"):
        assert f"positional/{name}" in out
    assert "tfllm" in out
    proc = run_cli(["list", "positionl"], check=False)
    assert proc.returncode == 2 and "Did you mean 'positional'" in proc.stderr


def test_train_without_data_path_uses_the_embedded_corpus(tmp_path):
    import tensorflow as tf

    proc = run_cli(
        [
            "train",
            "debug=fast",
            "trainer.max_steps=10",
            "trainer.callbacks=[tensorboard]",
            f"run_dir={tmp_path}",
        ]
    )
    assert "trained to" in proc.stdout
    vocab = (tmp_path / "tokenizer" / "tokenizer.json").read_text()
    assert "HAMLET" not in vocab and "ROMEO" not in vocab  # a character vocabulary
    assert "config.yaml" in {p.name for p in tmp_path.iterdir()}
    # The process skipped the interpreter's teardown (fast_exit.py), and nothing was lost: the
    # TensorBoard events reach the last step.
    steps = {
        event.step
        for event_file in (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(event_file))
        if any(v.tag.endswith("loss") for v in event.summary.value)
    }
    assert max(steps) == 10, sorted(steps)


def test_a_command_skips_keras_optional_imports_that_others_still_get(tmp_path):
    """matplotlib, IPython and pandas stay out of a command's start (Keras imports them only
    if installed and only for what commands never use), yet import for anything else that
    asks: tfllm's plots, the `datasets` library."""
    script = (
        "import sys\n"
        "from tfllm import cli\n"
        "sys.argv = ['tfllm', 'list', 'attention']\n"
        "cli.main()\n"
        "assert 'keras' in sys.modules, 'the uncached listing should have loaded Keras'\n"
        "skipped = ('matplotlib', 'IPython', 'pandas')\n"
        "print('LOADED', sorted(m for m in skipped if m in sys.modules))\n"
        "from tfllm.evaluation.plotting import pyplot\n"
        "import pandas\n"
        "pyplot().figure()\n"
        "print('FRAME', pandas.DataFrame({'a': [1]}).shape)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "TFLLM_CACHE": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout and "FRAME (1, 1)" in proc.stdout
