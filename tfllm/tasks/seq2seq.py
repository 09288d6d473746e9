"""Sequence-to-sequence language modelling (T5): an encoder reads the source, a decoder writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel


def shift_right(labels, start_id: int):
    """Decoder inputs `(B, T)` from target ids `(B, T)`: the start token, then the target
    without its last token (teacher forcing)."""
    start = tf.fill([tf.shape(labels)[0], 1], tf.cast(start_id, labels.dtype))
    return tf.concat([start, labels[:, :-1]], axis=1)


class BoundDecoder:
    """The decoder of a `Seq2SeqLM` bound to one batch of encoded sources, with the causal-LM
    decoding interface (`init_cache`, `call_with_cache`, `max_sequence_length`), so the same
    decode loop and beam search serve both families. The encoder runs once, in `bind`."""

    def __init__(self, model: Seq2SeqLM, encoder_output, encoder_mask):
        self.model = model
        self.encoder_output = encoder_output  # (B, S, D)
        self.encoder_mask = encoder_mask  # (B, S)

    @property
    def max_sequence_length(self) -> int:
        return self.model.max_sequence_length

    @property
    def vocabulary_size(self) -> int:
        return self.model.vocabulary_size

    def init_cache(self, batch_size, max_length):
        """The decoder cache for `max_length` positions; the batch is the bound sources'."""
        del batch_size  # always the encoder's batch
        return self.model.backbone.init_cache(self.encoder_output, self.encoder_mask, max_length)

    def call_with_cache(self, token_ids, cache, cache_index, logits_at=None):
        """As `CausalLM.call_with_cache`: logits `(B, T, V)`, or `(B, 1, V)` at `logits_at`."""
        hidden, cache = self.model.backbone.decode(token_ids, cache=cache, cache_index=cache_index)
        if logits_at is not None:
            hidden = tf.gather(hidden, [logits_at], axis=1)  # (B, 1, D)
        return self.model.logits(hidden), cache  # (B, T or 1, V)


@registry.register("task", "seq2seq")
class Seq2SeqLM(TaskModel):
    """An encoder-decoder backbone with an LM head, trained on target-token cross-entropy.

    Batches hold `encoder_ids`, `encoder_mask`, `labels` (the target ids, eos included) and
    `loss_weights`; the decoder reads the labels shifted right behind a start token (`bos`, else
    `pad`, as in T5). For generation, `bind(source_ids, mask)` runs the encoder once and returns
    a decoder with the causal LM's decoding interface.

    Args:
        backbone: an encoder-decoder backbone (`model=encoder_decoder`), or its config.
        head: dict. The LM head spec (`lm`, tied to the shared token embedding by default).
        special_tokens: role -> id from the tokenizer (set by the builder).

    Call arguments:
        encoder_ids: `(B, S)` int32.
        decoder_ids: `(B, T)` int32.
        encoder_padding_mask: optional `(B, S)`.

    Returns:
        float32 logits `(B, T, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder_decoder import EncoderDecoderBackbone
    >>> backbone = EncoderDecoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                                   num_heads=2, max_sequence_length=16)
    >>> t5 = Seq2SeqLM(backbone, special_tokens={"pad": 0, "eos": 1})
    >>> t5(np.ones((2, 7), "int32"), np.ones((2, 4), "int32")).shape
    TensorShape([2, 4, 50])
    """

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        special_tokens: dict[str, int] | None = None,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        backbone = self.backbone
        if not hasattr(backbone, "encode") or not hasattr(backbone, "decode"):
            raise ValueError(
                f"{self._task_name()} needs an encoder-decoder backbone (model=encoder_decoder or "
                f"a t5 preset), got {type(backbone).__name__}"
            )
        self.special_tokens = dict(special_tokens or {})
        self.set_head(head, "lm", {"vocabulary_size": backbone.vocabulary_size}, "lm_head")

    def _task_name(self) -> str:
        return "seq2seq"

    @property
    def decoder_start_id(self) -> int:
        """The first decoder input: `bos` if the tokenizer has one, else `pad` (T5), else 0."""
        return int(self.special_tokens.get("bos", self.special_tokens.get("pad", 0)))

    def logits(self, hidden):
        return self.head(hidden, token_embedding=self.backbone.token_embedding)  # (B, T, V)

    def call(self, encoder_ids, decoder_ids, encoder_padding_mask=None, training=None):
        hidden = self.backbone(
            encoder_ids, decoder_ids, encoder_padding_mask=encoder_padding_mask, training=training
        )  # (B, T, D)
        return self.logits(hidden)

    def bind(self, encoder_ids, encoder_mask=None) -> BoundDecoder:
        """Encode sources `(B, S)` once; the result decodes like a causal LM."""
        encoder_ids = tf.convert_to_tensor(encoder_ids, tf.int32)
        if encoder_mask is None:
            encoder_mask = tf.ones_like(encoder_ids)
        encoded = self.backbone.encode(encoder_ids, encoder_mask)  # (B, S, D)
        return BoundDecoder(self, encoded, encoder_mask)

    def pair_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The `encoder_ids`/`encoder_mask`/`labels`/`loss_weights` batch this task trains on
        (subclasses build it from other data: span corruption from plain text)."""
        return batch

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed target-token cross-entropy and the summed token weights."""
        batch = self.pair_batch(batch)
        labels = tf.cast(batch["labels"], tf.int32)
        logits = self(
            batch["encoder_ids"],
            shift_right(labels, self.decoder_start_id),
            encoder_padding_mask=batch.get("encoder_mask"),
            training=training,
        )  # (B, T, V)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        weights = tf.cast(batch["loss_weights"], ce.dtype)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

    def loss_normalizer(self, batch: dict[str, Any]):
        """How many target tokens carry loss in `batch`."""
        return tf.reduce_sum(tf.cast(self.pair_batch(batch)["loss_weights"], tf.float32))

    def task_config(self) -> dict[str, Any]:
        return {"special_tokens": self.special_tokens}

    def score_texts(self, tokenizer, sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
        """The log-probability `(B,)` of each target given its source: sources packed as
        generation packs them (eos-ended, cut to the model's length), targets eos-ended as
        training labels are; exports' `score` answers the same.

        Raises:
            ValueError: a target (with its eos) is longer than the decoder.
        """
        from tfllm.generation.prompts import pack_with_eos

        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        length = self.max_sequence_length
        bodies = tokenizer.encode(list(sources))["input_ids"]
        eos = tokenizer.eos_id is not None
        width = max(1, min(max(len(b) for b in bodies) + eos, length))
        encoder_ids, encoder_mask, _ = pack_with_eos(
            bodies, width, tokenizer.eos_id, tokenizer.pad_id
        )
        labels = tokenizer.encode(list(targets))["input_ids"]
        longest = max(len(t) for t in labels) + eos
        if longest > length:
            raise ValueError(f"a target is longer than the decoder's {length} positions")
        label_ids, label_mask, _ = pack_with_eos(
            labels, longest, tokenizer.eos_id, tokenizer.pad_id
        )
        logits = self(
            encoder_ids,
            shift_right(tf.constant(label_ids), self.decoder_start_id),
            encoder_padding_mask=encoder_mask.astype(np.int32),
        )  # (B, T, V)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        picked = tf.gather(log_probs, label_ids, batch_dims=2).numpy()  # (B, T)
        return np.where(label_mask, picked, 0.0).sum(axis=1)
