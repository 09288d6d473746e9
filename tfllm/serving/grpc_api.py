"""TF Serving's gRPC API: `PredictionService` (Predict, Classify, Regress, GetModelMetadata) and
`ModelService` (GetModelStatus), answered with the status codes TF Serving uses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfllm.serving.predictor import Predictor, as_numpy
from tfllm.serving.servables import ServingError

log = logging.getLogger(__name__)

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def serialized_examples(model_input) -> list[bytes]:
    """The serialized `tf.Example`s of a Classify/Regress `Input`: an `example_list`, or an
    `example_list_with_context` whose context features join every example (an example's own
    feature wins)."""
    from tensorflow.core.example import example_pb2

    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(model_input.example_list.examples)
    elif kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        examples = []
        for own in with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(with_context.context)
            for key, feature in own.features.feature.items():
                merged.features.feature[key].CopyFrom(feature)
            examples.append(merged)
    else:
        examples = []
    if not examples:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")
    return [e.SerializeToString() for e in examples]


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


def _spec(model_spec) -> tuple[str, int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return model_spec.name, version, label


def _answer(context, fn: Callable[[], Any]):
    """Run a handler; turn `ServingError`s (and anything unexpected) into gRPC statuses."""
    try:
        return fn()
    except ServingError as e:
        context.abort(e.code, e.message)
    except grpc.RpcError:
        raise
    except Exception as e:  # a bug must cost one request, never the server
        log.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def Predict(self, request, context):
        def handle():
            import tensorflow as tf

            name, version, label = _spec(request.model_spec)
            if not name:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is empty")
            inputs = {k: as_numpy(v) for k, v in request.inputs.items()}
            resolved, sig, outputs = self.predictor.predict(
                name,
                version,
                label,
                request.model_spec.signature_name,
                inputs,
                list(request.output_filter),
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = resolved.number
            response.model_spec.signature_name = sig
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        return _answer(context, handle)

    def GetModelMetadata(self, request, context):
        def handle():
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Metadata field(s) {fields} not supported; only signature_def",
                )
            name, version, label = _spec(request.model_spec)
            resolved, signature_map = self.predictor.metadata(name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = resolved.number
            response.metadata["signature_def"].Pack(signature_map)
            return response

        return _answer(context, handle)

    def _run_examples(self, request, method: str, what: str):
        """Run a Classify/Regress request: its `tf.Example`s through the named signature,
        which must carry TF Serving's `method` name. Returns `(name, version, signature,
        outputs)`."""
        import numpy as np

        name, version, label = _spec(request.model_spec)
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is empty")
        resolved = self.predictor.manager.resolve(name, version, label)
        sig_name = request.model_spec.signature_name or "serving_default"
        sig_name, fn, sig_def = self.predictor.signature(resolved, sig_name)
        if sig_def.method_name != method:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expected {what} signature method_name to be {method}. Was: {sig_def.method_name}",
            )
        serialized = np.asarray(serialized_examples(request.input), dtype=object)
        input_key = next(iter(sig_def.inputs))
        _, _, outputs = self.predictor.predict(
            name, resolved.number, None, sig_name, {input_key: serialized}
        )
        return name, resolved.number, sig_name, outputs

    def Classify(self, request, context):
        """Serialized `tf.Example`s through a signature whose method is classify (inputs:
        `inputs` string [B]; outputs `classes` and/or `scores` [B, C])."""

        def handle():
            name, number, sig_name, outputs = self._run_examples(
                request, CLASSIFY_METHOD, "classification"
            )
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = name
            response.model_spec.version.value = number
            response.model_spec.signature_name = sig_name
            for row in classification_rows(outputs):
                result = response.result.classifications.add()
                for cls_label, score in row:
                    cls = result.classes.add()
                    if cls_label is not None:
                        cls.label = cls_label
                    if score is not None:
                        cls.score = score
            return response

        return _answer(context, handle)

    def Regress(self, request, context):
        """Serialized `tf.Example`s through a signature whose method is regress (inputs:
        `inputs` string [B]; output `outputs` [B] or [B, 1])."""

        def handle():
            name, number, sig_name, outputs = self._run_examples(
                request, REGRESS_METHOD, "regression"
            )
            response = regression_pb2.RegressionResponse()
            response.model_spec.name = name
            response.model_spec.version.value = number
            response.model_spec.signature_name = sig_name
            for value in regression_values(outputs):
                response.result.regressions.add().value = value
            return response

        return _answer(context, handle)

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not served by tfllm serve")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor):
        self.manager = predictor.manager

    def GetModelStatus(self, request, context):
        def handle():
            name, version, _ = _spec(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in self.manager.statuses(name, version):
                status = response.model_version_status.add()
                status.version = v.number
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(v.state)
                if v.error:
                    status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                    status.status.error_message = v.error
            return response

        return _answer(context, handle)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "tfllm serve reads its model config at start; restart it to change models",
        )
