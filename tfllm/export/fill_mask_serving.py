"""The graph a masked language model serves: texts with mask tokens to their best fillers."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.text_graph import text_checks, tf_assert, wrap_ids


class FillMaskServing(ServingModule):
    """Signatures of a masked LM (`task=masked_lm`): `serving_default` and `fill_mask`.

    Input `texts` (string `[B]`), each holding the tokenizer's mask token (`[MASK]`) one or
    more times. The text around the masks is tokenized piece by piece and wrapped in
    `[CLS]`/`[SEP]` (`tfllm.tasks.masked_lm.mask_text_ids` in Python). Outputs, for the `M`
    masks of the text with the most and the `top_k` best fillers of each, best first:
    `fillers` (string `[B, M, K]`, each id detokenized alone), `filler_ids` (int32 `[B, M, K]`),
    `scores` (probabilities, float32 `[B, M, K]`) and `mask_counts` (int32 `[B]`); entries past
    a text's own masks hold "", -1 and 0.
    """

    def __init__(self, model, tokenizer, top_k: int = 5, sequence_length: int | None = None):
        super().__init__(model, tokenizer, "tfllm_fill_mask")
        token = tokenizer.special_tokens.get("mask")
        if token is None:
            raise ValueError("a fill-mask export needs a tokenizer with a 'mask' special token")
        if not 1 <= top_k <= model.vocabulary_size:
            raise ValueError(
                f"fill_mask_top_k must be in [1, {model.vocabulary_size}], got {top_k}"
            )
        self.mask_token, self.mask_id = token, tokenizer.token_to_id(token)
        self.top_k = int(top_k)
        self.sequence_length = int(
            min(sequence_length or model.max_sequence_length, model.max_sequence_length)
        )
        spec = [tf.TensorSpec([None], tf.string, name="texts")]
        self.fill_mask = tf.function(self._fill_mask, input_signature=spec, autograph=False)

    def signatures(self) -> dict[str, Any]:
        fn = self.fill_mask.get_concrete_function()
        return {"serving_default": fn, "fill_mask": fn}

    def _ids(self, texts):
        """Ragged ids `(B, None)`: pieces between masks tokenized alone, masks between them."""
        with tf.control_dependencies(text_checks(texts, "texts")):
            pieces = tf.strings.split(tf.identity(texts), sep=self.mask_token)  # (B, P)
        masks = pieces.row_lengths() - 1  # (B,)
        has_mask = tf_assert(
            tf.reduce_all(masks > 0), f"texts: every text needs at least one {self.mask_token}"
        )
        with tf.control_dependencies([has_mask]):
            piece_ids = tf.cast(self.tokenizer(tf.identity(pieces.flat_values)), tf.int32)
        # 1 after every piece but the last of its text: where a mask stood.
        position = tf.range(tf.size(pieces.flat_values, out_type=tf.int64)) - tf.gather(
            pieces.row_splits, pieces.value_rowids()
        )
        follows = tf.cast(position < tf.gather(masks, pieces.value_rowids()), tf.int64)
        mask_ids = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(follows)], self.mask_id), follows
        )
        joined = tf.concat([piece_ids, tf.cast(mask_ids, tf.int32)], axis=1)  # (pieces, None)
        ids = tf.RaggedTensor.from_row_splits(joined, pieces.row_splits).merge_dims(1, 2)
        cls, sep = self.tokenizer.boundary_ids()
        inner = self.sequence_length - (cls is not None) - (sep is not None)
        ids = ids[:, :inner]
        kept = tf.reduce_sum(tf.cast(tf.equal(ids, self.mask_id), tf.int64), axis=1)
        fits = tf_assert(
            tf.reduce_all(kept == masks),
            f"texts: a {self.mask_token} lies beyond the {self.sequence_length} tokens the "
            "export reads",
        )
        with tf.control_dependencies([fits]):
            return wrap_ids(ids, cls, sep), tf.cast(masks, tf.int32)

    def _fill_mask(self, texts):
        ids, counts = self._ids(texts)  # (B, None), (B,)
        dense = ids.to_tensor(default_value=self.pad_id)  # (B, T)
        mask = tf.sequence_mask(ids.row_lengths(), tf.shape(dense)[1])
        logits = self._model(dense, padding_mask=mask)  # (B, T, V)
        where = tf.equal(dense, self.mask_id) & mask  # (B, T)
        positions = tf.ragged.boolean_mask(
            tf.broadcast_to(tf.range(tf.shape(dense)[1]), tf.shape(dense)), where
        )  # (B, None) mask positions
        at_masks = tf.gather(logits, positions, batch_dims=1)  # (B, None, V)
        probabilities = tf.nn.softmax(tf.cast(at_masks, tf.float32), axis=-1)
        best = tf.math.top_k(probabilities.to_tensor(), k=self.top_k)  # (B, M, K)
        valid = tf.sequence_mask(counts, tf.shape(best.indices)[1])[:, :, None]  # (B, M, 1)
        filler_ids = tf.where(valid, best.indices, -1)
        flat = tf.reshape(tf.maximum(filler_ids, 0), [-1, 1])
        words = tf.reshape(
            self.tokenizer.detokenize(flat, skip_special_tokens=False), tf.shape(filler_ids)
        )
        return {
            "fillers": tf.where(valid, words, ""),
            "filler_ids": filler_ids,
            "scores": tf.where(valid, best.values, 0.0),
            "mask_counts": counts,
        }

    # ----- what the exporter writes and checks ---------------------------------------------
    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"texts": [f"{t} {self.mask_token}" for t in texts]}

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        return {"fill_mask": {"texts": (self.sample_inputs(texts)["texts"], "string")}}

    def check_validation(self, texts, results) -> str:
        inputs = self.sample_inputs(texts)["texts"]
        want = self._model.fill_mask(self.tokenizer, inputs, self.top_k, self.sequence_length)
        got_ids = np.asarray(results["fill_mask"]["filler_ids"])
        got_scores = np.asarray(results["fill_mask"]["scores"], np.float32)
        diff = 0.0
        for i, fills in enumerate(want):
            for m, fill in enumerate(fills):
                if [k for k, _ in fill] != got_ids[i, m].tolist():
                    raise ValueError(f"fillers differ after reloading for {inputs[i]!r}")
                diff = max(diff, float(np.max(np.abs(got_scores[i, m] - [p for _, p in fill]))))
        if diff > 1e-5:
            raise ValueError(f"filler scores differ after reloading by {diff:.3g}")
        return (
            f"top-{self.top_k} fillers of {len(inputs)} texts: identical ids, max score "
            f"difference {diff:.2g}"
        )
