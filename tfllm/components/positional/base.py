"""The contract every positional encoding follows."""

from __future__ import annotations

import keras


class PositionalEncoding(keras.layers.Layer):
    """Base class for positional encodings (registry kind `positional`).

    A backbone owns one positional layer and shares it with every attention layer. It may act in
    three places, each a hook with an identity default:

    - `embed(x, positions)`: added to the token embeddings (absolute encodings);
    - `rotate_query(q, positions)` / `rotate_key(k, positions)`: applied to queries and keys
      before the dot product (rotary encodings; keys default to the query rotation);
      `rotate_query_key(q, k, positions)`, which attention calls, applies both (an encoding may
      override it to compute its angles once for the pair);
    - `attention_bias(query_positions, key_positions)`: an additive bias `(H or 1, Tq, Tk)` on
      the attention logits (ALiBi, relative position biases), or `None`.

    `positions` are absolute int32 positions `(T,)`, so the same code serves training (0..T-1)
    and cached decoding (cache_index..cache_index+T-1). Calling the layer applies `embed`.

    Args:
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def embed(self, x, positions):
        return x

    def rotate_query(self, q, positions):
        return q

    def rotate_key(self, k, positions):
        return self.rotate_query(k, positions)

    def rotate_query_key(self, q, k, positions):
        return self.rotate_query(q, positions), self.rotate_key(k, positions)

    def attention_bias(self, query_positions, key_positions):
        return None

    def call(self, x, positions=None):
        # x: (B, T, D)
        if positions is None:
            positions = keras.ops.arange(keras.ops.shape(x)[1], dtype="int32")
        return self.embed(x, positions)

    def compute_output_shape(self, input_shape):
        return input_shape
