"""TF Serving's Classify and Regress APIs, transport aside: `tf.Example`s in (with context
features), the method name a signature must carry, and the answers read off its outputs. The
gRPC and REST front ends both go through here."""

from __future__ import annotations

from typing import Any

import grpc

from tfllm.serving.servables import ServingError

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# What TF Serving calls a signature of each method in its errors.
METHOD_KINDS = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


def with_context(context, examples) -> list[Any]:
    """`examples` with the `context` Example's features joined to each (an example's own
    feature wins), as TF Serving's `example_list_with_context`; `context` may be None."""
    if context is None:
        return list(examples)
    merged = []
    for own in examples:
        example = type(own)()
        example.CopyFrom(context)
        for key, feature in own.features.feature.items():
            example.features.feature[key].CopyFrom(feature)
        merged.append(example)
    return merged


def check_method(sig_def, method: str) -> None:
    """INVALID_ARGUMENT unless the signature carries TF Serving's `method` name."""
    if sig_def.method_name != method:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expected {METHOD_KINDS[method]} signature method_name to be {method}. "
            f"Was: {sig_def.method_name}",
        )


def classification_rows(outputs) -> list[list[tuple[str | None, float | None]]]:
    """`[(label, score), ...]` per example from a classify signature's `classes`/`scores`."""
    scores, classes = outputs.get("scores"), outputs.get("classes")
    if scores is None and classes is None:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "a classification signature outputs 'classes' and/or 'scores'",
        )
    shaped = scores if scores is not None else classes
    rows = []
    for i in range(shaped.shape[0]):
        row = []
        for j in range(shaped.shape[1]):
            label = None
            if classes is not None:
                value = classes[i, j]
                label = value.decode() if isinstance(value, bytes) else str(value)
            row.append((label, None if scores is None else float(scores[i, j])))
        rows.append(row)
    return rows


def regression_values(outputs) -> list[float]:
    """One float per example from a regress signature's `outputs` (`[B]` or `[B, 1]`)."""
    values = outputs.get("outputs")
    if values is None or values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[1] != 1):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "a regression signature outputs 'outputs' of shape [B] or [B, 1]",
        )
    return [float(v) for v in values.reshape(-1)]
