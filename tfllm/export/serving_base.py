"""The contract between a task's serving module and the exporter."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.python.trackable.data_structures import NoDependency


class ServingModule(tf.Module):
    """Base of the `tf.Module`s whose signatures an export serves, one per kind of task.

    It holds the model's variables and the tokenizer (what the SavedModel stores) and keeps the
    Keras model itself out of `tf.Module`'s tracking, which would write every weight a second
    time (its Keras variable wrappers). The exporter calls, on every module:

    - `signatures()`: `{name: concrete function}` to save;
    - `method_names()`: signatures that are not Predict's (`{name: TF Serving method}`);
    - `sample_inputs(texts)`: `serving_default` inputs built from sample texts;
    - `warmup_requests(texts)`: the warmup records, `[(signature, {input: (value, dtype)})]`,
      one or more for every signature (by default `serving_default` at batches of 1 and 2,
      then each other signature's validation request), so that a server has initialized
      every signature's graph before the first request;
    - `prompt_context()`: the most ids a prompt may have before generation keeps only its
      last ones (a causal LM's context), which the OpenAI API refuses to exceed; None where
      prompts are cut to fit (an encoder-decoder's sources) or the export does not generate;
    - `validation_requests(texts)` and `check_validation(texts, results)`: what the reloaded
      export runs in a fresh process (`{signature: {input: (value, dtype)}}`, dtype `bytes` for
      binary strings), and the comparison of its results with the Keras model, which returns a
      summary or raises `ValueError`.

    Args:
        model: the Keras task model.
        tokenizer: its tokenizer (a `tfllm` tokenizer layer).
        name: the module's name.
    """

    def __init__(self, model, tokenizer, name: str):
        super().__init__(name=name)
        from tfllm.models.variables import model_variables

        self._model = NoDependency(model)
        self.tokenizer = tokenizer
        self.model_variables = list(model_variables(model).values())
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def share_text_functions(self, detokenize: bool = True) -> None:
        """Trace tokenization (`self._encode(texts)`: ragged ids) and, with `detokenize`,
        detokenization (`self._decode_text(ids)`: texts, special tokens skipped) once each,
        as functions the module's signatures call: the SavedModel then stores them once
        rather than a copy in every signature (SmolLM2's byte-level BPE is about 4,700 ops
        and 1 MB of constants a copy; sharing them halved its export's graph and its load
        time)."""
        tokenizer = self.tokenizer
        self._encode = tf.function(
            lambda texts: tokenizer(texts),
            input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
            autograph=False,
        )
        if detokenize:
            self._decode_text = tf.function(
                lambda ids: tokenizer.detokenize(ids, skip_special_tokens=True), autograph=False
            )

    def signatures(self) -> dict[str, Any]:
        raise NotImplementedError

    def method_names(self) -> dict[str, str]:
        return {}

    def sample_inputs(self, texts) -> dict[str, Any]:
        raise NotImplementedError

    def prompt_context(self) -> int | None:
        return None

    def warmup_requests(self, texts) -> list[tuple[str, dict[str, tuple[Any, str]]]]:
        others = self.validation_requests(texts)
        return self.default_warmup(texts) + [
            (name, request) for name, request in others.items() if name != "serving_default"
        ]

    def default_warmup(self, texts) -> list[tuple[str, dict[str, tuple[Any, str]]]]:
        """`serving_default` records at batches of 1 and 2 of `sample_inputs`."""
        batches = [self.sample_inputs(texts[:n]) for n in (1, 2)]
        return [("serving_default", {k: (v, "string") for k, v in b.items()}) for b in batches]

    def validation_requests(self, texts) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def check_validation(self, texts, results) -> str:
        raise NotImplementedError
