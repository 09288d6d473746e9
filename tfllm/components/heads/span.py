"""The extractive question-answering head: where the answer starts and ends in the context."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.registry import register


@register("head", "span")
class SpanHead(keras.layers.Layer):
    """Scores every token as the answer's start and as its end (float32 logits).

    Padded tokens get a very low score, so a softmax over the sequence never picks them.

    Args:
        dropout: float. Dropout on the hidden states.
        initializer_range: float. Standard deviation of the kernel initializer.

    Call arguments:
        x: `(B, T, D)` hidden states.
        padding_mask: optional `(B, T)`, true for real tokens.
        training: bool, for dropout.

    Returns:
        `(B, T, 2)`: start logits `[..., 0]` and end logits `[..., 1]`.

    Example:

    >>> import numpy as np
    >>> head = SpanHead()
    >>> head(np.ones((2, 7, 8), "float32")).shape
    TensorShape([2, 7, 2])

    Reference: Devlin et al. 2019, section 4.2 (BERT on SQuAD).
    """

    def __init__(self, dropout: float = 0.1, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.scorer = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=self.dtype_policy,
            name="scorer",
        )

    def build(self, input_shape):
        self.scorer.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        x = self.dropout_layer(x, training=training)  # (B, T, D)
        logits = tf.cast(self.scorer(x), "float32")  # (B, T, 2)
        if padding_mask is not None:
            real = tf.cast(padding_mask, tf.bool)[:, :, None]  # (B, T, 1)
            logits = tf.where(real, logits, -1e9)
        return logits

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)

    def get_config(self):
        config = super().get_config()
        config.update(dropout=self.dropout, initializer_range=self.initializer_range)
        return config
