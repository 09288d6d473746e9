"""`tfllm embed ckpt=DIR text="..." | 'texts=[a,b]' [format=json|similarity]`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, texts_argument


def embed_job(plain: dict[str, Any]) -> None:
    import numpy as np

    from tfllm.runs import load_run

    texts = texts_argument(plain, "text", "texts")
    if plain["format"] not in ("json", "similarity"):
        raise CommandError(f"format: must be json or similarity, got {plain['format']!r}")
    model, tokenizer, run_cfg = load_run(plain["ckpt"])
    if not hasattr(model, "embed_texts"):
        raise CommandError(
            f"ckpt: {plain['ckpt']} is a {run_cfg['task']['name']} model; embed needs a "
            "sentence_embedding model (for example: tfllm pretrained pull minilm-l6-v2)"
        )
    max_length = plain["max_length"] or (run_cfg.get("embedding") or {}).get("max_length")
    vectors = model.embed_texts(tokenizer, texts, max_length=max_length)
    if plain["format"] == "similarity":  # cosine similarities, rows and columns numbered
        width = max(len(f"[{len(texts) - 1}]"), 7)
        print(" " * width + "".join(f"{f'[{j}]':>{width + 1}}" for j in range(len(texts))))
        for i, row in enumerate(vectors @ vectors.T):
            cells = "".join(f"{v:>{width + 1}.4f}" for v in row)
            print(f"{f'[{i}]':<{width}}{cells}   {texts[i]}")
    else:
        for v in np.asarray(vectors):
            print(json.dumps([round(float(x), 7) for x in v]))


def main(argv: Sequence[str]) -> None:
    run_hydra("embed", "embed", embed_job, argv)
