"""The graph an extractive QA model serves: questions and contexts to answer spans."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.text_graph import text_checks, tf_assert
from tfllm.tasks.qa_reading import ReadingRule, Windows, read_windows, row_specials


class QAServing(ServingModule):
    """Signatures of an extractive QA model (`task=extractive_qa`): `serving_default` and
    `answer`.

    Inputs `questions` and `contexts` (string `[B]` each, one context per question), read by
    the rule the model trained with (`tfllm.tasks.qa_reading`): contexts longer than one row
    are read in windows overlapping by `rule.stride` tokens, at most `max_windows` per context.
    Outputs: `answers` (string `[B]`, the best span's text), `starts`/`ends` (int32 `[B]`,
    character offsets `[start, end)` into the context) and `scores` (float32 `[B]`,
    `P(start) * P(end)`). A blank question or context, lists of different lengths, or a context
    over the window limit is INVALID_ARGUMENT.
    """

    def __init__(self, model, tokenizer, rule: ReadingRule, max_windows: int = 8):
        super().__init__(model, tokenizer, "tfllm_extractive_qa")
        rule.check(tokenizer)
        if rule.sequence_length > model.max_sequence_length:
            raise ValueError(
                f"data.sequence_length={rule.sequence_length} exceeds the model's context of "
                f"{model.max_sequence_length}"
            )
        if max_windows < 1:
            raise ValueError(f"qa_max_windows must be positive, got {max_windows}")
        self.rule = rule
        self.max_windows = int(max_windows)
        # The context tokens `max_windows` windows surely hold (after the longest question).
        room = rule.sequence_length - row_specials(tokenizer) - rule.max_question_length
        self.max_context_tokens = room + (self.max_windows - 1) * (room - rule.stride)
        spec = [
            tf.TensorSpec([None], tf.string, name="questions"),
            tf.TensorSpec([None], tf.string, name="contexts"),
        ]
        self.answer = tf.function(self._answer, input_signature=spec, autograph=False)

    def signatures(self) -> dict[str, Any]:
        fn = self.answer.get_concrete_function()
        return {"serving_default": fn, "answer": fn}

    def _checks(self, windows: Windows) -> list:
        """What a request must satisfy before the model reads it."""
        return [
            tf_assert(
                tf.reduce_all(windows.question_lengths > 0), "questions: a question has no tokens"
            ),
            tf_assert(
                tf.reduce_all(windows.context.ids.row_lengths() > 0),
                "contexts: a context has no words",
            ),
            tf_assert(
                tf.reduce_all(windows.counts <= self.max_windows),
                f"contexts: a context is over the limit of {self.max_windows} windows of "
                f"{self.rule.sequence_length} tokens (about {self.max_context_tokens} context "
                "tokens; export.qa_max_windows sets it)",
            ),
        ]

    def _answer(self, questions, contexts):
        checks = [
            *text_checks(questions, "questions"),
            *text_checks(contexts, "contexts"),
            tf_assert(
                tf.shape(questions)[0] == tf.shape(contexts)[0],
                "questions and contexts must have one entry each per question",
            ),
        ]
        with tf.control_dependencies(checks):
            questions, contexts = tf.identity(questions), tf.identity(contexts)
        got = self._model.read(self.tokenizer, questions, contexts, self.rule, self._checks)
        return {"answers": got.texts, "starts": got.starts, "ends": got.ends, "scores": got.scores}

    # ----- what the exporter writes and checks ---------------------------------------------
    def sample_inputs(self, texts) -> dict[str, Any]:
        """A question about each text; the second context is long enough for two windows."""
        contexts = [f"{t}." for t in texts]
        if len(contexts) > 1:
            unit, size = contexts[1], len(self.tokenizer.encode_one(contexts[1]))
            room = self.rule.sequence_length - self.rule.max_question_length
            repeats = max(2, min(room + room // 2, self.max_context_tokens) // max(size, 1))
            contexts[1] = " ".join([unit] * repeats)
        return {"questions": [f"What is {t}?" for t in texts], "contexts": contexts}

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        inputs = self.sample_inputs(texts)
        return {"answer": {k: (v, "string") for k, v in inputs.items()}}

    def check_validation(self, texts, results) -> str:
        inputs = self.sample_inputs(texts)
        want = self._model.answer(
            self.tokenizer, inputs["questions"], inputs["contexts"], self.rule
        )
        got = results["answer"]
        for i, answer in enumerate(want):
            if (got["answers"][i], got["starts"][i], got["ends"][i]) != (
                answer.text,
                answer.start,
                answer.end,
            ):
                raise ValueError(
                    f"the answer differs after reloading for {inputs['questions'][i]!r}"
                )
        diff = float(np.max(np.abs(np.asarray(got["scores"]) - [a.score for a in want])))
        if diff > 1e-5:
            raise ValueError(f"answer scores differ after reloading by {diff:.3g}")
        rows = read_windows(
            self.tokenizer,
            tf.constant(inputs["questions"]),
            tf.constant(inputs["contexts"]),
            self.rule,
        ).counts
        return (
            f"answers to {len(want)} questions ({int(tf.reduce_sum(rows))} windows): identical "
            f"spans, max score difference {diff:.2g}"
        )
