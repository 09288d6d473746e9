"""The language-modelling head: hidden states to vocabulary logits."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfllm.components.tokens import flatten_tokens, unflatten_tokens
from tfllm.registry import register


@register("head", "lm")
class LMHead(keras.layers.Layer):
    """Projects hidden states to vocabulary logits, tied or untied to the token embedding.

    Tied (the default, as in GPT-2 and SmolLM2) reuses the token embedding matrix `E` and
    computes `x @ E^T`; untied learns its own `(hidden_dim, vocabulary_size)` kernel. Logits are
    returned in float32 so the loss is stable under mixed precision.

    Args:
        vocabulary_size: int. Number of tokens (set by the model).
        tie_embeddings: bool. Reuse the token embedding.
        use_bias: bool. Learn a per-token bias.
        initializer_range: float. Standard deviation of the untied kernel's initializer.
        softcap: float or None. Soft-cap the logits to `[-softcap, softcap]` with
            `softcap * tanh(logits / softcap)` (Gemma 2; the modded-nanogpt speedrun uses 15-30);
            None leaves them as they are.

    Call arguments:
        x: `(B, T, D)` hidden states.
        token_embedding: the backbone's `keras.layers.Embedding` (required when tied).

    Example:

    >>> import numpy as np
    >>> head = LMHead(vocabulary_size=11, tie_embeddings=False)
    >>> head(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 11])

    >>> capped = LMHead(vocabulary_size=11, tie_embeddings=False, softcap=1.0)
    >>> bool(np.abs(capped(100 * np.ones((1, 2, 8), "float32"))).max() <= 1.0)
    True

    Reference: Press & Wolf 2017, "Using the Output Embedding to Improve Language Models";
    Gemma Team 2024, "Gemma 2" (logit soft-capping).
    """

    def __init__(
        self,
        vocabulary_size: int,
        tie_embeddings: bool = True,
        use_bias: bool = False,
        initializer_range: float = 0.02,
        softcap: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if vocabulary_size <= 0:
            raise ValueError(f"vocabulary_size must be positive, got {vocabulary_size}")
        if softcap is not None and not softcap > 0:
            raise ValueError(f"softcap must be positive or None, got {softcap}")
        self.softcap = softcap
        self.vocabulary_size = vocabulary_size
        self.tie_embeddings = tie_embeddings
        self.use_bias = use_bias
        self.initializer_range = initializer_range

    def build(self, input_shape):
        if not self.tie_embeddings:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(input_shape[-1], self.vocabulary_size),
                initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
            )
        self.bias = (
            self.add_weight(name="bias", shape=(self.vocabulary_size,), initializer="zeros")
            if self.use_bias
            else None
        )
        self.built = True

    def call(self, x, token_embedding=None):
        if self.tie_embeddings:
            if token_embedding is None:
                raise ValueError("a tied LM head needs the backbone's token_embedding")
            # x @ E^T spelled (E @ x^T)^T, without materializing E^T (a (V, D) copy per call,
            # 113 MB for SmolLM2): TensorFlow's CPU MatMul with the table as a transposed right
            # operand ran 2-8x slower from 2 to 256 rows (116 against 15 ms at 2 rows of
            # SmolLM2's 49152 x 576 table, which made a decode step of 2-7 rows 3x a step of 1
            # or 8); XLA compiles both spellings to the same time (docs/efficiency.md).
            table = ops.cast(token_embedding.embeddings, x.dtype)  # (V, D)
            flat = tf.reshape(x, [-1, tf.shape(x)[-1]])  # (B*T, D)
            logits = tf.transpose(tf.matmul(table, flat, transpose_b=True))  # (B*T, V)
            if token_embedding.quantization_mode == "int8":
                # int8 rows with one scale each: x . (q_v / s_v) = (x . q_v) / s_v
                logits = logits / ops.cast(token_embedding.embeddings_scale, logits.dtype)
            out_shape = tf.concat([tf.shape(x)[:-1], [self.vocabulary_size]], axis=0)
            logits = tf.reshape(logits, out_shape)  # (B, T, V)
            logits.set_shape(tf.TensorShape(x.shape[:-1]).concatenate([self.vocabulary_size]))
        else:
            flat = ops.matmul(flatten_tokens(x), ops.cast(self.kernel, x.dtype))  # (B*T, V)
            logits = unflatten_tokens(flat, x)  # (B, T, V)
        logits = ops.cast(logits, "float32")
        if self.bias is not None:
            logits = logits + ops.cast(self.bias, "float32")
        if self.softcap is not None:
            logits = self.softcap * ops.tanh(logits / self.softcap)  # (B, T, V) in (-c, c)
        return logits

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def compute_output_spec(self, x, token_embedding=None):
        return keras.KerasTensor(tuple(x.shape[:-1]) + (self.vocabulary_size,), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            tie_embeddings=self.tie_embeddings,
            use_bias=self.use_bias,
            initializer_range=self.initializer_range,
            softcap=self.softcap,
        )
        return config
