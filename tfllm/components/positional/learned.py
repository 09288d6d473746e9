"""Trained absolute position embeddings (GPT-2, BERT)."""

from __future__ import annotations

import keras
from keras import ops

from tfllm.components.positional.base import PositionalEncoding
from tfllm.registry import register


@register("positional", "learned")
class LearnedPositionalEncoding(PositionalEncoding):
    """Adds a trained embedding per absolute position, as GPT-2 and BERT do.

    Args:
        hidden_dim: int. Width of the embeddings (set by the model).
        max_sequence_length: int. Number of positions with an embedding (set by the model).
        initializer_range: float. Standard deviation of the normal initializer.

    Call arguments:
        x: `(B, T, hidden_dim)` embeddings.
        positions: optional `(T,)` int32 absolute positions, each `< max_sequence_length`.

    Example:

    >>> import numpy as np
    >>> layer = LearnedPositionalEncoding(hidden_dim=8, max_sequence_length=16)
    >>> layer(np.zeros((2, 5, 8), "float32")).shape
    TensorShape([2, 5, 8])

    Reference: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners".
    """

    def __init__(
        self,
        hidden_dim: int,
        max_sequence_length: int,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        if max_sequence_length <= 0:
            raise ValueError(f"max_sequence_length must be positive, got {max_sequence_length}")
        self.hidden_dim = hidden_dim
        self.max_sequence_length = max_sequence_length
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.max_sequence_length, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        self.built = True

    def embed(self, x, positions):
        # x: (B, T, D); positions: (T,)
        table = ops.take(self.position_embeddings, positions, axis=0)  # (T, D)
        return x + ops.cast(table, x.dtype)[None]

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            max_sequence_length=self.max_sequence_length,
            initializer_range=self.initializer_range,
        )
        return config
