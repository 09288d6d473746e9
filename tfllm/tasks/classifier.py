"""Sequence classification: a backbone and a classification head, trained on cross-entropy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import TaskModel


def confusion_metrics(confusion) -> tuple[float, float]:
    """Accuracy and macro-F1 of a confusion matrix (rows: true labels, columns: predicted).

    Macro-F1 averages over the labels present — those that occur as a true label or a
    prediction — as scikit-learn's `f1_score(average="macro")` does with its default
    `labels=None`; a label the data never shows (a tag set's unused `B-MISC`, say) would
    otherwise count as an F1 of 0.

    Example:

    >>> confusion_metrics([[3, 1], [0, 4]])
    (0.875, 0.873015873015873)
    >>> confusion_metrics([[3, 0, 0], [0, 4, 0], [0, 0, 0]])  # the third label never appears
    (1.0, 1.0)
    """
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(m)
    precision = np.divide(tp, m.sum(axis=0), out=np.zeros_like(tp), where=m.sum(axis=0) > 0)
    recall = np.divide(tp, m.sum(axis=1), out=np.zeros_like(tp), where=m.sum(axis=1) > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    macro = float(f1[present].mean()) if present.any() else 0.0
    return float(tp.sum() / max(m.sum(), 1e-12)), macro


@registry.register("task", "classify")
class SequenceClassifier(TaskModel):
    """Classifies whole texts: backbone hidden states, pooled by the head, to class logits.

    Works with an encoder (pool `cls` or `mean`, as BERT and MiniLM) or a decoder (pool
    `last_token`, as the GPT sentiment classifier of the seeds: the last real token has seen the
    whole text).

    Args:
        backbone: a backbone, or its serialized config.
        head: dict. Head spec (default `{"name": "classification"}`); offered `num_classes`.
        labels: the class names, in logit order.

    Call arguments:
        token_ids: `(B, T)` int32.
        padding_mask: optional `(B, T)`, true for real tokens.
        segment_ids: optional `(B, T)` int32, 1 on the second text of a pair (read by backbones
            with segment embeddings, ignored by the others).

    Returns:
        float32 logits `(B, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder import EncoderBackbone
    >>> backbone = EncoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> clf = SequenceClassifier(backbone, labels=["neg", "pos"])
    >>> clf(np.ones((2, 5), "int32")).shape
    TensorShape([2, 2])
    """

    default_head = "classification"

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        labels: Sequence[str] = ("0", "1"),
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        labels = [str(label) for label in labels]
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels must be at least two distinct names, got {labels}")
        self.labels = labels
        self.set_head(head, self.default_head, {"num_classes": len(labels)}, "classification_head")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def call(self, token_ids, padding_mask=None, segment_ids=None, training=None):
        if segment_ids is not None and getattr(self.backbone, "type_vocabulary_size", 0):
            hidden = self.backbone(
                token_ids, padding_mask=padding_mask, segment_ids=segment_ids, training=training
            )  # (B, T, D)
        else:
            hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.head(hidden, padding_mask=padding_mask, training=training)  # (B, C)

    def _logits(self, batch: dict[str, Any], training: bool):
        return self(
            batch["token_ids"],
            padding_mask=batch.get("padding_mask"),
            segment_ids=batch.get("segment_ids"),
            training=training,
        )

    def classify_texts(
        self,
        tokenizer,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        sequence_length: int | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Class probabilities `(N, num_classes)` of `texts` (and `text_pairs`), packed as the
        training data packs them (`tfllm.tasks.packing.pack_texts`); exports answer the same.

        Example:

        >>> from tfllm.components.tokenizers.char import CharTokenizer
        >>> from tfllm.models.encoder import EncoderBackbone
        >>> tokenizer = CharTokenizer(vocabulary=list("abc "))
        >>> backbone = EncoderBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=1,
        ...                            hidden_dim=8, num_heads=2, max_sequence_length=16)
        >>> clf = SequenceClassifier(backbone, labels=["x", "y", "z"])
        >>> clf.classify_texts(tokenizer, ["ab", "cab a"]).shape
        (2, 3)
        """
        from tfllm.tasks.packing import pack_texts

        length = min(sequence_length or self.max_sequence_length, self.max_sequence_length)
        packed = pack_texts(tokenizer, texts, text_pairs, length)
        out = []
        for start in range(0, len(packed.ids), batch_size):
            rows = slice(start, start + batch_size)
            width = max(1, int(packed.mask[rows].sum(axis=1).max()))
            logits = self(
                packed.ids[rows, :width],
                padding_mask=packed.mask[rows, :width],
                segment_ids=packed.segments[rows, :width] if text_pairs is not None else None,
            )
            out.append(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed example cross-entropy and the summed example weights."""
        logits = self._logits(batch, training)
        labels = tf.cast(batch["labels"], tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)  # (B,)
        weights = batch.get("loss_weights")
        weights = tf.ones_like(ce) if weights is None else tf.cast(weights, ce.dtype)
        return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The weighted confusion matrix `(C, C)` of one batch (rows: true, columns: predicted)."""
        logits = self._logits(batch, False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (B,) or (B, T) per token
        weights = batch.get("loss_weights")
        confusion = tf.math.confusion_matrix(
            tf.reshape(tf.cast(batch["labels"], tf.int32), [-1]),
            tf.reshape(predicted, [-1]),
            num_classes=self.num_classes,
            weights=None if weights is None else tf.reshape(tf.cast(weights, tf.float32), [-1]),
            dtype=tf.float32,
        )
        return {"confusion": confusion}

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        """Accuracy and macro-F1 of the validation confusion matrix instead of perplexity."""
        accuracy, macro_f1 = confusion_metrics(statistics["confusion"])
        return {"val_loss": loss, "val_accuracy": accuracy, "val_macro_f1": macro_f1}

    def task_config(self) -> dict[str, Any]:
        return {"labels": self.labels}


@registry.register("task", "token_classify")
class TokenClassifier(SequenceClassifier):
    """Labels every token (named entities, part of speech): the backbone's hidden states through
    a per-token head (`token_classification`), trained on the cross-entropy of the tokens that
    carry a label (`loss_weights`: in `conll` data, the first token of each word). Validation
    reports token accuracy and macro-F1 from the confusion matrix.

    Args:
        backbone, labels: as in `SequenceClassifier`.
        head: dict. Head spec (default `{"name": "token_classification"}`).

    Returns:
        float32 logits `(B, T, num_classes)`.

    Example:

    >>> import numpy as np
    >>> from tfllm.models.encoder import EncoderBackbone
    >>> backbone = EncoderBackbone(vocabulary_size=50, num_layers=1, hidden_dim=16,
    ...                            num_heads=2, max_sequence_length=16)
    >>> tagger = TokenClassifier(backbone, labels=["O", "B-PER", "I-PER"])
    >>> tagger(np.ones((2, 5), "int32")).shape
    TensorShape([2, 5, 3])
    """

    default_head = "token_classification"

    def tag_texts(
        self, tokenizer, texts: Sequence[str], sequence_length: int | None = None
    ) -> list[TaggedText]:
        """Tag each word of `texts` (split at whitespace, encoded as CoNLL data is:
        `tfllm.tasks.tagging`) and group BIO tags into entities; exports answer the same.

        Raises:
            ValueError: a text has no words, or more than `sequence_length` tokens hold.
        """
        from tfllm.tasks.packing import pad_rows
        from tfllm.tasks.tagging import blank_ids, entity_spans, split_words, word_token_ids

        length = min(sequence_length or self.max_sequence_length, self.max_sequence_length)
        cls, sep = tokenizer.boundary_ids()
        room = length - (cls is not None) - (sep is not None)
        blank = blank_ids(tokenizer)
        head = [cls] if cls is not None else []
        rows, spans, leads = [], [], []
        for text in texts:
            words = split_words(text)
            if not words:
                raise ValueError(f"a text has no words: {text!r}")
            ids, firsts = word_token_ids(tokenizer, [w for w, _, _ in words], room, blank)
            if len(firsts) < len(words):
                raise ValueError(f"a text is longer than the {length} tokens read: {text!r}")
            rows.append(head + ids + ([sep] if sep is not None else []))
            spans.append(words)
            leads.append([len(head) + k for k in firsts])
        ids, mask = pad_rows(rows, tokenizer.pad_id if tokenizer.pad_id is not None else 0)
        logits = tf.cast(self(ids, padding_mask=mask), tf.float32)  # (B, T, C)
        out = []
        for i, (words, positions) in enumerate(zip(spans, leads, strict=True)):
            probabilities = tf.nn.softmax(tf.gather(logits[i], positions)).numpy()  # (W, C)
            best = probabilities.argmax(axis=-1)
            tagged = [
                (word, start, end, self.labels[k], float(p[k]))
                for (word, start, end), k, p in zip(words, best, probabilities, strict=True)
            ]
            entities = entity_spans(
                [t[3] for t in tagged],
                [t[1] for t in tagged],
                [t[2] for t in tagged],
                [t[4] for t in tagged],
            )
            out.append(TaggedText(tagged, entities))
        return out


@dataclass
class TaggedText:
    """`TokenClassifier.tag_texts`' answer for one text: `(word, start, end, label, score)` per
    word (character offsets) and the BIO entities."""

    words: list[tuple[str, int, int, str, float]]
    entities: list[Any]
