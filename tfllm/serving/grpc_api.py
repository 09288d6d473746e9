"""TF Serving's gRPC API: `PredictionService` (Predict, Classify, GetModelMetadata) and
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
)

from tfllm.serving.predictor import Predictor, as_numpy
from tfllm.serving.servables import ServingError

log = logging.getLogger(__name__)

CLASSIFY_METHOD = "tensorflow/serving/classify"


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

    def Classify(self, request, context):
        """Serialized `tf.Example`s through a signature whose method is classify (inputs:
        `inputs` string [B]; outputs `classes` and/or `scores` [B, C])."""

        def handle():
            import numpy as np

            name, version, label = _spec(request.model_spec)
            resolved = self.predictor.manager.resolve(name, version, label)
            sig_name = request.model_spec.signature_name or "serving_default"
            sig_name, fn, sig_def = self.predictor.signature(resolved, sig_name)
            if sig_def.method_name != CLASSIFY_METHOD:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                    f"Was: {sig_def.method_name}",
                )
            examples = request.input.example_list.examples
            if not examples:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")
            serialized = np.asarray([e.SerializeToString() for e in examples], dtype=object)
            input_key = next(iter(sig_def.inputs))
            _, _, outputs = self.predictor.predict(
                name, resolved.number, None, sig_name, {input_key: serialized}
            )
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = name
            response.model_spec.version.value = resolved.number
            response.model_spec.signature_name = sig_name
            scores = outputs.get("scores")
            classes = outputs.get("classes")
            rows = len(examples)
            for i in range(rows):
                result = response.result.classifications.add()
                width = (scores if scores is not None else classes).shape[1]
                for j in range(width):
                    cls = result.classes.add()
                    if classes is not None:
                        value = classes[i, j]
                        cls.label = value.decode() if isinstance(value, bytes) else str(value)
                    if scores is not None:
                        cls.score = float(scores[i, j])
            return response

        return _answer(context, handle)

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not served by tfllm serve")

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
