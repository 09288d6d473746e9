"""The token-classification head: one label per token (named entities, part of speech)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.registry import register


@register("head", "token_classification")
class TokenClassificationHead(keras.layers.Layer):
    """Maps every hidden state to class logits (float32), after dropout.

    Args:
        num_classes: int. Number of labels.
        dropout: float. Dropout on the hidden states.
        initializer_range: float. Standard deviation of the kernel initializer.

    Call arguments:
        x: `(B, T, D)` hidden states.
        padding_mask: ignored (accepted so every classification head is called alike).
        training: bool, for dropout.

    Example:

    >>> import numpy as np
    >>> head = TokenClassificationHead(num_classes=5)
    >>> head(np.ones((2, 7, 8), "float32")).shape
    TensorShape([2, 7, 5])

    Reference: Devlin et al. 2019, section 4.3 (BERT for named-entity recognition).
    """

    def __init__(
        self,
        num_classes: int,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=self.dtype_policy,
            name="classifier",
        )

    def build(self, input_shape):
        self.classifier.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        x = self.dropout_layer(x, training=training)  # (B, T, D)
        return tf.cast(self.classifier(x), "float32")  # (B, T, C)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
        )
        return config
