"""The plugin as a user meets it: Hydra overrides on the real `tfllm` command train a model with
every plugin component; the run reloads, generates and exports; the export serves over gRPC from
a process in which the plugin cannot be imported."""

import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfllm.config import compose
from tfllm.runs import load_run_config
from tfllm.training.trainer import Trainer

CORPUS = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 20
OVERRIDES = ["attention=linear", "positional=xpos", "norm=scalenorm", "head=softcap_lm"]
# A process that cannot import the plugin, as if it had never been installed.
WITHOUT_PLUGIN = textwrap.dedent(
    """
    import sys

    class NoPlugin:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tfllm_plugin_example":
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoPlugin())
    from tfllm.cli import main

    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.mark.parametrize("override", OVERRIDES)
def test_each_component_trains_through_a_hydra_override(override, corpus, tmp_path):
    cfg = compose(
        "config",
        [
            override,
            "debug=fast",
            f"data.path={corpus}",
            "run_dir=unused",
            "trainer.max_steps=3",
            "trainer.steps_per_execution=1",
            "trainer.eval_every=3",
            "trainer.checkpoint_every=3",
            "trainer.callbacks=[]",
            "trainer.jit_compile=false",
        ],
    )
    cfg.pop("run_dir")
    group, name = override.split("=")
    assert cfg[group]["name"] == name
    trainer = Trainer(cfg, str(tmp_path))
    before = [w.numpy().copy() for w in trainer.model.trainable_weights]
    logs = trainer.fit()
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["val_loss"])
    moved = [
        not np.array_equal(b, w.numpy())
        for b, w in zip(before, trainer.model.trainable_weights, strict=True)
    ]
    assert all(moved), "every weight, the plugin component's included, takes a step"


def _serve_without_plugin(model_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WITHOUT_PLUGIN,
            "serve",
            f"model_base_path={model_dir}",
            "model_name=plugged",
            "port=0",
            "rest_port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline, lines = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match[1])
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(lines)}{proc.stderr.read()}")


@pytest.mark.slow  # three processes (86 s); by default each plugin component trains through its
# override above, and export validation (test_serving) proves exports load without tfllm
def test_cli_train_then_reload_generate_export_and_serve_without_the_plugin(corpus, tmp_path):
    from tfllm_plugin_example import LinearAttention, ScaleNorm, SoftcapLMHead, XPosEncoding

    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.runs import load_run
    from tfllm.serving.client import Client

    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfllm.cli",
            "train",
            *OVERRIDES,
            "attention.chunk_size=8",
            "debug=fast",
            "trainer.max_steps=10",
            f"data.path={corpus}",
            f"run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = load_run_config(str(run_dir))
    assert [saved[k]["name"] for k in ("attention", "positional", "norm", "head")] == [
        "linear",
        "xpos",
        "scalenorm",
        "softcap_lm",
    ]
    assert saved["attention"]["chunk_size"] == 8

    model, tokenizer, cfg = load_run(str(run_dir))
    block = model.backbone.blocks[0]
    assert isinstance(block.attention, LinearAttention)
    assert isinstance(block.attention_norm, ScaleNorm)
    assert isinstance(model.backbone.positional, XPosEncoding)
    assert isinstance(model.head, SoftcapLMHead)
    prompts = ["BERNARDO:", "Who"]
    # The export's serving_default settings: greedy, 12 new tokens.
    texts = [c[0] for c in Generator(model, tokenizer).generate(prompts, GenerationConfig(12))]
    assert all(len(t) > 0 for t in texts)

    keras_path = tmp_path / "model.keras"
    model.save(keras_path)
    import keras

    reloaded = keras.saving.load_model(keras_path)
    ids = np.asarray([tokenizer.encode_one("BERNARDO: Who")], "int32")
    np.testing.assert_array_equal(reloaded(ids).numpy(), model(ids).numpy())

    # Export validation reloads the SavedModel in a process that imports neither tfllm nor
    # the plugin, and compares greedy completions with this process.
    settings = ExportSettings(max_new_tokens=12)
    result = export_model(model, tokenizer, cfg, str(tmp_path / "exports"), "plugged", 1, settings)
    assert result.validation["compared"].endswith("identical"), result.validation

    server, port = _serve_without_plugin(tmp_path / "exports" / "plugged")
    try:
        with Client(port=port, model="plugged") as client:
            served = client.generate(prompts)
        assert served == texts
    finally:
        server.terminate()
        server.wait(timeout=30)
