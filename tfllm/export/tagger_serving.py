"""The graph a token classifier serves: words with their labels, offsets and scores, and the
entities their BIO tags spell."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.text_graph import text_checks, tf_assert, wrap_ids
from tfllm.tasks.tagging import character_offsets, graph_words, index_in_row, spaced_words


def _gated(ragged: tf.RaggedTensor) -> tf.RaggedTensor:
    """`ragged` rebuilt from identities, so it (and all that uses it) runs after the
    control dependencies in force where this is called."""
    return tf.RaggedTensor.from_row_splits(
        tf.identity(ragged.flat_values), tf.identity(ragged.row_splits), validate=False
    )


class TaggerServing(ServingModule):
    """Signatures of a token classifier (`task=token_classify`): `serving_default` and `tag`.

    A text is split into words at whitespace, each word tokenized alone and read at its first
    non-blank token, as CoNLL training data is (`tfllm.tasks.tagging`). Outputs, padded to the
    `W` words of the longest text (and the `E` entities of the text with most): `words`,
    `labels` (string `[B, W]`), `label_ids` (int32, -1 padded), `scores` (the label's
    probability), `starts`/`ends` (character offsets into the text, -1 padded), `word_counts`
    (int32 `[B]`); `entity_labels`, `entity_texts` (string `[B, E]`), `entity_starts`,
    `entity_ends` (character offsets), `entity_scores` (the mean of their words'),
    `entity_counts` (int32 `[B]`). A text without words, or longer than `sequence_length`
    tokens, is INVALID_ARGUMENT.
    """

    def __init__(self, model, tokenizer, sequence_length: int):
        super().__init__(model, tokenizer, "tfllm_tagger")
        self.labels = list(model.labels)
        self.sequence_length = int(min(sequence_length, model.max_sequence_length))
        self.cls_id, self.sep_id = tokenizer.boundary_ids()
        self.room = self.sequence_length - (self.cls_id is not None) - (self.sep_id is not None)
        self.blank = [not token.strip() for token in tokenizer.get_vocabulary()]
        spec = [tf.TensorSpec([None], tf.string, name="texts")]
        self.tag = tf.function(self._tag, input_signature=spec, autograph=False)

    def signatures(self) -> dict[str, Any]:
        fn = self.tag.get_concrete_function()
        return {"serving_default": fn, "tag": fn}

    def _word_ids(self, texts):
        """`(words, byte starts, byte ends, ids, leads)`: ragged `(B, W)` words and offsets,
        ragged `(B, None)` ids of each text (boundary tokens included), ragged `(B, W)`
        position of each word's first non-blank token."""
        with tf.control_dependencies(text_checks(texts, "texts")):
            words, starts, ends = graph_words(tf.identity(texts))  # (B, W) each
        has_words = tf_assert(tf.reduce_all(words.row_lengths() > 0), "texts: a text has no words")
        with tf.control_dependencies([has_words]):  # every later op waits for the check
            words = _gated(words)
        pieces = tf.cast(self.tokenizer(spaced_words(words)), tf.int32)  # (N, None) per word
        readable = tf.logical_not(tf.gather(tf.constant(self.blank), pieces))  # (N, None)
        encodes = tf_assert(
            tf.reduce_all(tf.reduce_any(readable, axis=1)), "texts: a word encodes to no tokens"
        )
        lead = tf.argmax(tf.cast(readable.to_tensor(), tf.int32), axis=1, output_type=tf.int32)
        lengths = tf.cast(pieces.row_lengths(), tf.int32)  # (N,)
        before = tf.cumsum(lengths, exclusive=True)  # tokens before each word, across rows
        row_first = tf.gather(before, tf.cast(words.row_splits[:-1], tf.int32))  # (B,)
        offset = before - tf.gather(row_first, words.value_rowids())  # (N,) within its text
        total = tf.math.segment_sum(lengths, words.value_rowids())  # (B,)
        fits = tf_assert(
            tf.reduce_all(total <= self.room),
            f"texts: a text is longer than the {self.sequence_length} tokens the export reads",
        )
        head = 1 if self.cls_id is not None else 0
        with tf.control_dependencies([encodes, fits]):  # the model never sees a failed text
            leads = words.with_flat_values(head + offset + lead)  # (B, W)
            pieces = _gated(pieces)
        ids = tf.RaggedTensor.from_row_splits(pieces, words.row_splits).merge_dims(1, 2)
        return words, starts, ends, wrap_ids(ids, self.cls_id, self.sep_id), leads

    def _tag(self, texts):
        words, starts, ends, ids, leads = self._word_ids(texts)
        dense = ids.to_tensor(default_value=self.pad_id)  # (B, T)
        mask = tf.sequence_mask(ids.row_lengths(), tf.shape(dense)[1])
        logits = self._model(dense, padding_mask=mask)  # (B, T, C)
        at_words = tf.gather(logits, leads, batch_dims=1)  # (B, W, C)
        probabilities = tf.nn.softmax(tf.cast(at_words.flat_values, tf.float32))  # (N, C)
        label_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # (N,)
        scores = tf.reduce_max(probabilities, axis=-1)
        labels = tf.gather(tf.constant(self.labels), label_ids)
        rows = words.value_rowids()
        text_of_word = tf.gather(texts, rows)  # (N,)
        char_starts = character_offsets(text_of_word, tf.cast(starts.flat_values, tf.int32))
        char_ends = character_offsets(text_of_word, tf.cast(ends.flat_values, tf.int32))
        entities = self._entities(
            labels,
            words,
            text_of_word,
            starts.flat_values,
            ends.flat_values,
            char_starts,
            char_ends,
            scores,
        )
        per_word = {
            "words": (words.flat_values, ""),
            "labels": (labels, ""),
            "label_ids": (label_ids, -1),
            "scores": (scores, 0.0),
            "starts": (char_starts, -1),
            "ends": (char_ends, -1),
        }
        out = {
            k: words.with_flat_values(v).to_tensor(default_value=pad)
            for k, (v, pad) in per_word.items()
        }
        out["word_counts"] = tf.cast(words.row_lengths(), tf.int32)
        out.update(entities)
        return out

    def _entities(self, labels, words, texts, byte_starts, byte_ends, starts, ends, scores):
        """`tfllm.tasks.tagging.entity_spans` over the flat words `(N,)` of all texts."""
        prefix = tf.strings.substr(labels, 0, 2)
        tagged = tf.equal(prefix, "B-") | tf.equal(prefix, "I-")
        kind = tf.where(tagged, tf.strings.regex_replace(labels, "^[BI]-", ""), "")  # (N,)
        previous = tf.where(index_in_row(words) == 0, "", tf.concat([[""], kind[:-1]], axis=0))
        inside = tf.not_equal(kind, "")
        opens = inside & (tf.equal(prefix, "B-") | tf.not_equal(kind, previous))
        entity = tf.boolean_mask(tf.cumsum(tf.cast(opens, tf.int32)) - 1, inside)  # (n,)
        count = tf.reduce_sum(tf.cast(opens, tf.int32))

        def reduce(fn, values):
            return fn(tf.boolean_mask(values, inside), entity, count)

        byte_start = reduce(tf.math.unsorted_segment_min, tf.cast(byte_starts, tf.int32))
        byte_end = reduce(tf.math.unsorted_segment_max, tf.cast(byte_ends, tf.int32))
        opening = tf.where(opens)[:, 0]  # (E,) the word that opens each entity
        rows = tf.gather(words.value_rowids(), opening)
        values = {
            "entity_labels": (tf.gather(kind, opening), ""),
            "entity_texts": (
                tf.strings.substr(tf.gather(texts, opening), byte_start, byte_end - byte_start),
                "",
            ),
            "entity_starts": (reduce(tf.math.unsorted_segment_min, starts), -1),
            "entity_ends": (reduce(tf.math.unsorted_segment_max, ends), -1),
            "entity_scores": (reduce(tf.math.unsorted_segment_mean, scores), 0.0),
        }
        nrows = words.nrows()
        out = {
            k: tf.RaggedTensor.from_value_rowids(v, rows, nrows=nrows).to_tensor(default_value=pad)
            for k, (v, pad) in values.items()
        }
        out["entity_counts"] = tf.cast(
            tf.math.bincount(tf.cast(rows, tf.int32), minlength=tf.cast(nrows, tf.int32)),
            tf.int32,
        )
        return out

    # ----- what the exporter writes and checks ---------------------------------------------
    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"texts": list(texts)}

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        return {"tag": {"texts": (list(texts), "string")}}

    def check_validation(self, texts, results) -> str:
        want = self._model.tag_texts(self.tokenizer, texts, self.sequence_length)
        got = results["tag"]
        diff = 0.0
        for i, tagged in enumerate(want):
            n = len(tagged.words)
            if got["labels"][i][:n] != [w[3] for w in tagged.words] or got["starts"][i][:n] != [
                w[1] for w in tagged.words
            ]:
                raise ValueError(f"word labels or offsets differ after reloading for {texts[i]!r}")
            if got["entity_labels"][i][: len(tagged.entities)] != [
                e.label for e in tagged.entities
            ]:
                raise ValueError(f"entities differ after reloading for {texts[i]!r}")
            scores = np.asarray(got["scores"][i][:n], np.float32)
            diff = max(diff, float(np.max(np.abs(scores - [w[4] for w in tagged.words]))))
        if diff > 1e-5:
            raise ValueError(f"word scores differ after reloading by {diff:.3g}")
        return f"word labels of {len(texts)} texts: identical, max score difference {diff:.2g}"
