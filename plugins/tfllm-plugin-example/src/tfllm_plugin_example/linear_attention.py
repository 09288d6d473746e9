"""Linear attention: the softmax kernel replaced by a positive feature map."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.components.attention.base import Attention, write_cache
from tfllm.components.matrices import FusedMatrices
from tfllm.registry import register


def _feature_map(x):
    # elu(x) + 1 > 0, so every attention weight is positive and the normalizer never vanishes.
    return tf.nn.elu(x) + 1.0


@register("attention", "linear")
class LinearAttention(Attention):
    """Linear attention: `softmax(q k^T) v` becomes `phi(q) (phi(k)^T v)`, `phi = elu + 1`.

    Without a cache the cost is linear in the sequence length: a bidirectional layer sums
    `phi(k)^T v` once; a causal layer runs chunk by chunk (`chunk_size` tokens), exact masked
    attention inside a chunk and a running `(Dh, Dh)` state from the chunks before it, so time
    and memory grow linearly in `T` for a fixed chunk size.

    It subclasses `tfllm.components.attention.base.Attention`, whose contract it keeps: the
    call signature, the positional hooks (`rotate`, `attention_bias`) and the cache protocol.
    Cached decoding follows tfllm's slot-addressed cache protocol (`init_cache` returns
    `(k, v)` of `(B, H, S, Dh)`; slot `p` holds position `p`), which the decode loop needs because
    it prefills a padded buffer and rewrites slots. A cached call therefore costs `O(S)` per new
    token, like softmax attention, and gives the same values as the uncached computation.

    Rotary positional hooks (`rope`, `xpos`) apply to queries and keys before the feature map;
    additive attention biases (`alibi`) cannot be expressed in linear form and raise an error.

    Args:
        hidden_dim: int. Model width (set by the model).
        num_heads: int. Attention heads (set by the model).
        head_dim: int or None. Per-head size; `None` means `hidden_dim // num_heads`.
        causal: bool. Mask future keys (set by the model).
        chunk_size: int. Tokens per chunk in causal training.
        epsilon: float. Added to the normalizer.
        dropout: float. Dropout on the attention output (before the output projection).
        use_bias: bool. Biases on the projections.
        initializer_range: float. Standard deviation of the normal kernel initializer.
        output_initializer_range: float or None. Standard deviation for the output projection.

    Call arguments:
        x: `(B, T, hidden_dim)`.
        positions: optional `(T,)` int32 absolute positions.
        padding_mask: optional `(B, S)`, true for real key tokens.
        cache: optional `(k, v)` from `init_cache`.
        cache_index: int32 scalar, where `x` starts inside the cache.
        positional: optional shared positional encoding (rotation hooks only).
        training: bool.

    Returns:
        `(B, T, hidden_dim)`, or `(output, (k, v))` when a cache was given.

    Example:

    >>> import numpy as np
    >>> attn = LinearAttention(hidden_dim=16, num_heads=4)
    >>> attn(np.ones((2, 5, 16), "float32")).shape
    TensorShape([2, 5, 16])

    Reference: Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention".
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        causal: bool = True,
        chunk_size: int = 64,
        epsilon: float = 1e-6,
        dropout: float = 0.0,
        use_bias: bool = True,
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if head_dim is None:
            if hidden_dim % num_heads:
                raise ValueError(
                    f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; "
                    "set head_dim explicitly"
                )
            head_dim = hidden_dim // num_heads
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.causal = causal
        self.chunk_size = chunk_size
        self.epsilon = epsilon
        self.dropout = dropout
        self.use_bias = use_bias
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range
        init = keras.initializers.RandomNormal(stddev=initializer_range)
        out_std = (
            initializer_range if output_initializer_range is None else output_initializer_range
        )
        self.qkv_proj = keras.layers.Dense(
            3 * num_heads * head_dim,
            use_bias=use_bias,
            kernel_initializer=init,
            dtype=self.dtype_policy,
            name="qkv_proj",
        )
        self.out_proj = keras.layers.Dense(
            hidden_dim,
            use_bias=use_bias,
            kernel_initializer=keras.initializers.RandomNormal(stddev=out_std),
            dtype=self.dtype_policy,
            name="out_proj",
        )
        self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def init_cache(self, batch_size, max_length):
        """An empty cache for `max_length` positions: `(k, v)`, each `(B, H, S, Dh)`."""
        shape = [batch_size, self.num_heads, max_length, self.head_dim]
        return (tf.zeros(shape, self.compute_dtype), tf.zeros(shape, self.compute_dtype))

    def build(self, input_shape):
        self.qkv_proj.build(input_shape)
        self.out_proj.build((None, None, self.num_heads * self.head_dim))
        self.built = True

    def fused_matrices(self):
        """The q, k and v blocks of `qkv_proj` (Muon orthogonalizes each on its own)."""
        width = self.num_heads * self.head_dim
        layout = FusedMatrices(columns=(width, width, width), head_width=self.head_dim)
        return [(self.qkv_proj.kernel, layout)]

    def call(
        self,
        x,
        positions=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        positional=None,
        training=None,
    ):
        h, dh = self.num_heads, self.head_dim
        shape = tf.shape(x)
        b, t = shape[0], shape[1]
        start = tf.constant(0, "int32") if cache_index is None else tf.cast(cache_index, "int32")
        if positions is None:
            positions = start + tf.range(t)  # (T,)

        q, k, v = tf.split(self.qkv_proj(x), 3, axis=-1)  # each (B, T, H*Dh)
        q = tf.reshape(q, [b, t, h, dh])  # (B, T, H, Dh)
        k = tf.reshape(k, [b, t, h, dh])
        v = tf.reshape(v, [b, t, h, dh])
        if self.attention_bias(positional, positions[:1], positions[:1]) is not None:
            raise ValueError(
                f"linear attention cannot apply the additive attention bias of "
                f"{type(positional).__name__}; use a rotary (rope, xpos) or absolute "
                f"positional encoding"
            )
        q, k = self.rotate(q, k, positions, positional)
        q = tf.transpose(q, [0, 2, 1, 3])  # (B, H, T, Dh)
        k = tf.transpose(k, [0, 2, 1, 3])
        v = tf.transpose(v, [0, 2, 1, 3])

        new_cache = None
        if cache is not None:
            k = write_cache(cache[0], k, start)  # (B, H, S, Dh)
            v = write_cache(cache[1], v, start)
            new_cache = (k, v)
        fq = _feature_map(tf.cast(q, "float32"))  # (B, H, T, Dh)
        fk = _feature_map(tf.cast(k, "float32"))  # (B, H, T or S, Dh)
        vf = tf.cast(v, "float32")

        if cache is not None:
            out = self._attend_slots(fq, fk, vf, positions, start + t, padding_mask)
        else:
            if padding_mask is not None:
                # A padded key contributes nothing to any sum.
                fk = fk * tf.cast(padding_mask, "float32")[:, None, :, None]
            if self.causal:
                out = self._causal_chunked(fq, fk, vf)
            else:
                kv = tf.einsum("bhsd,bhse->bhde", fk, vf)  # (B, H, Dh, Dh)
                numerator = tf.einsum("bhtd,bhde->bhte", fq, kv)  # (B, H, T, Dh)
                normalizer = tf.einsum("bhtd,bhd->bht", fq, tf.reduce_sum(fk, axis=2))
                out = numerator / (normalizer[..., None] + self.epsilon)

        out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [b, t, h * dh])  # (B, T, H*Dh)
        out = self.output_dropout(tf.cast(out, self.compute_dtype), training=training)
        out = self.out_proj(out)  # (B, T, D)
        if cache is not None:
            return out, new_cache
        return out

    def _attend_slots(self, fq, fk, v, positions, end, padding_mask):
        # Exact masked form over cache slots: weights phi(q).phi(k) for keys at or before the
        # query (and for bidirectional layers, every written slot).
        weights = tf.einsum("bhtd,bhsd->bhts", fq, fk)  # (B, H, T, S)
        slots = tf.range(tf.shape(fk)[2])  # (S,)
        allowed = slots[None, :] < end  # (1, S)
        if self.causal:
            allowed = allowed & (slots[None, :] <= positions[:, None])  # (T, S)
        allowed = tf.cast(allowed, "float32")[None, None]  # (1, 1, T or 1, S)
        if padding_mask is not None:
            allowed = allowed * tf.cast(padding_mask, "float32")[:, None, None, :]
        weights = weights * allowed
        normalizer = tf.reduce_sum(weights, axis=-1, keepdims=True)  # (B, H, T, 1)
        return tf.matmul(weights, v) / (normalizer + self.epsilon)  # (B, H, T, Dh)

    def _causal_chunked(self, fq, fk, v):
        c = self.chunk_size
        shape = tf.shape(fq)
        b, h, t, dh = shape[0], shape[1], shape[2], shape[3]
        n = (t + c - 1) // c
        pad = [[0, 0], [0, 0], [0, n * c - t], [0, 0]]

        def chunks(x):
            return tf.reshape(tf.pad(x, pad), [b, h, n, c, dh])  # (B, H, N, C, Dh)

        cq, ck, cv = chunks(fq), chunks(fk), chunks(v)
        # State from earlier chunks: exclusive running sums of phi(k)^T v and of phi(k).
        kv = tf.einsum("bhncd,bhnce->bhnde", ck, cv)  # (B, H, N, Dh, Dh)
        kv_before = tf.cumsum(kv, axis=2, exclusive=True)
        k_before = tf.cumsum(tf.reduce_sum(ck, axis=3), axis=2, exclusive=True)  # (B, H, N, Dh)
        inter = tf.einsum("bhncd,bhnde->bhnce", cq, kv_before)  # (B, H, N, C, Dh)
        inter_norm = tf.einsum("bhncd,bhnd->bhnc", cq, k_before)  # (B, H, N, C)
        # Inside a chunk: exact causal masked weights.
        weights = tf.einsum("bhncd,bhnsd->bhncs", cq, ck)  # (B, H, N, C, C)
        weights = weights * tf.linalg.band_part(tf.ones([c, c]), -1, 0)
        intra = tf.einsum("bhncs,bhnse->bhnce", weights, cv)  # (B, H, N, C, Dh)
        normalizer = inter_norm + tf.reduce_sum(weights, axis=-1)  # (B, H, N, C)
        out = (inter + intra) / (normalizer[..., None] + self.epsilon)
        return tf.reshape(out, [b, h, n * c, dh])[:, :, :t]  # (B, H, T, Dh)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            causal=self.causal,
            chunk_size=self.chunk_size,
            epsilon=self.epsilon,
            dropout=self.dropout,
            use_bias=self.use_bias,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
        )
        return config
