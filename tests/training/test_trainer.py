"""The trainer in-process: learning, accumulation, schedules, the saved run directory."""

import copy
import json
import os

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from train_configs import train_config

from tfllm.commands.catalog import CatalogComponents, catalog_from_registry
from tfllm.config import config_dir, to_plain
from tfllm.registry import ConfigError
from tfllm.runs import load_run, load_run_config
from tfllm.training.run_config import prepare_config
from tfllm.training.schedules import WarmupCosine, WarmupStableDecay
from tfllm.training.trainer import Trainer


def test_loss_falls_and_the_run_directory_is_complete(tiny_corpus, tmp_path):
    cfg = train_config(
        tiny_corpus,
        "trainer.max_steps=60",
        "trainer.eval_every=30",
        "schedule.peak_learning_rate=3e-3",
        "trainer.callbacks=[tensorboard]",
    )
    trainer = Trainer(cfg, str(tmp_path))
    first = trainer.evaluate()["val_loss"]
    logs = trainer.fit()
    assert logs["val_loss"] < first - 0.5
    assert abs(first - np.log(trainer.tokenizer.vocabulary_size)) < 0.3  # init ~ uniform
    for name in (
        "config.yaml",
        "metrics.json",
        "tokenizer/tokenizer.json",
        "checkpoints/checkpoint",
    ):
        assert (tmp_path / name).exists(), name
    assert os.listdir(tmp_path / "tensorboard")
    assert load_run_config(str(tmp_path))["trainer"]["max_steps"] == 60
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 60
    # A model-only restore (generation, export) brings back every weight exactly.
    model, tokenizer, _ = load_run(str(tmp_path))
    assert len(model.weights) == len(trainer.model.weights)
    for restored, trained in zip(model.weights, trainer.model.weights, strict=True):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy(), err_msg=trained.path)
    assert tokenizer.get_config() == trainer.tokenizer.get_config()


def test_tensorboard_gets_every_scalar_and_text_samples(tiny_corpus, tmp_path):
    import tensorflow as tf

    cfg = train_config(
        tiny_corpus,
        "trainer.max_steps=20",
        "trainer.callbacks=[tensorboard,{name:text_samples,every:10}]",
    )
    Trainer(cfg, str(tmp_path)).fit()
    tags = set()
    for event_file in (tmp_path / "tensorboard").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {v.tag for v in event.summary.value}
    for tag in (
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_sec",
        "eval/val_loss",
        "eval/val_perplexity",
        "samples/0",
    ):
        assert tag in tags, tag


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(tiny_corpus, tmp_path, policy):
    import keras

    cfg = train_config(
        tiny_corpus,
        "trainer.max_steps=10",
        "trainer.callbacks=[]",
        f"trainer.mixed_precision={policy}",
        "trainer.jit_compile=false",
    )
    try:
        trainer = Trainer(cfg, str(tmp_path))
        assert trainer.model.backbone.compute_dtype == policy.split("_")[1]
        assert trainer.model.backbone.token_embedding.embeddings.dtype == "float32"
        logs = trainer.fit()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["val_loss"])
    if policy == "mixed_float16":
        assert type(trainer.optimizer).__name__ == "LossScaleOptimizer"


def test_gradient_accumulation_matches_the_full_batch(tiny_corpus, tmp_path):
    weights = []
    for accum in (1, 2):
        cfg = train_config(
            tiny_corpus,
            "trainer.max_steps=4",
            f"trainer.grad_accum_steps={accum}",
            "trainer.steps_per_execution=2",
            "trainer.callbacks=[]",
            "trainer.jit_compile=false",
        )
        trainer = Trainer(cfg, str(tmp_path / f"a{accum}"))
        trainer.fit()
        weights.append(trainer.weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_weight_decay_skips_norms_biases_and_embeddings(tiny_corpus, tmp_path):
    cfg = train_config(tiny_corpus, "trainer.max_steps=4", "trainer.callbacks=[]")
    trainer = Trainer(cfg, str(tmp_path))
    decayed = {
        v.path for v in trainer.model.trainable_variables if trainer.optimizer._use_weight_decay(v)
    }
    assert any("qkv_proj/kernel" in p for p in decayed)
    assert not any(("bias" in p or "norm" in p or "embedding" in p) for p in decayed)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest_and_the_loss_falls(
    tiny_corpus, tmp_path
):
    cfg = train_config(
        tiny_corpus,
        "optimizer=muon",
        "head.tie_embeddings=false",
        "trainer.max_steps=30",
        "trainer.eval_every=30",
        "schedule.peak_learning_rate=3e-3",
        "trainer.callbacks=[]",
    )
    trainer = Trainer(cfg, str(tmp_path))
    assert type(trainer.optimizer).__name__ == "Muon"
    variables = trainer.model.trainable_variables
    on_muon = [v for v in variables if not trainer.optimizer._should_use_adamw(v)]
    assert any("qkv_proj/kernel" in v.path for v in on_muon)
    assert all(len(v.shape) == 2 for v in on_muon)
    assert not any(k in v.path for v in on_muon for k in ("embedding", "norm", "bias", "head"))
    assert any(v.path.endswith("head/kernel") for v in variables)  # untied: on AdamW
    # q, k and v of each fused projection are orthogonalized apart (optimizer.split_fused)
    qkv = [v for v in on_muon if "qkv_proj/kernel" in v.path]
    d = cfg["model"]["hidden_dim"]
    assert all(trainer.optimizer.fused_matrices[v.path].columns == (d, d, d) for v in qkv)
    decayed = {v.path for v in variables if trainer.optimizer._use_weight_decay(v)}
    assert not any(("bias" in p or "norm" in p or "embedding" in p) for p in decayed)
    first = trainer.evaluate()["val_loss"]
    assert trainer.fit()["val_loss"] < first - 0.5


def test_normuon_keeps_one_moment_per_neuron_of_each_muon_matrix_in_the_checkpoint(
    tiny_corpus, tmp_path
):
    import tensorflow as tf

    cfg = train_config(
        tiny_corpus,
        "optimizer=muon",
        "optimizer.neuron_norm=true",
        "ffn=swiglu",
        "trainer.max_steps=30",
        "trainer.eval_every=30",
        "schedule.peak_learning_rate=3e-3",
        "trainer.callbacks=[]",
    )
    trainer = Trainer(cfg, str(tmp_path))
    opt = trainer.optimizer
    on_muon = [v for v in trainer.model.trainable_variables if not opt._should_use_adamw(v)]
    moments = [x for x in opt.variables if "neuron_moment" in x.path]
    assert sorted(tuple(x.shape) for x in moments) == sorted((1, v.shape[-1]) for v in on_muon)
    first = trainer.evaluate()["val_loss"]
    assert trainer.fit()["val_loss"] < first - 0.5
    assert all(float(np.min(x.numpy())) > 0 for x in moments)
    saved = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    reader = tf.train.load_checkpoint(saved)
    stored = sorted(
        tuple(shape)
        for name, shape in reader.get_variable_to_shape_map().items()
        if "optimizer" in name and len(shape) == 2 and shape[0] == 1
    )
    assert stored == sorted(tuple(x.shape) for x in moments)


def test_muon_puts_each_expert_matrix_of_a_mixture_of_experts_on_muon(tiny_corpus, tmp_path):
    cfg = train_config(
        tiny_corpus,
        "optimizer=muon",
        "ffn=moe",
        "trainer.max_steps=30",
        "trainer.eval_every=30",
        "schedule.peak_learning_rate=3e-3",
        "trainer.callbacks=[]",
    )
    trainer = Trainer(cfg, str(tmp_path))
    experts = [v for v in trainer.model.trainable_variables if "expert_" in v.path]
    assert experts and all(len(v.shape) == 3 for v in experts)
    # Keras's Muon would leave 3-D weights to AdamW; declared stacked, they take Muon.
    assert not any(trainer.optimizer._should_use_adamw(v) for v in experts)
    assert all(trainer.optimizer.fused_matrices[v.path].stacked for v in experts)
    first = trainer.evaluate()["val_loss"]
    assert trainer.fit()["val_loss"] < first - 0.5


def test_warmup_cosine_matches_nanogpt():
    s = WarmupCosine(1e-3, warmup_steps=100, decay_steps=2000, min_learning_rate=1e-4)
    assert abs(float(s(0)) - 1e-3 * 1 / 101) < 1e-9
    assert abs(float(s(100)) - 1e-3) < 1e-9
    assert abs(float(s(1050)) - (1e-4 + 0.5 * 9e-4)) < 1e-7
    assert abs(float(s(5000)) - 1e-4) < 1e-9
    with pytest.raises(ValueError, match="decay_steps"):
        WarmupCosine(1e-3, warmup_steps=10, decay_steps=0)


def test_warmup_stable_decay_holds_the_peak_then_cools_down_linearly():
    s = WarmupStableDecay(2e-3, warmup_steps=100, decay_steps=2000, min_learning_rate=2e-4)
    assert abs(float(s(0)) - 2e-3 / 101) < 1e-9
    # stable from the end of warmup to the last 40% (step 1200)
    assert all(abs(float(s(step)) - 2e-3) < 1e-9 for step in (100, 700, 1200))
    assert abs(float(s(1600)) - (2e-4 + 0.5 * 1.8e-3)) < 1e-9  # halfway down the cooldown
    assert abs(float(s(2000)) - 2e-4) < 1e-9 and abs(float(s(3000)) - 2e-4) < 1e-9
    restored = WarmupStableDecay.from_config(s.get_config())
    assert [float(restored(x)) for x in (50, 1500)] == [float(s(x)) for x in (50, 1500)]
    with pytest.raises(ValueError, match="cooldown_fraction"):
        WarmupStableDecay(1e-3, warmup_steps=0, decay_steps=100, cooldown_fraction=0.0)
    with pytest.raises(ValueError, match="min_learning_rate"):
        WarmupStableDecay(1e-3, warmup_steps=0, decay_steps=100, min_learning_rate=1.0)


def test_warmup_stable_decay_sqrt_cooldown_follows_one_minus_sqrt_of_progress():
    linear = WarmupStableDecay(2e-3, warmup_steps=100, decay_steps=2000, min_learning_rate=2e-4)
    sqrt = WarmupStableDecay(
        2e-3, warmup_steps=100, decay_steps=2000, min_learning_rate=2e-4, cooldown_shape="sqrt"
    )
    # warmup and the stable part are the linear cooldown's
    assert [float(sqrt(x)) for x in (0, 50, 1200)] == [float(linear(x)) for x in (0, 50, 1200)]
    for step in (1300, 1600, 1900):
        progress = (step - 1200) / 800
        expected = 2e-4 + (1 - progress**0.5) * 1.8e-3
        assert abs(float(sqrt(step)) - expected) < 1e-8
        assert float(sqrt(step)) < float(linear(step))  # leaves the peak faster
    assert abs(float(sqrt(2000)) - 2e-4) < 1e-9 and abs(float(sqrt(2500)) - 2e-4) < 1e-9
    restored = WarmupStableDecay.from_config(sqrt.get_config())
    assert float(restored(1600)) == float(sqrt(1600))
    with pytest.raises(ValueError, match="cooldown_shape must be one of"):
        WarmupStableDecay(1e-3, warmup_steps=0, decay_steps=100, cooldown_shape="cosine")


def test_a_run_shorter_than_its_warmup_warms_up_for_a_tenth_of_it(caplog):
    with caplog.at_level("WARNING"):
        s = WarmupCosine(1e-3, warmup_steps=100, decay_steps=30, min_learning_rate=1e-4)
    assert s.warmup_steps == 3
    assert "warming up for 3 steps instead" in caplog.text
    assert abs(float(s(3)) - 1e-3) < 1e-9 and abs(float(s(30)) - 1e-4) < 1e-9


@pytest.fixture(scope="module")
def catalog():
    """What `tfllm list` caches, built from this process's registry."""
    return CatalogComponents(catalog_from_registry())


@pytest.mark.parametrize(
    "override,match",
    [
        ("attention.name=flash", "Unknown attention 'flash'. .*Available attention names: .*mha"),
        ("positional.name=ropee", "Did you mean 'rope'"),
        ("+attention.heads=3", "attention.heads: attention 'mha' takes no argument 'heads'"),
        ("trainer.strategy=mirror", "trainer.strategy: unknown strategy 'mirror'"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("trainer.max_steps=0", "trainer.max_steps must be positive"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision"),
        ("data.sequence_length=64", "data.sequence_length=64 exceeds model.max_sequence_length"),
        ("model.max_sequence_length=16", "exceeds model.max_sequence_length=16"),
        ("optimizer.name=adam", "Did you mean 'adamw'"),
    ],
)
def test_bad_config_fails_before_training_naming_the_key(
    tiny_corpus, tmp_path, catalog, override, match
):
    cfg = train_config(tiny_corpus, override)
    if override == "data.sequence_length=64":
        cfg["model"]["max_sequence_length"] = 32
    # `tfllm train` checks first against the cached catalog, before TensorFlow loads: the same
    # error as the Trainer's check against the loaded registry.
    with pytest.raises(ConfigError, match=match) as early:
        prepare_config(copy.deepcopy(cfg), catalog)
    with pytest.raises(ConfigError, match=match) as late:
        Trainer(cfg, str(tmp_path))
    assert str(early.value) == str(late.value)
    assert not (tmp_path / "checkpoints").exists()


def test_invalid_component_value_names_the_group(tiny_corpus, tmp_path):
    cfg = train_config(tiny_corpus, "attention.num_kv_heads=3")
    with pytest.raises(ConfigError, match="attention.*num_kv_heads must be a positive divisor"):
        Trainer(cfg, str(tmp_path))


def test_fine_tuning_fits_data_lengths_to_the_source_models_context(tmp_path, caplog):
    from tfllm.runs import save_run_config
    from tfllm.training.run_config import inherit_architecture

    def compose_config(*overrides):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = to_plain(compose("config", overrides=["run_dir=unused", *overrides]))
        return cfg

    source = compose_config("task=sft", "model.max_sequence_length=64", "data.train=x")
    save_run_config(source, str(tmp_path))
    tuned = compose_config("task=sft", "data.train=x")
    assert tuned["data"]["sequence_length"] == 256  # SFT's default, written for bigger models
    with caplog.at_level("INFO", logger="tfllm"):
        fitted = inherit_architecture(tuned, str(tmp_path))
    assert fitted["model"]["max_sequence_length"] == 64
    assert fitted["data"]["sequence_length"] == 64
    assert "data.sequence_length=256 does not fit the model's context of 64" in caplog.text
