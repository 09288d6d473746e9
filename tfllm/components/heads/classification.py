"""The sequence-classification head: pooled hidden states to class logits."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.components.heads.pooling import POOLINGS, pool
from tfllm.registry import register


@register("head", "classification")
class ClassificationHead(keras.layers.Layer):
    """Pools a sequence (`cls`, `mean`, or `last_token` for decoders) and maps it to logits.

    With `pooler=True` the pooled vector first goes through a `tanh` dense layer of the model's
    width (BERT's pooler). Logits are float32.

    Args:
        num_classes: int. Number of labels.
        pooling: str. `cls`, `mean` or `last_token`.
        pooler: bool. A `tanh` dense layer before the classifier.
        dropout: float. Dropout on the pooled vector.
        initializer_range: float. Standard deviation of the kernel initializers.

    Call arguments:
        x: `(B, T, D)` hidden states.
        padding_mask: optional `(B, T)`, true for real tokens.
        training: bool, for dropout.

    Example:

    >>> import numpy as np
    >>> head = ClassificationHead(num_classes=3, pooling="mean")
    >>> head(np.ones((2, 5, 8), "float32")).shape
    TensorShape([2, 3])

    Reference: Devlin et al. 2019 (BERT's `[CLS]` classifier); Radford et al. 2018 (GPT's
    last-token classifier).
    """

    def __init__(
        self,
        num_classes: int,
        pooling: str = "cls",
        pooler: bool = False,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.pooling = pooling
        self.pooler = pooler
        self.dropout = dropout
        self.initializer_range = initializer_range
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        self.pooler_dense = None
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=init, dtype=self.dtype_policy, name="classifier"
        )
        self._init = init

    def build(self, input_shape):
        width = input_shape[-1]
        if self.pooler:
            self.pooler_dense = keras.layers.Dense(
                width,
                activation="tanh",
                kernel_initializer=self._init,
                dtype=self.dtype_policy,
                name="pooler",
            )
            self.pooler_dense.build((None, width))
        self.classifier.build((None, width))
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        pooled = pool(x, padding_mask, self.pooling)  # (B, D)
        if self.pooler_dense is not None:
            pooled = self.pooler_dense(pooled)
        pooled = self.dropout_layer(pooled, training=training)
        return tf.cast(self.classifier(pooled), "float32")  # (B, C)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            pooling=self.pooling,
            pooler=self.pooler,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
        )
        return config
