"""Pooling a sequence of hidden states into one vector per row."""

from __future__ import annotations

import tensorflow as tf

POOLINGS = ("mean", "cls", "last_token")


def pool(hidden, padding_mask, pooling: str):
    """Pool `(B, T, D)` hidden states over real tokens into `(B, D)`.

    `mean` averages the tokens `padding_mask` marks real; `cls` takes the first token;
    `last_token` takes each row's last real token (for decoders, whose last token has seen all).
    """
    if padding_mask is None:
        padding_mask = tf.ones(tf.shape(hidden)[:2], tf.bool)
    mask = tf.cast(padding_mask, hidden.dtype)[:, :, None]  # (B, T, 1)
    if pooling == "mean":
        total = tf.reduce_sum(hidden * mask, axis=1)  # (B, D)
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)  # (B, 1)
        return total / count
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        last = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1) - 1  # (B,)
        return tf.gather(hidden, tf.maximum(last, 0), axis=1, batch_dims=1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
