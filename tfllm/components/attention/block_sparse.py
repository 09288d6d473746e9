"""Block-sparse attention: local blocks plus global blocks, linear in sequence length."""

from __future__ import annotations

import tensorflow as tf

from tfllm.components.attention.mha import _MASKED, MultiHeadAttention
from tfllm.registry import register


@register("attention", "block_sparse")
class BlockSparseAttention(MultiHeadAttention):
    """Attention over a fixed block pattern, with memory and time linear in sequence length.

    The sequence is cut into blocks of `block_size` tokens. A query in block `n` sees the
    keys of blocks `n - local_blocks .. n` (and `.. n + local_blocks` when bidirectional), and
    every key in the first `global_blocks` blocks (attention sinks / global tokens; when
    bidirectional those blocks' queries also see every key). `window` further limits the local
    band to the `window` most recent keys, so `block_size=w, local_blocks=1, window=w` is exact
    sliding-window attention (Mistral, Longformer's local part) at `O(T * 2w)` instead of the
    `O(T^2)` of `mha` with `window`. With `global_blocks` it is the local+global pattern of
    Longformer/BigBird (without random blocks) and of StreamingLLM's attention sinks.

    Calls without a cache (training, scoring, encoders) treat the tokens as positions
    `0..T-1` and use the blocked computation: per query block, scores
    against `(local_blocks + 1) * block_size` local keys and `global_blocks * block_size` global
    keys, never a `(T, T)` matrix. KV-cached decoding writes the same cache as `mha` and masks
    the cache with the same pattern (one new query costs `O(S)`, as in any attention).

    Positional biases (ALiBi, T5's relative bias) must depend only on `query - key`, which
    both built-in ones do: the local band's bias is then the same for every block.

    Args:
        block_size: int. Tokens per block.
        local_blocks: int. Neighbouring blocks each query block sees on each side it may look.
        global_blocks: int. Leading blocks every query sees.
        window: int or None. Sliding-window limit inside the local band (needs
            `window - 1 <= local_blocks * block_size`).
        (other arguments as in `mha`)

    Call arguments: as in `mha`.

    Example:

    >>> import numpy as np
    >>> attn = BlockSparseAttention(hidden_dim=16, num_heads=4, block_size=4, global_blocks=1)
    >>> attn(np.ones((2, 10, 16), "float32")).shape
    TensorShape([2, 10, 16])

    Reference: Child et al. 2019 (Sparse Transformers); Beltagy et al. 2020 (Longformer);
    Zaheer et al. 2020 (BigBird); Xiao et al. 2023 (attention sinks).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        block_size: int = 64,
        local_blocks: int = 1,
        global_blocks: int = 0,
        window: int | None = None,
        **kwargs,
    ):
        if kwargs.get("cross"):
            raise ValueError("block_sparse is self-attention only: use mha for cross=True")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if local_blocks < 0 or global_blocks < 0:
            raise ValueError(
                f"local_blocks and global_blocks must be >= 0, got {local_blocks} and "
                f"{global_blocks}"
            )
        if window is not None and window - 1 > local_blocks * block_size:
            raise ValueError(
                f"window={window} reaches past the local band of local_blocks * block_size = "
                f"{local_blocks * block_size} tokens; raise local_blocks or block_size"
            )
        super().__init__(hidden_dim, num_heads, window=window, **kwargs)
        self.block_size = block_size
        self.local_blocks = local_blocks
        self.global_blocks = global_blocks

    def allowed(self, query_positions, key_positions):
        distance = query_positions[:, None] - key_positions[None, :]  # (Tq, Tk)
        qb = (query_positions // self.block_size)[:, None]
        kb = (key_positions // self.block_size)[None, :]
        band = tf.abs(qb - kb) <= self.local_blocks
        if self.window is not None:
            band &= tf.abs(distance) < self.window
        allowed = band | (kb < self.global_blocks)
        if not self.causal:
            allowed |= qb < self.global_blocks
        else:
            allowed &= distance >= 0
        return allowed

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
        if cache is not None or self.capture_attention:
            return super().call(
                x,
                positions=positions,
                padding_mask=padding_mask,
                cache=cache,
                cache_index=cache_index,
                positional=positional,
                context=context,
                context_kv=context_kv,
                training=training,
                value_embedding=value_embedding,
            )
        if context is not None or context_kv is not None:
            raise ValueError("block_sparse attention cannot take a context")
        return self._blocked(x, positions, padding_mask, positional, training, value_embedding)

    def _blocked(self, x, positions, padding_mask, positional, training, value_embedding=None):
        h, kvh, dh = self.num_heads, self.num_kv_heads, self.head_dim
        g = h // kvh
        bs, lb, gb = self.block_size, self.local_blocks, self.global_blocks
        shape = tf.shape(x)
        b, t = shape[0], shape[1]
        n = (t + bs - 1) // bs  # blocks
        tp = n * bs
        # Without a cache the tokens are positions 0..T-1 (what backbones pass); the positions
        # given are what rotary encodings see.
        if positions is None:
            positions = tf.range(t)

        unpadded = self.project(x, positions, positional, value_embedding)  # (B, T, heads, Dh)
        pad = [[0, 0], [0, tp - t], [0, 0], [0, 0]]
        q, k, v = (tf.pad(a, pad) for a in unpadded)  # (B, Tp, heads, Dh)
        q = tf.reshape(q, [b, n, bs, kvh, g, dh])
        q = tf.transpose(q, [0, 3, 4, 1, 2, 5])  # (B, Hkv, G, N, Bs, Dh)
        k = tf.transpose(k, [0, 2, 1, 3])  # (B, Hkv, Tp, Dh)
        v = tf.transpose(v, [0, 2, 1, 3])

        # Local band: for each query block, the key blocks at these offsets.
        offsets = tf.range(-lb, 1 if self.causal else lb + 1)  # (W,)
        width = tf.shape(offsets)[0]
        block_ids = tf.range(n)[:, None] + offsets[None, :]  # (N, W)
        in_range = (block_ids >= gb) & (block_ids < n)  # global blocks are counted once
        gather_ids = tf.clip_by_value(block_ids, 0, n - 1)
        k_blocks = tf.reshape(k, [b, kvh, n, bs, dh])
        v_blocks = tf.reshape(v, [b, kvh, n, bs, dh])
        k_local = tf.reshape(tf.gather(k_blocks, gather_ids, axis=2), [b, kvh, n, -1, dh])
        v_local = tf.reshape(tf.gather(v_blocks, gather_ids, axis=2), [b, kvh, n, -1, dh])
        # (B, Hkv, N, W*Bs, Dh)

        q_pos = tf.reshape(tf.range(tp), [n, bs])  # (N, Bs)
        local_pos = block_ids[:, :, None] * bs + tf.range(bs)[None, None, :]  # (N, W, Bs)
        local_pos = tf.reshape(local_pos, [n, -1])  # (N, W*Bs)
        local_ok = tf.reshape(tf.repeat(in_range, bs, axis=1), [n, 1, -1])  # (N, 1, W*Bs)
        distance = q_pos[:, :, None] - local_pos[:, None, :]  # (N, Bs, W*Bs)
        local_ok &= local_pos[:, None, :] < t
        if self.causal:
            local_ok &= distance >= 0
        if self.window is not None:
            local_ok &= tf.abs(distance) < self.window
        local_scores = tf.einsum("bhgnqd,bhnkd->bhgnqk", q, k_local)  # (B, Hkv, G, N, Bs, W*Bs)
        local_scores = tf.cast(local_scores, "float32") * (dh**-0.5)
        # Translation invariance: the band's bias is one (H, Bs, W*Bs) block for all n.
        base = lb * bs
        rel_q = base + tf.range(bs)
        rel_k = base + tf.reshape(offsets[:, None] * bs + tf.range(bs)[None, :], [-1])
        bias = self.attention_bias(positional, rel_q, rel_k)
        if bias is not None:
            local_scores += self._grouped_bias(bias)[:, :, None]  # over N
        local_mask = local_ok[None, None, None]  # (1, 1, 1, N, Bs, W*Bs)
        if padding_mask is not None:
            keys_ok = tf.pad(tf.cast(padding_mask, tf.bool), [[0, 0], [0, tp - t]])  # (B, Tp)
            keys_ok = tf.reshape(keys_ok, [b, n, bs])
            local_keys_ok = tf.reshape(tf.gather(keys_ok, gather_ids, axis=1), [b, n, -1])
            local_mask = local_mask & local_keys_ok[:, None, None, :, None, :]
        scores = [tf.where(local_mask, local_scores, _MASKED)]

        if gb:
            global_len = tf.minimum(gb * bs, tp)
            k_global, v_global = k[:, :, :global_len], v[:, :, :global_len]  # (B, Hkv, Gl, Dh)
            global_pos = tf.range(global_len)
            global_scores = tf.einsum("bhgnqd,bhkd->bhgnqk", q, k_global)
            global_scores = tf.cast(global_scores, "float32") * (dh**-0.5)
            bias = self.attention_bias(positional, tf.range(tp), global_pos)  # (H|1, Tp, Gl)
            if bias is not None:
                bias = self._grouped_bias(bias)  # (Hkv|1, G|1, Tp, Gl)
                global_scores += tf.reshape(
                    bias, tf.concat([tf.shape(bias)[:2], [n, bs, global_len]], 0)
                )
            global_ok = global_pos[None, None, :] < t  # (1, 1, Gl)
            if self.causal:
                global_ok &= q_pos[:, :, None] >= global_pos[None, None, :]
            global_mask = global_ok[None, None, None]
            if padding_mask is not None:
                global_keys_ok = tf.cast(padding_mask, tf.bool)[:, :global_len]
                global_mask = global_mask & global_keys_ok[:, None, None, None, None, :]
            scores.insert(0, tf.where(global_mask, global_scores, _MASKED))

        scores = tf.concat(scores, axis=-1)  # (B, Hkv, G, N, Bs, [Gl +] W*Bs)
        # oneDNN's softmax takes at most 5 dimensions: flatten the leading ones.
        score_shape = tf.shape(scores)
        probs = tf.nn.softmax(tf.reshape(scores, [-1, score_shape[-1]]), axis=-1)
        probs = tf.reshape(probs, score_shape)
        probs = self.attention_dropout(tf.cast(probs, self.compute_dtype), training=training)
        local_len = width * bs
        out = tf.einsum("bhgnqk,bhnkd->bhgnqd", probs[..., -local_len:], v_local)
        if gb:
            out += tf.einsum("bhgnqk,bhkd->bhgnqd", probs[..., :-local_len], v_global)
        out = tf.transpose(out, [0, 3, 4, 1, 2, 5])  # (B, N, Bs, Hkv, G, Dh)
        out = tf.reshape(out, [b, tp, h * dh])[:, :t]  # (B, T, H*Dh)
        if gb and not self.causal:
            # Global queries see every key: their rows come from full attention (Gl x T).
            global_len = tf.minimum(gb * bs, t)
            rows = self._global_rows(*unpadded, global_len, padding_mask, positional, training)
            out = tf.concat([rows, out[:, global_len:]], axis=1)
        return self.out_proj(out)  # (B, T, D)

    def _global_rows(self, q, k, v, global_len, padding_mask, positional, training):
        """Outputs `(B, Gl, H*Dh)` (before the output projection) of the global queries
        against every key; `q`, `k`, `v` are the rotated `(B, T, heads, Dh)` projections."""
        positions = tf.range(tf.shape(k)[1])
        q = tf.transpose(q[:, :global_len], [0, 2, 1, 3])  # (B, H, Gl, Dh)
        k = tf.transpose(k, [0, 2, 1, 3])  # (B, Hkv, T, Dh)
        v = tf.transpose(v, [0, 2, 1, 3])
        scores = self._scores(q, k)  # (B, H, Gl, T)
        bias = self.attention_bias(positional, positions[:global_len], positions)
        if bias is not None:
            scores += bias
        if padding_mask is not None:
            keys_ok = tf.cast(padding_mask, tf.bool)[:, None, None, :]
            scores = tf.where(keys_ok, scores, _MASKED)
        return self._attend_values(scores, v, training)  # (B, Gl, H*Dh)

    def _grouped_bias(self, bias):
        """A bias `(H or 1, ...)` regrouped as `(Hkv or 1, G or 1, ...)` to match the
        grouped score layout (head = kv_head * G + g)."""
        bias = tf.cast(bias, "float32")
        groups = self.num_heads // self.num_kv_heads
        if bias.shape[0] == 1:
            return bias[:, None]
        return tf.reshape(
            bias,
            tf.concat([[self.num_kv_heads, groups], tf.shape(bias)[1:]], 0),
        )

    def get_config(self):
        config = super().get_config()
        config.pop("cross", None)
        config.update(
            block_size=self.block_size,
            local_blocks=self.local_blocks,
            global_blocks=self.global_blocks,
        )
        return config
