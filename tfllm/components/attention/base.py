"""The contract every attention layer follows."""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # XLA-context check, as Keras does


def write_cache(cache, update, start):
    """Write `update` `(B, Hkv, T, Dh)` into `cache` `(B, Hkv, S, Dh)` at time steps `start..`.

    In graph mode (what exports run on TF Serving without XLA) one core op,
    `TensorStridedSliceUpdate`, in place of a scatter whose indices took some thirty ops per
    layer and decode step. XLA needs that op's bounds at compile time, so inside an XLA
    compilation the scatter stays (XLA fuses it into one update).
    """
    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        shape = tf.shape(update)
        b, h, t = shape[0], shape[1], shape[2]
        bi, hi, ti = tf.meshgrid(tf.range(b), tf.range(h), start + tf.range(t), indexing="ij")
        indices = tf.stack([bi, hi, ti], axis=-1)  # (B, Hkv, T, 3)
        return tf.tensor_scatter_nd_update(cache, indices, tf.cast(update, cache.dtype))
    t = tf.shape(update)[2]
    zero = tf.constant(0, tf.int32)
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=cache,
        begin=tf.stack([zero, zero, start, zero]),
        end=tf.stack([zero, zero, start + t, zero]),
        strides=tf.ones([4], tf.int32),
        value=tf.cast(update, cache.dtype),
        begin_mask=0b1011,  # every batch row, head and channel: only time is sliced
        end_mask=0b1011,
    )


class Attention(keras.layers.Layer):
    """Base class for attention layers (registry kind `attention`).

    The backbone builds each attention layer with the arguments its constructor names among
    `hidden_dim`, `num_heads`, `head_dim`, `max_sequence_length`, `initializer_range`,
    `output_initializer_range` and `causal` (plus the spec's own), and calls it as

        call(x, positions=None, padding_mask=None, cache=None, cache_index=None,
             positional=None, context=None, context_kv=None, context_mask=None, training=None)

    with `x` `(B, T, hidden_dim)`, `positions` the `(T,)` absolute positions of `x` (default
    `cache_index + 0..T-1`) and `padding_mask` `(B, S)` true for real keys. It returns
    `(B, T, hidden_dim)`.

    - **Cache protocol.** `init_cache(batch_size, max_length)` returns an empty cache (any
      nest of tensors) whose slot `p` holds position `p`. Called with `cache=` and
      `cache_index=i`, the layer writes the positions `i..i+T-1` of `x` into it and returns
      `(output, new_cache)`; cached decoding must equal recomputation over the whole sequence
      (`tfllm.testing.properties` checks it). `write_cache` is the export-safe write.
    - **Positional hooks.** The backbone's shared `PositionalEncoding` comes as `positional`:
      `rotate(q, k, positions, positional)` applies its rotation to queries and keys, and
      `attention_bias(positional, query_positions, key_positions)` its additive logit bias
      (`None` when it has none).
    - **Cross-attention.** Classes with `supports_cross = True` take `cross=True` and attend
      to `context` (or `context_kv = project_context(context)`, computed once per input) under
      `context_mask`.
    - **Value embeddings.** Classes with `supports_value_embeddings = True` also take
      `value_embedding` `(B, T, num_kv_heads * head_dim)` (a backbone's `value_embeddings`
      option: a token-indexed table) and add it to the values of `x` before they are cached.

    Args:
        **kwargs: Passed to `keras.layers.Layer`.
    """

    # Whether the constructor takes `cross=True` (an encoder-decoder's cross-attention).
    supports_cross: bool = False
    # Whether `call` takes `value_embedding=` (added to the values; see above).
    supports_value_embeddings: bool = False
    hidden_dim: int

    def call(
        self,
        x,
        positions=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        positional=None,
        context=None,
        context_kv=None,
        context_mask=None,
        training=None,
    ):
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    def init_cache(self, batch_size, max_length):
        """An empty cache for `max_length` positions."""
        raise NotImplementedError(
            f"{type(self).__name__} has no cache: it cannot decode incrementally"
        )

    def project_context(self, context):
        """Keys and values of the encoder states `(B, S, D)`, for cross-attention."""
        raise NotImplementedError(f"{type(self).__name__} has no cross-attention")

    @staticmethod
    def rotate(q, k, positions, positional=None):
        """Queries and keys with the positional encoding's rotation at `positions` `(T,)`."""
        if positional is None:
            return q, k
        return positional.rotate_query_key(q, k, positions)

    @staticmethod
    def attention_bias(positional, query_positions, key_positions):
        """The positional encoding's additive bias on the logits, `(H or 1, Tq, Tk)` float32,
        or None."""
        if positional is None:
            return None
        bias = positional.attention_bias(query_positions, key_positions)
        return None if bias is None else tf.cast(bias, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)
