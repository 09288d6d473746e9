"""`tfllm serve model_base_path=DIR model_name=NAME`: a development server with TF Serving's
gRPC and REST APIs, until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, user_error


def model_configs(plain: dict[str, Any]) -> list[Any]:
    """The served models: a model config file, or one base path and name."""
    from tfllm.serving.servables import ModelConfig, parse_model_config_file

    if plain["model_config_file"]:
        if plain["model_base_path"] or plain["model_name"]:
            raise CommandError(
                "pass model_config_file= or model_base_path= + model_name=, not both"
            )
        with user_error():
            return parse_model_config_file(plain["model_config_file"])
    if plain["model_base_path"] and plain["model_name"]:
        return [ModelConfig(plain["model_name"], os.path.abspath(plain["model_base_path"]))]
    raise CommandError("pass model_base_path= and model_name= (or model_config_file=)")


def batching_config(plain: dict[str, Any]) -> Any:
    """The batching settings (`enable_batching=true`), or None."""
    from tfllm.serving.predictor import BatchingConfig, parse_batching_file

    if not plain["enable_batching"]:
        return None
    path = plain["batching_parameters_file"]
    with user_error():
        return parse_batching_file(path) if path else BatchingConfig()


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stopping = threading.Event()

    def shutdown(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    # Wake up now and then: a signal the kernel hands to one of gRPC's threads only runs its
    # Python handler when the main thread next executes bytecode, so an untimed wait could
    # sleep through SIGTERM (seen in CI: a server that never stopped).
    while not stopping.wait(0.5):
        pass


def limits_and_security(plain: dict[str, Any]) -> tuple[Any, Any]:
    """The request limits and the TLS/token settings of a serve config."""
    from tfllm.serving.predictor import ServingLimits
    from tfllm.serving.security import Security

    numbers = {
        key: plain[key]
        for key in (
            "max_body_bytes",
            "max_batch_size",
            "max_tensor_elements",
            "max_string_bytes",
            "max_concurrent_runs",
        )
    }
    for key, value in [*numbers.items(), ("read_timeout_seconds", plain["read_timeout_seconds"])]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise CommandError(f"{key}: {value!r} must be a positive number")
    limits = ServingLimits(
        **{k: int(v) for k, v in numbers.items()},
        read_timeout_seconds=float(plain["read_timeout_seconds"]),
    )
    with user_error():
        security = Security(
            token=plain["auth_token"],
            cert_file=plain["tls_cert_file"],
            key_file=plain["tls_key_file"],
            client_ca_file=plain["tls_client_ca_file"],
        )
    return limits, security


def serve_job(plain: dict[str, Any]) -> None:
    models = model_configs(plain)  # the settings are checked before TensorFlow loads
    batching = batching_config(plain)
    limits, security = limits_and_security(plain)
    from tfllm.serving.server import Server

    rest_port = plain["rest_port"]
    if rest_port is not None and rest_port < 0:
        rest_port = None
    openai_port = plain["openai_port"]
    if openai_port is not None and openai_port < 0:
        openai_port = None
    try:
        server = Server(
            models,
            host=plain["host"],
            port=plain["port"],
            rest_port=rest_port,
            batching=batching,
            poll_seconds=plain["file_system_poll_wait_seconds"],
            workers=int(plain["workers"]),
            limits=limits,
            security=security,
            openai_port=openai_port,
        )
    except OSError as e:
        raise CommandError(f"port: {e}") from None
    if server.warning:
        print(f"tfllm: warning: {server.warning}", file=sys.stderr, flush=True)
    server.start()
    for m in models:
        versions = [v.number for v in server.manager.statuses(m.name) if v.state == "AVAILABLE"]
        print(f"model {m.name}: versions {versions or 'none yet'} from {m.base_path}", flush=True)
    rest = f", REST on {plain['host']}:{server.rest_port}" if server.rest_port else ""
    if server.openai_port:
        rest += f", OpenAI API on {plain['host']}:{server.openai_port}/v1"
    extras = [x for x in ("TLS" if security.tls else "", "token" if security.token else "") if x]
    secured = f" ({' and '.join(extras)})" if extras else ""
    print(f"serving gRPC on {plain['host']}:{server.port}{rest}{secured}", flush=True)
    wait_for_signal()
    server.stop()
    print("server stopped", flush=True)


def main(argv: Sequence[str]) -> None:
    run_hydra("serve", "serve", serve_job, argv)
