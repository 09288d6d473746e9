"""Masked language modelling (BERT): predict the tokens hidden behind `[MASK]`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel
from tfllm.tasks.packing import pad_rows


def mask_tokens(
    token_ids,
    seed,
    mask_token_id: int,
    vocabulary_size: int,
    protected_ids,
    mask_rate: float = 0.15,
    replace_rate: float = 0.8,
    random_rate: float = 0.1,
):
    """BERT's corruption: pick `mask_rate` of the non-special tokens; of those, `replace_rate`
    become `[MASK]`, `random_rate` a random token, the rest stay as they are.

    Args:
        token_ids: `(B, T)` int32.
        seed: `(2,)` int32 stateless seed: the same seed and ids give the same masks.
        protected_ids: `(P,)` ids never picked (padding, `[CLS]`, `[SEP]`, ...).

    Returns:
        `(inputs, labels, weights)`: corrupted ids, the original ids, and 1.0 at picked positions
        (the only ones that carry loss).
    """
    shape = tf.shape(token_ids)
    protected = tf.reduce_any(token_ids[..., None] == protected_ids[None, None, :], axis=-1)
    u = tf.random.stateless_uniform(shape, seed=seed)
    picked = (u < mask_rate) & ~protected  # (B, T)
    v = tf.random.stateless_uniform(shape, seed=seed + 1)
    to_mask = picked & (v < replace_rate)
    to_random = picked & (v >= replace_rate) & (v < replace_rate + random_rate)
    random_ids = tf.random.stateless_uniform(
        shape, seed=seed + 2, minval=0, maxval=vocabulary_size, dtype=tf.int32
    )
    inputs = tf.where(to_mask, tf.cast(mask_token_id, token_ids.dtype), token_ids)
    inputs = tf.where(to_random, tf.cast(random_ids, token_ids.dtype), inputs)
    return inputs, token_ids, tf.cast(picked, tf.float32)


def mask_text_ids(tokenizer, texts: Sequence[str], sequence_length: int) -> list[list[int]]:
    """Ids of texts that contain the tokenizer's mask string: each piece between masks
    tokenized on its own, the mask id between them, `[CLS]`/`[SEP]` around, cut to
    `sequence_length`.

    Raises:
        ValueError: the tokenizer has no mask token, a text has none, or one is cut away.
    """
    token = tokenizer.special_tokens.get("mask")
    if token is None:
        raise ValueError("the tokenizer has no 'mask' special token")
    mask_id = tokenizer.token_to_id(token)
    cls, sep = tokenizer.boundary_ids()
    inner = sequence_length - (cls is not None) - (sep is not None)
    rows = []
    for text in texts:
        pieces = text.split(token)
        if len(pieces) < 2:
            raise ValueError(f"a text has no {token}: {text!r}")
        body: list[int] = []
        for k, piece in enumerate(pieces):
            body += (tokenizer.encode_one(piece) if piece else []) + (
                [mask_id] if k < len(pieces) - 1 else []
            )
        if body[:inner].count(mask_id) < len(pieces) - 1:
            raise ValueError(f"a {token} lies beyond the {sequence_length} tokens: {text!r}")
        rows.append(
            ([cls] if cls is not None else []) + body[:inner] + ([sep] if sep is not None else [])
        )
    return rows


@registry.register("task", "masked_lm")
class MaskedLM(TaskModel):
    """An encoder with an LM head, trained to recover masked tokens (BERT's objective).

    Each training batch is corrupted in the graph by `mask_tokens` with a stateless seed drawn
    from the batch's own ids and `seed`, so a run's masks are a pure function of its batches
    (resumed and multi-worker runs mask exactly as an uninterrupted one). Only picked positions
    carry loss.

    Args:
        backbone: an encoder backbone (bidirectional), or its serialized config.
        head: dict. The LM head spec (`lm`, tied to the token embedding by default).
        special_tokens: role -> id from the tokenizer (set by the builder); needs `mask`.
        mask_rate: float. Share of tokens picked.
        replace_rate: float. Share of picked tokens replaced by `[MASK]`.
        random_rate: float. Share of picked tokens replaced by a random token.
        seed: int. Masking seed.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`.

    Returns:
        float32 logits `(B, T, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder import EncoderBackbone
    >>> backbone = EncoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> mlm = MaskedLM(backbone, special_tokens={"mask": 4, "pad": 0})
    >>> mlm(np.ones((2, 5), "int32")).shape
    TensorShape([2, 5, 50])

    Reference: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers".
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        special_tokens: dict[str, int] | None = None,
        mask_rate: float = 0.15,
        replace_rate: float = 0.8,
        random_rate: float = 0.1,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        if replace_rate < 0 or random_rate < 0 or replace_rate + random_rate > 1.0:
            raise ValueError(
                f"replace_rate and random_rate must be >= 0 and sum to at most 1, got "
                f"{replace_rate} and {random_rate}"
            )
        if getattr(self.backbone, "causal", False):
            raise ValueError("masked_lm needs a bidirectional backbone (model=encoder)")
        self.special_tokens = dict(special_tokens or {})
        self.mask_rate = mask_rate
        self.replace_rate = replace_rate
        self.random_rate = random_rate
        self.seed = seed
        self.set_head(head, "lm", {"vocabulary_size": self.vocabulary_size}, "lm_head")

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, token_embedding=self.backbone.token_embedding)  # (B, T, V)

    def corrupt(self, token_ids):
        """`mask_tokens` with this task's settings and a seed drawn from the ids."""
        if "mask" not in self.special_tokens:
            raise ValueError(
                "masked_lm needs a tokenizer with a 'mask' special token (for example "
                "tokenizer.special_tokens.mask='[MASK]')"
            )
        token_ids = tf.cast(token_ids, tf.int32)
        positions = tf.range(tf.shape(token_ids)[1], dtype=tf.int32)[None, :] + 1
        fingerprint = tf.reduce_sum(token_ids * positions) % 2147483647  # the batch's own seed
        seed = tf.stack([tf.constant(self.seed, tf.int32), fingerprint])
        protected = tf.constant(sorted(set(self.special_tokens.values())), tf.int32)
        return mask_tokens(
            token_ids,
            seed,
            self.special_tokens["mask"],
            self.vocabulary_size,
            protected,
            self.mask_rate,
            self.replace_rate,
            self.random_rate,
        )

    def _corrupted(self, batch: dict[str, Any]):
        inputs, labels, weights = self.corrupt(batch["token_ids"])
        padding_mask = batch.get("padding_mask")
        if padding_mask is not None:
            weights = weights * tf.cast(padding_mask, tf.float32)
        return inputs, labels, weights

    def loss_normalizer(self, batch: dict[str, Any]):
        """How many tokens carry loss in `batch` (the picked ones), before any forward pass."""
        return tf.reduce_sum(self._corrupted(batch)[2])

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed cross-entropy at the picked positions and their count."""
        inputs, labels, weights = self._corrupted(batch)
        padding_mask = batch.get("padding_mask")
        logits = self(inputs, padding_mask=padding_mask, training=training)  # (B, T, V)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

    def fill_mask(
        self,
        tokenizer,
        texts: Sequence[str],
        top_k: int = 5,
        sequence_length: int | None = None,
    ) -> list[list[list[tuple[int, float]]]]:
        """The `top_k` fillers of every mask token in each text: `[text][mask] -> [(id,
        probability), ...]`, best first. The text around each mask token (the tokenizer's
        `mask` string) is tokenized piece by piece and wrapped in `[CLS]`/`[SEP]`, as exports
        do (`tfllm.export.fill_mask_serving`).

        Raises:
            ValueError: a text has no mask token, or a mask falls beyond `sequence_length`.
        """
        rows = mask_text_ids(tokenizer, texts, sequence_length or self.max_sequence_length)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        ids, padding = pad_rows(rows, pad)
        logits = tf.cast(self(ids, padding_mask=padding), tf.float32)  # (B, T, V)
        positions = np.argwhere(ids == tokenizer.special_token_ids()["mask"])  # (M, 2) in order
        probabilities = tf.nn.softmax(tf.gather_nd(logits, positions)).numpy()  # (M, V)
        out: list[list[list[tuple[int, float]]]] = [[] for _ in rows]
        for (i, _), p in zip(positions, probabilities, strict=True):
            best = np.argsort(-p, kind="stable")[:top_k]
            out[i].append([(int(k), float(p[k])) for k in best])
        return out

    def task_config(self) -> dict[str, Any]:
        return {
            "special_tokens": self.special_tokens,
            "mask_rate": self.mask_rate,
            "replace_rate": self.replace_rate,
            "random_rate": self.random_rate,
            "seed": self.seed,
        }
