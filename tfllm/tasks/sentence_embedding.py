"""Sentence embeddings: pooled, optionally L2-normalized hidden states of a backbone."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfllm import registry
from tfllm.components.heads.pooling import POOLINGS, pool
from tfllm.tasks.base import TaskModel
from tfllm.tasks.packing import pad_rows


def boundary_ids(tokenizer) -> tuple[int | None, int | None]:
    """Moved to `Tokenizer.boundary_ids()` (kept for one plugin API version)."""
    return tokenizer.boundary_ids()


@registry.register("task", "sentence_embedding")
class SentenceEmbedder(TaskModel):
    """A backbone whose pooled hidden states embed whole texts (sentence-transformers style).

    Args:
        backbone: an encoder or decoder backbone, or its serialized config.
        head: ignored (sentence embeddings have no head); accepted so every task composes
            from the same config groups.
        pooling: str. `mean` (all-MiniLM-L6-v2), `cls`, or `last_token`.
        normalize: bool. L2-normalize the pooled vector.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`, true for real tokens.

    Returns:
        float32 embeddings `(B, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder import EncoderBackbone
    >>> backbone = EncoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> embedder = SentenceEmbedder(backbone)
    >>> embedder(np.ones((2, 5), "int32")).shape
    TensorShape([2, 16])

    Reference: Reimers & Gurevych 2019, "Sentence-BERT".
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.head_spec = dict(head) if head else None  # kept for the config; no head is built
        self.pooling = pooling
        self.normalize = normalize
        self.built = True

    def call(self, token_ids, padding_mask=None, training=None):
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        pooled = pool(tf.cast(hidden, "float32"), padding_mask, self.pooling)  # (B, D)
        if self.normalize:
            pooled = tf.math.l2_normalize(pooled, axis=-1, epsilon=1e-24)
        return pooled

    def embed_texts(self, tokenizer, texts, max_length: int | None = None, batch_size: int = 32):
        """Embed strings: tokenize (with `[CLS]`/`[SEP]` when the tokenizer has them),
        truncate to `max_length`, pad, pool. Returns a float32 array `(N, hidden_dim)`."""
        import numpy as np

        max_length = min(max_length or self.max_sequence_length, self.max_sequence_length)
        cls, sep = tokenizer.boundary_ids()
        inner = max_length - (cls is not None) - (sep is not None)
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"texts must be strings, got {type(text).__name__}")
        bodies = tokenizer.encode(texts)["input_ids"] if texts else []  # one batched call
        head, tail = ([cls] if cls is not None else []), ([sep] if sep is not None else [])
        rows = [head + body[:inner] + tail for body in bodies]
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        out = []
        for start in range(0, len(rows), batch_size):
            token_ids, mask = pad_rows(rows[start : start + batch_size], pad)
            out.append(self(token_ids, padding_mask=mask).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.backbone.hidden_dim), np.float32)

    def task_config(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "normalize": self.normalize}
