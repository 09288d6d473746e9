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

from tfllm.serving.examples import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    classification_rows,
    regression_values,
    with_context,
)
from tfllm.serving.predictor import Liveness, Predictor, as_numpy
from tfllm.serving.servables import ServingError

log = logging.getLogger(__name__)


def input_examples(model_input) -> list[Any]:
    """The `tf.Example`s of a Classify/Regress `Input`: an `example_list`, or an
    `example_list_with_context` (the context's features joined to every example)."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return list(model_input.example_list.examples)
    if kind == "example_list_with_context":
        listed = model_input.example_list_with_context
        return with_context(listed.context, listed.examples)
    return []


def _set_spec(response, name: str, number: int, signature: str | None = None) -> None:
    response.model_spec.name = name
    response.model_spec.version.value = number
    if signature is not None:
        response.model_spec.signature_name = signature


def _spec(model_spec) -> tuple[str, int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return model_spec.name, version, label


def liveness(context) -> Liveness:
    """Whether a gRPC request's client still wants the answer: CANCELLED once it has gone,
    DEADLINE_EXCEEDED once its deadline has passed."""

    def live() -> tuple[grpc.StatusCode, str] | None:
        if not context.is_active():
            return grpc.StatusCode.CANCELLED, "the client cancelled the request"
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed"
        return None

    return live


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
            limit = self.predictor.limits.max_tensor_elements
            inputs = {k: as_numpy(v, limit) for k, v in request.inputs.items()}
            resolved, sig, outputs = self.predictor.predict(
                name,
                version,
                label,
                request.model_spec.signature_name,
                inputs,
                list(request.output_filter),
                live=liveness(context),
            )
            response = predict_pb2.PredictResponse()
            _set_spec(response, name, resolved.number, sig)
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
            _set_spec(response, name, resolved.number)
            response.metadata["signature_def"].Pack(signature_map)
            return response

        return _answer(context, handle)

    def _run_examples(self, request, context, method: str):
        """`(name, version number, signature, outputs)` of a Classify/Regress request."""
        name, version, label = _spec(request.model_spec)
        resolved, sig_name, outputs = self.predictor.run_examples(
            name,
            version,
            label,
            request.model_spec.signature_name,
            input_examples(request.input),
            method,
            live=liveness(context),
        )
        return name, resolved.number, sig_name, outputs

    def Classify(self, request, context):
        """Serialized `tf.Example`s through a signature whose method is classify (inputs:
        `inputs` string [B]; outputs `classes` and/or `scores` [B, C])."""

        def handle():
            name, number, sig_name, outputs = self._run_examples(request, context, CLASSIFY_METHOD)
            response = classification_pb2.ClassificationResponse()
            _set_spec(response, name, number, sig_name)
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
            name, number, sig_name, outputs = self._run_examples(request, context, REGRESS_METHOD)
            response = regression_pb2.RegressionResponse()
            _set_spec(response, name, number, sig_name)
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
            name, version, label = _spec(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in self.manager.statuses(name, version, label):
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
