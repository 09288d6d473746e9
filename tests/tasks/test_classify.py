"""Fine-tuning a classifier from a checkpoint: `task=classify init_from=... data=...`."""

import json
import random

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfllm.config import compose
from tfllm.registry import ConfigError
from tfllm.training.trainer import Trainer, classification_metrics

WORDS = "the a film plot actor scene story music was is very quite rather".split()


def write_split(path, n, seed):
    """Texts whose label is whether they contain 'good' (1) or 'bad' (0)."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), "good" if label else "bad")
        lines.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small GPT checkpoint (char tokenizer) in the run-directory layout."""
    from tfllm.components.tokenizers.char import CharTokenizer
    from tfllm.models.builder import build_model
    from tfllm.runs import write_checkpoint

    root = tmp_path_factory.mktemp("gpt")
    tokenizer = CharTokenizer(special_tokens={"pad": "<pad>", "unk": "<unk>", "eos": "<eos>"})
    tokenizer.adapt([" ".join(WORDS) + " good bad\n"])
    cfg = compose("config", ["run_dir=x", "model=nano", "positional=rope"])
    cfg.pop("run_dir")
    model = build_model(cfg, tokenizer.vocabulary_size)
    write_checkpoint(model, tokenizer, cfg, str(root / "ckpt"))
    return root / "ckpt", model


def classify_config(train, val, *overrides):
    cfg = compose(
        "config",
        [
            "task=classify",
            f"data.train={train}",
            f"data.val={val}",
            "data.batch_size=16",
            "data.sequence_length=40",
            "head.pooling=last_token",
            "trainer.max_steps=80",
            "trainer.eval_every=80",
            "trainer.checkpoint_every=80",
            "trainer.log_every=20",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=5",
            "schedule.peak_learning_rate=3e-3",
            "run_dir=x",
            *overrides,
        ],
    )
    cfg.pop("run_dir")
    return cfg


def test_a_classifier_fine_tuned_from_a_gpt_checkpoint_learns(pretrained, tmp_path):
    ckpt, gpt = pretrained
    train = write_split(tmp_path / "train.tsv", 400, 0)
    val = write_split(tmp_path / "val.tsv", 80, 1)
    cfg = classify_config(train, val, f"init_from={ckpt}", "trainer.callbacks=[tensorboard]")
    trainer = Trainer(cfg, str(tmp_path / "run"))
    # The backbone starts as the checkpoint's; the architecture came from it too.
    assert trainer.cfg["positional"]["name"] == "rope"
    for mine, theirs in zip(trainer.model.backbone.weights, gpt.backbone.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    logs = trainer.fit()
    assert logs["val_accuracy"] >= 0.9, logs
    assert 0.0 < logs["val_macro_f1"] <= 1.0
    assert int(trainer.last_confusion.sum()) == 80  # every validation row once
    tags = set()
    for event_file in (tmp_path / "run" / "tensorboard").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {v.tag for v in event.summary.value}
    assert {"eval/val_accuracy", "eval/val_macro_f1", "eval/confusion_matrix"} <= tags


def test_classification_metrics():
    confusion = np.array([[5, 1], [2, 2]])
    metrics = classification_metrics(confusion)
    assert metrics["val_accuracy"] == pytest.approx(0.7)
    f1_0, f1_1 = 2 * 5 / (2 * 5 + 1 + 2), 2 * 2 / (2 * 2 + 2 + 1)
    assert metrics["val_macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)


@pytest.mark.parametrize(
    "content,message",
    [
        ("sentence\tlabel\ngood one\t1\nbad one\t7\n", "val.tsv:3: label '7' is not one of"),
        ("sentence\tlabel\n\t1\n", "val.tsv:2: the text is empty"),
        ("sentence\tlabel\nfine\t1\tx\n", "val.tsv:2: 3 tab-separated fields"),
    ],
)
def test_bad_rows_name_the_file_and_line(pretrained, tmp_path, content, message):
    ckpt, _ = pretrained
    train = write_split(tmp_path / "train.tsv", 40, 0)
    (tmp_path / "val.tsv").write_text(content)
    with pytest.raises(ConfigError, match=message):
        Trainer(classify_config(train, tmp_path / "val.tsv", f"init_from={ckpt}"), str(tmp_path))


def test_the_train_command_fine_tunes_from_a_checkpoint(pretrained, tmp_path):
    ckpt, _ = pretrained
    train = write_split(tmp_path / "train.tsv", 200, 2)
    val = write_split(tmp_path / "val.tsv", 40, 3)
    run = tmp_path / "run"
    run_cli(
        [
            "train",
            "task=classify",
            f"init_from={ckpt}",
            "data=tsv_classification",
            f"data.train={train}",
            f"data.val={val}",
            "data.batch_size=8",
            "head.pooling=last_token",
            "trainer.max_steps=10",
            "trainer.eval_every=10",
            "trainer.jit_compile=false",
            "schedule.warmup_steps=2",
            f"run_dir={run}",
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 10 and 0.0 <= metrics["val_accuracy"] <= 1.0
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(run))
    assert cfg["task"]["name"] == "classify" and model.labels == ["0", "1"]
    assert cfg["init_from"] == str(ckpt)
