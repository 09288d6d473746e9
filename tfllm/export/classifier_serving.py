"""The graph a sequence classifier serves: TF Serving's Classify API and a Predict signature."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.text_graph import example_bytes, pack_graph, parse_text_features


class ClassifierServing(ServingModule):
    """Signatures of a sequence classifier (`task=classify`), single texts or pairs.

    - `serving_default(texts[, text_pairs])` (Predict): `labels` (string `[B]`), `label_ids`
      (int32 `[B]`) and `probabilities` (float32 `[B, C]`).
    - `classification(inputs)` (method `tensorflow/serving/classify`, for TF Serving's Classify
      API): serialized `tf.Example`s with a bytes feature `text_feature` (and `pair_feature`)
      to `classes` (the label names, string `[B, C]`) and `scores` (probabilities `[B, C]`), in
      label order.

    Texts are packed by `tfllm.export.text_graph.pack_graph`, the graph twin of the training
    data's `tfllm.tasks.packing.pack_texts`, to at most `sequence_length` tokens.
    """

    def __init__(
        self,
        model,
        tokenizer,
        sequence_length: int,
        pairs: bool = False,
        text_feature: str = "text",
        pair_feature: str = "text_pair",
    ):
        super().__init__(model, tokenizer, "tfllm_classifier")
        if not text_feature or (pairs and (not pair_feature or pair_feature == text_feature)):
            raise ValueError(
                f"text_feature and pair_feature must be distinct non-empty names, got "
                f"{text_feature!r} and {pair_feature!r}"
            )
        self.labels = list(model.labels)
        self.sequence_length = int(min(sequence_length, model.max_sequence_length))
        self.pairs = pairs
        self.text_feature, self.pair_feature = text_feature, pair_feature
        strings = lambda name: tf.TensorSpec([None], tf.string, name=name)  # noqa: E731
        inputs = [strings("texts")] + ([strings("text_pairs")] if pairs else [])
        self.predict = tf.function(self._predict, input_signature=inputs, autograph=False)
        self.classify = tf.function(
            self._classify, input_signature=[strings("inputs")], autograph=False
        )

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.predict.get_concrete_function(),
            "classification": self.classify.get_concrete_function(),
        }

    def method_names(self) -> dict[str, str]:
        return {"classification": tf.saved_model.CLASSIFY_METHOD_NAME}

    def _probabilities(self, texts, pairs):
        ids, mask, segments = pack_graph(
            self.tokenizer, texts, pairs, self.sequence_length, self.pad_id
        )  # (B, T) each
        logits = self._model(
            ids, padding_mask=mask, segment_ids=segments if pairs is not None else None
        )  # (B, C)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    def _predict(self, texts, text_pairs=None):
        probabilities = self._probabilities(texts, text_pairs)  # (B, C)
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # (B,)
        return {
            "labels": tf.gather(tf.constant(self.labels), ids),
            "label_ids": ids,
            "probabilities": probabilities,
        }

    def _classify(self, inputs):
        names = [self.text_feature] + ([self.pair_feature] if self.pairs else [])
        parsed = parse_text_features(inputs, names)
        pairs = parsed[self.pair_feature] if self.pairs else None
        scores = self._probabilities(parsed[self.text_feature], pairs)  # (B, C)
        b = tf.shape(scores)[0]
        classes = tf.tile(tf.constant([self.labels]), tf.stack([b, 1]))  # (B, C)
        return {"classes": classes, "scores": scores}

    # ----- what the exporter writes and checks ---------------------------------------------
    def examples(self, texts, pairs=None) -> list[bytes]:
        """Serialized `tf.Example`s of `texts` (and `pairs`) with this export's feature names."""
        rows = [{self.text_feature: text} for text in texts]
        if pairs is not None:
            for row, pair in zip(rows, pairs, strict=True):
                row[self.pair_feature] = pair
        return [example_bytes(row) for row in rows]

    def sample_inputs(self, texts) -> dict[str, Any]:
        inputs = {"texts": list(texts)}
        if self.pairs:
            inputs["text_pairs"] = list(reversed(texts))
        return inputs

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        inputs = self.sample_inputs(texts)
        pairs = inputs.get("text_pairs")
        return {
            "serving_default": {k: (v, "string") for k, v in inputs.items()},
            "classification": {
                "inputs": ([e.decode("latin-1") for e in self.examples(texts, pairs)], "bytes")
            },
        }

    def check_validation(self, texts, results) -> str:
        """Compare the reloaded export's answers with the Keras model's; returns a summary."""
        pairs = self.sample_inputs(texts).get("text_pairs")
        want = self._model.classify_texts(
            self.tokenizer, texts, pairs, sequence_length=self.sequence_length
        )
        got = np.asarray(results["serving_default"]["probabilities"], np.float32)
        scores = np.asarray(results["classification"]["scores"], np.float32)
        diff = float(max(np.max(np.abs(got - want)), np.max(np.abs(scores - want))))
        if diff > 1e-5:
            raise ValueError(f"class probabilities differ after reloading by {diff:.3g}")
        labels = [self.labels[i] for i in np.argmax(want, axis=-1)]
        if results["serving_default"]["labels"] != labels:
            raise ValueError(f"labels differ: export {results['serving_default']['labels']}")
        return f"class probabilities of {len(texts)} texts: max difference {diff:.2g}"
