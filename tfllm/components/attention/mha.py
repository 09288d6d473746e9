"""Multi-head attention with grouped key/value heads, sliding windows and a KV cache."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.components import products
from tfllm.components.attention.base import Attention, write_cache
from tfllm.components.matrices import FusedMatrices
from tfllm.components.tokens import flatten_tokens, unflatten_tokens
from tfllm.registry import register

__all__ = ["MultiHeadAttention", "write_cache"]  # write_cache lives in the base module

_MASKED = -1e9


def small_matmul(x, y, adj_y: bool = False):
    """`tf.matmul(x, y, transpose_b=adj_y)` for a decode step's small batched float32 products.

    Where TensorFlow turns oneDNN on, it rewrites `BatchMatMulV2` (what `tf.matmul` builds)
    into `_MklBatchMatMulV2`, whose fixed cost per call is about twice Eigen's at these sizes;
    float32 `BatchMatMulV3` runs Eigen's kernel (docs/efficiency.md). Other dtypes keep
    `tf.matmul`.
    """
    if x.dtype != tf.float32 or y.dtype != tf.float32:
        return tf.matmul(x, y, transpose_b=adj_y)
    return tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=tf.float32, adj_y=adj_y)


def small_softmax(scores):
    """Softmax over the last axis of `scores`, written as `exp(s - max) / sum`.

    For a decode step's few score rows: where TensorFlow turns oneDNN on, `tf.nn.softmax`
    runs as `_MklSoftmax`, whose fixed cost per call is about twice these five Eigen ops' at
    such sizes (docs/efficiency.md). Equal to `tf.nn.softmax` within float32 rounding; a row
    that is all `_MASKED` comes out uniform, as it does there.
    """
    e = tf.exp(scores - tf.reduce_max(scores, axis=-1, keepdims=True))
    return e / tf.reduce_sum(e, axis=-1, keepdims=True)


def _rms(x, epsilon: float = 1e-6):
    """`x` scaled to unit root-mean-square over its last axis (no learned scale)."""
    ms = tf.reduce_mean(tf.square(tf.cast(x, tf.float32)), axis=-1, keepdims=True)
    return tf.cast(tf.cast(x, tf.float32) * tf.math.rsqrt(ms + epsilon), x.dtype)


@register("attention", "mha")
class MultiHeadAttention(Attention):
    """Multi-head attention; `num_kv_heads` makes it grouped-query or multi-query.

    Queries have `num_heads` heads; keys and values have `num_kv_heads` heads, each shared by
    `num_heads // num_kv_heads` query heads (GQA; `num_kv_heads=1` is MQA). A `window` limits
    each query to the `window` most recent keys (itself included). Causal masking is on for
    decoders and off for encoders. With `cache=(k, v)` the layer appends the new keys/values at
    `cache_index` and attends over the cache, for incremental decoding.

    With `cross=True` it is cross-attention (an encoder-decoder's decoder reading the encoder):
    queries come from `x`, keys and values from `context` (or from `context_kv`, the projection
    `project_context(context)` made once before decoding); no causal mask, window or positional
    hook applies, and `context_mask` hides padded encoder tokens.

    Args:
        hidden_dim: int. Model width (set by the model).
        num_heads: int. Query heads (set by the model).
        num_kv_heads: int or None. Key/value heads; `None` means `num_heads`.
        head_dim: int or None. Per-head size; `None` means `hidden_dim // num_heads`.
        window: int or None. Sliding-window size in tokens; `None` for full attention.
        causal: bool. Mask future keys.
        dropout: float. Dropout on the attention probabilities.
        use_bias: bool. Biases on the projections.
        initializer_range: float. Standard deviation of the normal kernel initializer.
        output_initializer_range: float or None. Standard deviation for the output projection
            (set by the model when it scales residual-branch initialization); None uses
            `initializer_range`.
        cross: bool. Cross-attention (separate query and key/value projections; set by the
            model for an encoder-decoder's cross-attention layers).
        qk_norm: bool. Scale each head's queries and keys to unit RMS before the positional
            rotation (no learned scale; self-attention), which bounds the attention logits
            (Dehghani et al. 2023; the modded-nanogpt speedrun).

    Call arguments:
        x: `(B, T, hidden_dim)` inputs.
        positions: optional `(T,)` int32 positions of `x` (default `cache_index + 0..T-1`).
        padding_mask: optional `(B, S)` bool/int, true for real key tokens.
        cache: optional tuple `(k, v)`, each `(B, num_kv_heads, S, head_dim)`, as made by
            `init_cache(batch_size, S)`; slot `p` holds position `p`.
        cache_index: int32 scalar, where `x` starts inside the cache.
        positional: optional shared `PositionalEncoding` whose rotation and bias hooks apply.
        context: cross only: `(B, S, hidden_dim)` encoder states to attend to.
        context_kv: cross only: `project_context(context)`, instead of `context`.
        context_mask: cross only: optional `(B, S)`, true for real encoder tokens.
        training: bool, for dropout.
        value_embedding: self-attention only: optional `(B, T, num_kv_heads * head_dim)` added
            to the values of `x` (a backbone's `value_embeddings`).

    Returns:
        `(B, T, hidden_dim)`, or `(output, (k, v))` when a cache was given.

    Example:

    >>> import numpy as np
    >>> attn = MultiHeadAttention(hidden_dim=16, num_heads=4, num_kv_heads=2)
    >>> attn(np.ones((2, 5, 16), "float32")).shape
    TensorShape([2, 5, 16])

    Reference: Vaswani et al. 2017; Shazeer 2019 (MQA); Ainslie et al. 2023 (GQA);
    Beltagy et al. 2020 (sliding windows).
    """

    supports_cross = True
    supports_value_embeddings = True

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        window: int | None = None,
        causal: bool = True,
        dropout: float = 0.0,
        use_bias: bool = True,
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        cross: bool = False,
        qk_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads <= 0:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(
                f"num_kv_heads must be a positive divisor of num_heads={num_heads}, "
                f"got {num_kv_heads}"
            )
        if head_dim is None:
            if hidden_dim % num_heads:
                raise ValueError(
                    f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; "
                    "set head_dim explicitly"
                )
            head_dim = hidden_dim // num_heads
        if window is not None and window <= 0:
            raise ValueError(f"window must be a positive number of tokens or None, got {window}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.window = window
        self.causal = causal
        self.dropout = dropout
        self.use_bias = use_bias
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range
        self.cross = cross
        self.qk_norm = qk_norm
        out_init = keras.initializers.RandomNormal(
            stddev=initializer_range
            if output_initializer_range is None
            else output_initializer_range
        )
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        if cross:  # queries from x, keys and values from the encoder's states
            self.q_proj = products.Projection(
                num_heads * head_dim,
                use_bias=use_bias,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name="q_proj",
            )
            self.kv_proj = products.Projection(
                2 * num_kv_heads * head_dim,
                use_bias=use_bias,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name="kv_proj",
            )
        else:
            # One fused projection for q, k and v: a single matmul is faster on CPU.
            self.qkv_proj = products.Projection(
                (num_heads + 2 * num_kv_heads) * head_dim,
                use_bias=use_bias,
                kernel_initializer=init,
                dtype=self.dtype_policy,
                name="qkv_proj",
            )
        self.out_proj = products.Projection(
            hidden_dim,
            use_bias=use_bias,
            kernel_initializer=out_init,
            dtype=self.dtype_policy,
            name="out_proj",
        )
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        # Set to keep the last eager call's probabilities in `last_attention` (not config).
        self.capture_attention = False
        self.last_attention = None

    def init_cache(self, batch_size, max_length):
        """An empty cache for `max_length` positions: `(k, v)`, each `(B, Hkv, S, Dh)`."""
        if self.cross:
            raise ValueError("cross-attention has no self-attention cache: use project_context")
        shape = [batch_size, self.num_kv_heads, max_length, self.head_dim]
        return (tf.zeros(shape, self.compute_dtype), tf.zeros(shape, self.compute_dtype))

    def project_context(self, context):
        """Keys and values of the encoder states `(B, S, D)`: `(k, v)`, each `(B, Hkv, S, Dh)`.
        Computed once per input and reused by every decoding step."""
        if not self.cross:
            raise ValueError("project_context is for cross-attention (cross=True)")
        kvh, dh = self.num_kv_heads, self.head_dim
        shape = tf.shape(context)
        kv = self.kv_proj(flatten_tokens(context))  # (B*S, 2 Hkv Dh)
        kv = tf.reshape(kv, [shape[0], shape[1], 2, kvh, dh])
        kv = tf.transpose(kv, [2, 0, 3, 1, 4])  # (2, B, Hkv, S, Dh)
        return kv[0], kv[1]

    def fused_matrices(self):
        """The q, k and v blocks of the fused projection (k and v for cross-attention), each
        made of heads."""
        dh = self.head_dim
        q, kv = self.num_heads * dh, self.num_kv_heads * dh
        if self.cross:
            return [(self.kv_proj.kernel, FusedMatrices(columns=(kv, kv), head_width=dh))]
        return [(self.qkv_proj.kernel, FusedMatrices(columns=(q, kv, kv), head_width=dh))]

    def build(self, input_shape):
        if self.cross:
            self.q_proj.build(input_shape)
            self.kv_proj.build(input_shape)
        else:
            self.qkv_proj.build(input_shape)
        self.out_proj.build((None, None, self.num_heads * self.head_dim))
        self.built = True

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
        value_embedding=None,
    ):
        if self.cross:
            if context_kv is None:
                if context is None:
                    raise ValueError("cross-attention needs `context` or `context_kv`")
                context_kv = self.project_context(context)
            return self._attend_context(x, context_kv, context_mask, training)
        if context is not None or context_kv is not None:
            raise ValueError("this attention layer has cross=False: it cannot take a context")
        t = tf.shape(x)[1]
        start = tf.constant(0, "int32") if cache_index is None else tf.cast(cache_index, "int32")
        if positions is None:
            positions = start + tf.range(t)  # (T,)

        q, k, v = self.project(x, positions, positional, value_embedding)  # (B, T, heads, Dh)
        q = tf.transpose(q, [0, 2, 1, 3])  # (B, H, T, Dh)
        k = tf.transpose(k, [0, 2, 1, 3])  # (B, Hkv, T, Dh)
        v = tf.transpose(v, [0, 2, 1, 3])

        if cache is not None:
            k = write_cache(cache[0], k, start)  # (B, Hkv, S, Dh)
            v = write_cache(cache[1], v, start)
            key_positions = tf.range(tf.shape(k)[2])  # (S,)
            valid_keys = key_positions < start + t
        else:
            key_positions = positions
            valid_keys = None
        scores = self._scores(q, k)  # (B, H, T, S)

        bias = self.attention_bias(positional, positions, key_positions)
        if bias is not None:
            scores = scores + bias  # (H or 1, T, S) broadcast

        allowed = self.allowed(positions, key_positions)  # (T, S)
        if valid_keys is not None:
            allowed = allowed & valid_keys[None, :]
        allowed = allowed[None, None]  # (1, 1, T, S)
        if padding_mask is not None:
            allowed = allowed & tf.cast(padding_mask, tf.bool)[:, None, None, :]  # (B, 1, T, S)
        scores = tf.where(allowed, scores, _MASKED)

        out = self._mix_values(scores, v, training)  # (B, T, D)
        if cache is not None:
            return out, (k, v)
        return out

    def project(self, x, positions, positional=None, value_embedding=None):
        """Queries `(B, T, H, Dh)`, keys and values `(B, T, Hkv, Dh)` of `x` `(B, T, D)`, with
        the positional rotation applied at `positions` `(T,)` and `value_embedding`
        `(B, T, Hkv * Dh)`, when given, added to the values."""
        h, kvh, dh = self.num_heads, self.num_kv_heads, self.head_dim
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        qkv = self.qkv_proj(flatten_tokens(x))  # (B*T, (H + 2 Hkv) * Dh): one 2-D matmul
        q, k, v = tf.split(qkv, [h * dh, kvh * dh, kvh * dh], axis=-1)
        q = tf.reshape(q, [b, t, h, dh])  # (B, T, H, Dh)
        k = tf.reshape(k, [b, t, kvh, dh])  # (B, T, Hkv, Dh)
        if value_embedding is not None:
            v = v + tf.cast(flatten_tokens(value_embedding), v.dtype)  # (B*T, Hkv * Dh)
        v = tf.reshape(v, [b, t, kvh, dh])
        if self.qk_norm:  # each head's query and key to unit RMS, before the rotation
            q, k = _rms(q), _rms(k)
        q, k = self.rotate(q, k, positions, positional)
        return q, k, v

    def allowed(self, query_positions, key_positions):
        """Which keys each query may see: `(Tq,)` and `(Tk,)` positions to `(Tq, Tk)` bool
        (causal and window rules; padding and cache validity are applied by the caller)."""
        distance = query_positions[:, None] - key_positions[None, :]  # (Tq, Tk)
        allowed = tf.ones_like(distance, dtype=tf.bool)
        if self.causal:
            allowed = allowed & (distance >= 0)
        if self.window is not None:
            allowed = allowed & (distance < self.window)
            if not self.causal:
                allowed = allowed & (distance > -self.window)
        return allowed

    def _scores(self, q, k):
        """Scaled logits `(B, H, T, S)` (float32) of queries `(B, H, T, Dh)` against keys
        `(B, Hkv, S, Dh)`; query heads are grouped per kv head: head = kv_head * groups + g.

        A decode step (one query position) multiplies one query row per product, the key
        block broadcast over the group: TensorFlow's CPU `BatchMatMul` runs products of more
        than 128×128 rows×depth×columns one at a time across threads, which at a decode step's
        shapes (3 rows, 64 deep, over 85 keys) made attention 3–4× slower than these one-row
        products, which it shares out whole among the threads (docs/efficiency.md).
        """
        h, kvh, dh = self.num_heads, self.num_kv_heads, self.head_dim
        b, t, s = tf.shape(q)[0], tf.shape(q)[2], tf.shape(k)[2]
        if q.shape[2] == 1:  # a decode step: one query row per product
            qg = tf.reshape(q, [b, kvh, h // kvh, 1, dh])  # (B, Hkv, G, 1, Dh)
            scores = small_matmul(qg, k[:, :, None], adj_y=True)  # (B, Hkv, G, 1, S)
        else:
            qg = tf.reshape(q, [b, kvh, (h // kvh) * t, dh])  # (B, Hkv, G*T, Dh)
            scores = tf.matmul(qg, k, transpose_b=True)  # (B, Hkv, G*T, S)
        scores = tf.reshape(scores, [b, h, t, s])  # (B, H, T, S)
        return tf.cast(scores, "float32") * (dh**-0.5)

    def _mix_values(self, scores, v, training):
        """Softmax of masked `scores` `(B, H, T, S)` over values `(B, Hkv, S, Dh)`, projected
        back to `(B, T, hidden_dim)`."""
        attended = self._attend_values(scores, v, training)  # (B, T, H*Dh)
        return unflatten_tokens(self.out_proj(flatten_tokens(attended)), attended)  # (B, T, D)

    def _attend_values(self, scores, v, training):
        """Softmax of masked `scores` `(B, H, T, S)` over values `(B, Hkv, S, Dh)`: the heads'
        outputs `(B, T, H * Dh)`, before the output projection."""
        h, kvh, dh = self.num_heads, self.num_kv_heads, self.head_dim
        shape = tf.shape(scores)
        b, t, s = shape[0], shape[2], shape[3]
        # A decode step (one query position) runs small_softmax and small_matmul, and
        # multiplies one query row per product, as in _scores.
        decode_step = scores.shape[2] == 1
        if decode_step:
            probs = small_softmax(scores)  # (B, H, 1, S) float32
        else:
            probs = tf.nn.softmax(scores, axis=-1)  # (B, H, T, S) float32
        if self.capture_attention:  # eager inspection only (`tfllm attention`)
            self.last_attention = probs
        probs = self.attention_dropout(tf.cast(probs, self.compute_dtype), training=training)
        v = tf.cast(v, probs.dtype)
        if decode_step:
            probs = tf.reshape(probs, [b, kvh, h // kvh, 1, s])  # (B, Hkv, G, 1, S)
            out = small_matmul(probs, v[:, :, None])  # (B, Hkv, G, 1, Dh)
        else:
            probs = tf.reshape(probs, [b, kvh, (h // kvh) * t, s])  # (B, Hkv, G*T, S)
            out = tf.matmul(probs, v)  # (B, Hkv, G*T, Dh)
        out = tf.reshape(out, [b, h, t, dh])  # (B, H, T, Dh)
        return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [b, t, h * dh])  # (B, T, H*Dh)

    def _attend_context(self, x, context_kv, context_mask, training):
        h, dh = self.num_heads, self.head_dim
        shape = tf.shape(x)
        b, t = shape[0], shape[1]
        q = tf.reshape(self.q_proj(flatten_tokens(x)), [b, t, h, dh])  # (B, T, H, Dh)
        q = tf.transpose(q, [0, 2, 1, 3])  # (B, H, T, Dh)
        k, v = context_kv  # (B, Hkv, S, Dh) each
        scores = self._scores(q, k)  # (B, H, T, S)
        if context_mask is not None:
            allowed = tf.cast(context_mask, tf.bool)[:, None, None, :]  # (B, 1, 1, S)
            scores = tf.where(allowed, scores, _MASKED)
        return self._mix_values(scores, v, training)  # (B, T, D)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            window=self.window,
            causal=self.causal,
            dropout=self.dropout,
            use_bias=self.use_bias,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
            cross=self.cross,
            qk_norm=self.qk_norm,
        )
        return config
