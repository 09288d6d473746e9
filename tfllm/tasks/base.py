"""What every task model shares: a backbone, a head from the registry, a config that
round-trips, and the contract the trainer calls (`loss_terms` plus the hooks below, each with
a default). docs/tasks.md documents the contract for plugin authors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm import registry


class TaskModel(keras.Model):
    """A backbone plus a head built from a registry spec; the base of the registered tasks.

    Takes the backbone as a layer or as its serialized config (what `from_config` hands back),
    offers `vocabulary_size` and `max_sequence_length` from it, and writes a config of the
    backbone, the head spec and whatever `task_config()` adds, so `.keras` files round-trip.
    A subclass calls `super().__init__(backbone, **kwargs)`, then `set_head(...)`.

    The trainer calls, on every task and unconditionally, `loss_terms` (which a task must
    define) and these hooks (whose defaults suit a task trained on its own batches):

    - `on_initialized()`: once, after the weights are built or initialized from another run
      (DPO and PPO copy their frozen reference policy here).
    - `prepare_batch(batch, update)`: turn a data batch into the batch the loss reads, plus
      per-step statistics (PPO: rollouts and rewards); `update=False` in validation.
    - `updates_per_batch`: optimizer updates per prepared batch (PPO: its epochs).
    - `loss_normalizer(batch)`: what the summed loss is divided by, known before the backward
      pass (default: the sum of `loss_weights`).
    - `step_statistics`: names of the per-step statistics that `prepare_batch` and
      `update_statistics(batch)` return, averaged over replicas and logged.
    - `eval_statistics(batch)`: sums over one validation batch (summed over batches and
      replicas), and `summarize_eval(loss, statistics)`: the validation logs made of them
      (default: loss and perplexity).

    Args:
        backbone: a backbone layer, or its serialized config.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.decoder import DecoderBackbone
    >>> class Scorer(TaskModel):
    ...     def __init__(self, backbone, head=None, **kwargs):
    ...         super().__init__(backbone, **kwargs)
    ...         self.set_head(head, "scalar", name="score_head")
    ...     def call(self, token_ids):
    ...         return self.head(self.backbone(token_ids))  # (B,)
    >>> backbone = DecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> scorer = Scorer(backbone, head={"name": "lm"})  # the default head group gives way
    >>> scorer.head_spec, scorer(np.zeros((2, 8), "int32")).shape
    ({'name': 'scalar'}, TensorShape([2]))
    >>> Scorer.from_config(scorer.get_config()).head_spec
    {'name': 'scalar'}
    """

    def __init__(self, backbone: Any, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = backbone
        self.head_spec: dict[str, Any] | None = None

    def build_head(
        self, spec: dict[str, Any], context: dict[str, Any] | None, name: str
    ) -> keras.layers.Layer:
        """A head from `spec`, in the backbone's dtype policy, built for its hidden states."""
        head = registry.build(
            "head", spec, context or {}, key="head", dtype=self.backbone.dtype_policy, name=name
        )
        head.build((None, None, self.backbone.hidden_dim))
        return head

    def set_head(
        self,
        spec: dict[str, Any] | None,
        default: str,
        context: dict[str, Any] | None = None,
        name: str = "head",
    ) -> None:
        """Build `self.head` from `spec` (`{"name": default}` when None). A task whose default
        is not the LM head replaces `lm`, which the config's default head group names."""
        spec = dict(spec or {"name": default})
        if default != "lm" and spec.get("name") == "lm":
            spec = {"name": default}
        self.head_spec = spec
        self.head = self.build_head(spec, context, name)
        self.built = True

    @property
    def vocabulary_size(self) -> int:
        return self.backbone.vocabulary_size

    @property
    def max_sequence_length(self) -> int:
        return self.backbone.max_sequence_length

    def task_config(self) -> dict[str, Any]:
        """The subclass's own constructor arguments, for `get_config`."""
        return {}

    # ----- the trainer's contract -----------------------------------------------------------
    # Optimizer updates per prepared batch, and the statistics logged at every step.
    updates_per_batch: int = 1
    step_statistics: tuple[str, ...] = ()

    def loss_terms(self, batch: dict[str, Any], training: bool = False) -> tuple[Any, Any]:
        """`(summed loss, summed weight)` of one batch; the trainer divides the first by the
        global `loss_normalizer` and reports loss per unit of weight."""
        raise NotImplementedError(f"{type(self).__name__} must define loss_terms(batch, training)")

    def on_initialized(self) -> None:
        """Called once the weights are final (built, or initialized with `init_from=`)."""

    def prepare_batch(
        self, batch: dict[str, Any], update: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`(batch the loss reads, per-step statistics)`; `update=False` in validation."""
        return batch, {}

    def loss_normalizer(self, batch: dict[str, Any]) -> Any:
        """This replica's share of what the summed loss is divided by (summed over replicas)."""
        return tf.reduce_sum(tf.cast(batch["loss_weights"], tf.float32))

    def update_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Statistics of the step, computed after its updates (names in `step_statistics`)."""
        return {}

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Sums over one validation batch, for `summarize_eval`."""
        return {}

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        """Validation logs from the mean loss and the summed `eval_statistics`."""
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "head": self.head_spec,
            **self.task_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def example_means(loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
    """Validation logs of a task whose `eval_statistics` are per-example sums plus the example
    count `examples`: the loss and each statistic's mean (`val_<name>`)."""
    count = max(float(statistics.get("examples", 0.0)), 1.0)
    means = {f"val_{k}": float(np.asarray(v)) / count for k, v in statistics.items()}
    means.pop("val_examples", None)
    return {"val_loss": loss, **means}
