"""What every task model shares: a backbone, a head from the registry, a config that
round-trips."""

from __future__ import annotations

from typing import Any

import keras

from tfllm import registry


class TaskModel(keras.Model):
    """A backbone plus a head built from a registry spec; the base of the registered tasks.

    Takes the backbone as a layer or as its serialized config (what `from_config` hands back),
    offers `vocabulary_size` and `max_sequence_length` from it, and writes a config of the
    backbone, the head spec and whatever `task_config()` adds, so `.keras` files round-trip.
    A subclass calls `super().__init__(backbone, **kwargs)`, then `set_head(...)`.

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
