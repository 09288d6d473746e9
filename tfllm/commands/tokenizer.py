"""`tfllm tokenizer train tokenizer=bpe tokenizer.vocab_size=N data.path=... out=DIR`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, user_error

USAGE = "usage: tfllm tokenizer train tokenizer=NAME [tokenizer.vocab_size=N] data.path=... out=DIR"


def tokenizer_train_job(plain: dict[str, Any]) -> None:
    from tfllm import registry

    tokenizer = registry.build("tokenizer", plain["tokenizer"], key="tokenizer")
    dataset = registry.build("dataset", plain["data"], key="data")
    if not hasattr(tokenizer, "adapt"):
        raise CommandError(f"tokenizer '{plain['tokenizer']['name']}' is not trainable")
    train_docs, _ = dataset.texts()
    with user_error("tokenizer: "):
        tokenizer.adapt(train_docs)
    tokenizer.save_to_directory(plain["out"])
    print(
        f"wrote a {plain['tokenizer']['name']} tokenizer with {tokenizer.vocabulary_size:,} "
        f"tokens to {plain['out']}"
    )
    asked = plain["tokenizer"].get("vocab_size")
    if isinstance(asked, int) and tokenizer.vocabulary_size < asked:
        print(
            f"tfllm: note: tokenizer.vocab_size={asked:,} asked for more tokens than this corpus "
            f"yields: it reached {tokenizer.vocabulary_size:,}",
            file=sys.stderr,
        )


def main(argv: Sequence[str]) -> None:
    if argv[:1] != ["train"]:
        raise CommandError(USAGE)
    run_hydra("tokenizer train", "tokenizer_train", tokenizer_train_job, argv[1:])
