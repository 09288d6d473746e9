"""`tfllm serve`: a development server that speaks TF Serving's gRPC and REST APIs.

It exists so that exports can be served, queried and tested on a machine without the
TensorFlow Serving binary. Production runs the real `tensorflow/serving` (see `serving/`).
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tfllm.serving.grpc_api import ModelServicer, PredictionServicer
from tfllm.serving.openai_api import make_openai_server
from tfllm.serving.predictor import BatchingConfig, Predictor, ServingLimits
from tfllm.serving.rest_api import make_rest_server
from tfllm.serving.security import Security, exposure_warning
from tfllm.serving.servables import ModelConfig, ServableManager

log = logging.getLogger(__name__)


class Server:
    """gRPC (and optionally REST) endpoints over a `ServableManager`.

    Args:
        models: what to serve.
        host: the address to bind (127.0.0.1 by default: a development server).
        port: gRPC port (0 picks a free one; see `self.port` after `start`).
        rest_port: REST port (0 picks a free one, None turns REST off).
        openai_port: the OpenAI-compatible API's port (`tfllm.serving.openai_api`; 0 picks a
            free one, None, the default, turns it off).
        batching: server-side batching settings, or None.
        poll_seconds: how often to look for new versions.
        workers: gRPC worker threads, and REST worker threads (each transport has its own).
        limits: request sizes and concurrent runs (`ServingLimits`).
        security: TLS and bearer-token settings (`Security`); none by default.

    Example:

    >>> server = Server([ModelConfig("lm", "exports/lm")], port=0)  # doctest: +SKIP
    >>> server.start(); print(server.port)  # doctest: +SKIP
    """

    def __init__(
        self,
        models: list[ModelConfig],
        host: str = "127.0.0.1",
        port: int = 8500,
        rest_port: int | None = 8501,
        batching: BatchingConfig | None = None,
        poll_seconds: float = 1.0,
        workers: int = 16,
        limits: ServingLimits | None = None,
        security: Security | None = None,
        openai_port: int | None = None,
    ):
        self.limits = limits or ServingLimits()
        self.security = security or Security()
        self.warning = exposure_warning(host, self.security)
        if self.warning:
            log.warning(self.warning)
        self.manager = ServableManager(models, poll_seconds)
        self.predictor = Predictor(self.manager, batching, self.limits)
        self.host = host
        message_bytes = max(self.limits.max_body_bytes, 4 << 20)
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tfllm-grpc"),
            interceptors=self.security.interceptors(),
            options=[
                ("grpc.max_receive_message_length", message_bytes),
                ("grpc.max_send_message_length", message_bytes),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.predictor), self.grpc_server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.predictor), self.grpc_server
        )
        credentials = self.security.grpc_credentials()
        address = f"{host}:{port}"
        if credentials is None:
            self.port = self.grpc_server.add_insecure_port(address)
        else:
            self.port = self.grpc_server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"port: could not bind gRPC to {host}:{port}")
        self.rest = (
            make_rest_server(self.predictor, host, rest_port, self.security, workers)
            if rest_port is not None
            else None
        )
        self.rest_port = self.rest.server_address[1] if self.rest is not None else None
        self.openai = (
            make_openai_server(self.predictor, host, openai_port, self.security, workers)
            if openai_port is not None
            else None
        )
        self.openai_port = self.openai.server_address[1] if self.openai is not None else None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Load the models (waiting for the first scan), then open the ports."""
        self.manager.start()
        self.grpc_server.start()
        for name, http in (("rest", self.rest), ("openai", self.openai)):
            if http is not None:
                thread = threading.Thread(
                    target=http.serve_forever, name=f"tfllm-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self, grace: float = 2.0) -> None:
        self.grpc_server.stop(grace).wait()
        for http in (self.rest, self.openai):
            if http is not None:
                http.shutdown()
                http.server_close()
        self.predictor.stop()
        self.manager.stop()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()
