"""The graph a reward model serves: TF Serving's Regress API and a Predict signature."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.export.serving_base import ServingModule
from tfllm.export.text_graph import (
    checked_token_ids,
    example_bytes,
    parse_text_features,
    text_checks,
    tf_assert,
)


def template_pieces(template: str) -> tuple[str, str, str, str]:
    """`(before_prompt, after_prompt, before_reply, after_reply)`: the text a chat template puts
    around a one-turn conversation's prompt and reply, found by rendering it with markers.

    The pieces are what the template adds whatever the content is; a template that changes the
    content (trims it, changes its case) or repeats it cannot be mirrored in a graph.

    Raises:
        ValueError: the template is such a template.

    Example:

    >>> template_pieces("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    ...                 "{% if add_generation_prompt %}<assistant>{% endif %}")
    ('<user>', '<assistant>', '', '')
    """
    from tfllm.data.chat import conversation_texts

    found = set()
    for prompt, reply in (("\x01P\x01", "\x01R\x01"), ("  p \x02 q ", " \x02r\n ")):
        head, full = conversation_texts(template, prompt, reply)
        if head.count(prompt) != 1 or full[len(head) :].count(reply) != 1 or reply in head:
            raise ValueError(
                "the chat template changes or repeats the message content; a reward export "
                "needs one that places it verbatim"
            )
        before_prompt, after_prompt = head.split(prompt)
        before_reply, after_reply = full[len(head) :].split(reply)
        found.add((before_prompt, after_prompt, before_reply, after_reply))
    if len(found) != 1:
        raise ValueError("the chat template renders differently for different content")
    return found.pop()


class RewardServing(ServingModule):
    """Signatures of a reward model (`task=reward`): a score per (prompt, reply).

    The conversation `[user: prompt, assistant: reply]` is rendered with the run's chat
    template and tokenized as the preference data tokenizes it (`tfllm.data.chat.
    conversation_ids`: the prompt part and the reply part each on their own, eos after the
    reply), then cut to `sequence_length` tokens.

    - `serving_default(prompts, replies)` (Predict): `scores` (float32 `[B]`).
    - `regression(inputs)` (method `tensorflow/serving/regress`, for TF Serving's Regress API):
      serialized `tf.Example`s with bytes features `prompt_feature` and `reply_feature` to
      `outputs` (float32 `[B]`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        template: str,
        sequence_length: int,
        prompt_feature: str = "prompt",
        reply_feature: str = "reply",
    ):
        super().__init__(model, tokenizer, "tfllm_reward")
        if not prompt_feature or not reply_feature or prompt_feature == reply_feature:
            raise ValueError(
                f"prompt_feature and reply_feature must be distinct non-empty names, got "
                f"{prompt_feature!r} and {reply_feature!r}"
            )
        self.template = template
        self.pieces = template_pieces(template)
        self.sequence_length = int(min(sequence_length, model.max_sequence_length))
        self.prompt_feature, self.reply_feature = prompt_feature, reply_feature
        self.eos_id = tokenizer.eos_id
        strings = lambda name: tf.TensorSpec([None], tf.string, name=name)  # noqa: E731
        self.predict = tf.function(
            self._predict, input_signature=[strings("prompts"), strings("replies")], autograph=False
        )
        self.regress = tf.function(
            self._regress, input_signature=[strings("inputs")], autograph=False
        )

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.predict.get_concrete_function(),
            "regression": self.regress.get_concrete_function(),
        }

    def method_names(self) -> dict[str, str]:
        return {"regression": tf.saved_model.REGRESS_METHOD_NAME}

    def _scores(self, prompts, replies):
        before_prompt, after_prompt, before_reply, after_reply = self.pieces
        same = tf_assert(
            tf.shape(prompts)[0] == tf.shape(replies)[0], "replies must have one entry per prompt"
        )
        with tf.control_dependencies([same, *text_checks(replies, "replies")]):
            head = tf.strings.join([before_prompt, prompts, after_prompt])  # (B,)
            tail = tf.strings.join([before_reply, tf.identity(replies), after_reply])
        head_ids = checked_token_ids(self.tokenizer, head, "prompts")  # (B, None)
        tail_ids = tf.cast(self.tokenizer(tail), tf.int32)  # (B, None)
        parts = [head_ids, tail_ids]
        if self.eos_id is not None:  # the eos that ends a reply, unless the reply has one
            missing = ~tf.reduce_any(tf.equal(tail_ids, self.eos_id), axis=1)  # (B,)
            eos = tf.fill([tf.reduce_sum(tf.cast(missing, tf.int32))], self.eos_id)
            lengths = tf.cast(missing, tail_ids.row_splits.dtype)
            parts.append(tf.RaggedTensor.from_row_lengths(eos, lengths))
        ids = tf.concat(parts, axis=1)  # (B, None)
        lengths = tf.minimum(ids.row_lengths(), self.sequence_length)
        dense = ids.to_tensor(default_value=self.pad_id)[:, : self.sequence_length]  # (B, T)
        mask = tf.sequence_mask(lengths, tf.shape(dense)[1])  # (B, T)
        return tf.cast(self._model(dense, padding_mask=mask), tf.float32)  # (B,)

    def _predict(self, prompts, replies):
        return {"scores": self._scores(prompts, replies)}

    def _regress(self, inputs):
        parsed = parse_text_features(inputs, [self.prompt_feature, self.reply_feature])
        return {"outputs": self._scores(parsed[self.prompt_feature], parsed[self.reply_feature])}

    # ----- what the exporter writes and checks ---------------------------------------------
    def examples(self, prompts, replies) -> list[bytes]:
        """Serialized `tf.Example`s of (prompt, reply) pairs with this export's feature names."""
        return [
            example_bytes({self.prompt_feature: prompt, self.reply_feature: reply})
            for prompt, reply in zip(prompts, replies, strict=True)
        ]

    def sample_inputs(self, texts) -> dict[str, Any]:
        return {"prompts": list(texts), "replies": list(reversed(texts))}

    def expected_scores(self, prompts, replies) -> np.ndarray:
        """The Keras model's scores, encoded by the preference data's own Python code."""
        from tfllm.data.chat import conversation_ids
        from tfllm.tasks.packing import pad_rows

        rows = []
        for prompt, reply in zip(prompts, replies, strict=True):
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": reply},
            ]
            rows.append(conversation_ids(self.tokenizer, self.template, messages)[0])
        ids, mask = pad_rows([r[: self.sequence_length] for r in rows], self.pad_id)
        return np.asarray(self._model(ids, padding_mask=mask), np.float32)

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        inputs = self.sample_inputs(texts)
        examples = self.examples(inputs["prompts"], inputs["replies"])
        return {
            "serving_default": {k: (v, "string") for k, v in inputs.items()},
            "regression": {"inputs": ([e.decode("latin-1") for e in examples], "bytes")},
        }

    def check_validation(self, texts, results) -> str:
        inputs = self.sample_inputs(texts)
        want = self.expected_scores(inputs["prompts"], inputs["replies"])
        got = np.asarray(results["serving_default"]["scores"], np.float32)
        regressed = np.asarray(results["regression"]["outputs"], np.float32)
        diff = float(max(np.max(np.abs(got - want)), np.max(np.abs(regressed - want))))
        if diff > 1e-4 * max(1.0, float(np.max(np.abs(want)))):
            raise ValueError(f"reward scores differ after reloading by {diff:.3g}")
        return f"reward scores of {len(texts)} pairs: max difference {diff:.2g}"
