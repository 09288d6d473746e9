"""`tfllm client model=NAME prompt="..."`: query a served model over gRPC or REST."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, texts_argument


def client_job(plain: dict[str, Any]) -> None:
    from tfllm.serving.client import Client, ServingClientError

    prompts = texts_argument(plain, "prompt", "prompts")
    try:
        client = Client(
            plain["host"],
            plain["port"],
            plain["model"],
            plain["transport"],
            plain["version"],
            plain["timeout"],
        )
        with client:
            completions = client.generate(
                prompts,
                max_new_tokens=plain["max_new_tokens"],
                temperature=plain["temperature"],
                top_k=plain["top_k"],
                top_p=plain["top_p"],
                seed=plain["seed"],
            )
    except (ServingClientError, ValueError) as e:
        raise CommandError(str(e)) from None
    for prompt, text in zip(prompts, completions, strict=True):
        print(prompt + text)


def main(argv: Sequence[str]) -> None:
    # In its own folder: there `model=` is a plain key, not the `model` config group.
    run_hydra("client", "client", client_job, argv, subdir="_client")
