"""A task written against the trainer's declared contract (tfllm.tasks.base.TaskModel): it
defines only `loss_terms`, `eval_statistics` and `summarize_eval`, and the trainer runs it,
calling every other hook's default; a model that is not a TaskModel is refused by name."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm import registry
from tfllm.config import compose
from tfllm.registry import ConfigError
from tfllm.tasks.base import TaskModel
from tfllm.training.trainer import Trainer


@registry.register("task", "contract_next_token", override=True)
class NextTokenAccuracy(TaskModel):
    """A causal LM that reports next-token accuracy instead of perplexity."""

    def __init__(self, backbone, head=None, **kwargs):
        super().__init__(backbone, **kwargs)
        self.set_head(head, "lm", {"vocabulary_size": self.vocabulary_size}, "lm_head")

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, token_embedding=self.backbone.token_embedding)  # (B, T, V)

    def loss_terms(self, batch, training=False):
        logits = self(batch["token_ids"], training=training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(batch["labels"], tf.int32), logits=logits
        )  # (B, T)
        weights = tf.cast(batch["loss_weights"], ce.dtype)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

    def eval_statistics(self, batch):
        logits = self(batch["token_ids"], training=False)
        right = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == batch["labels"], "float32")
        weights = tf.cast(batch["loss_weights"], "float32")
        return {"right": tf.reduce_sum(right * weights), "tokens": tf.reduce_sum(weights)}

    def summarize_eval(self, loss, statistics):
        return {
            "val_loss": loss,
            "val_next_token_accuracy": statistics["right"] / statistics["tokens"],
        }


@registry.register("task", "contract_not_a_task", override=True)
def not_a_task(backbone, head=None):
    """Builds a bare Keras model, which does not keep the trainer's contract."""
    import keras

    return keras.Sequential([backbone])


def config(corpus, task, steps=12):
    cfg = compose(
        "config",
        [
            "debug=fast",
            "run_dir=unused",
            f"data.path={corpus}",
            f"task.name={task}",
            f"trainer.max_steps={steps}",
            "trainer.eval_every=6",
            "schedule.peak_learning_rate=3e-3",
        ],
    )
    cfg.pop("run_dir")
    return cfg


def test_a_task_that_keeps_the_contract_trains_with_the_defaults(tiny_corpus, tmp_path):
    trainer = Trainer(config(tiny_corpus, "contract_next_token"), str(tmp_path))
    before = trainer.evaluate()
    logs = trainer.fit()
    assert set(before) == {"val_loss", "val_next_token_accuracy"}
    assert 0.0 <= logs["val_next_token_accuracy"] <= 1.0
    assert logs["val_next_token_accuracy"] > before["val_next_token_accuracy"]
    assert logs["val_loss"] < before["val_loss"]
    assert "val_perplexity" not in logs  # the task's summary replaced the default
    assert np.isfinite(logs["loss"])


def test_a_model_outside_the_contract_is_refused_by_name(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="contract_not_a_task.*TaskModel"):
        Trainer(config(tiny_corpus, "contract_not_a_task"), str(tmp_path))
