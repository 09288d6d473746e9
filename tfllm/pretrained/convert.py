"""`tfllm convert`: a pretrained checkpoint in, a tfllm checkpoint directory out, atomically."""

from __future__ import annotations

import os

from tfllm.pretrained.imported import ImportedModel, PretrainedError, build_model
from tfllm.runs import write_run


def import_source(source: str) -> ImportedModel:
    """Read a GGUF file or an HF model directory (`config.json` + safetensors)."""
    if os.path.isdir(source):
        from tfllm.pretrained.hf import import_hf

        return import_hf(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"source: no such file or directory: {source}")
    with open(source, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from tfllm.pretrained.gguf_file import import_gguf

        return import_gguf(source)
    raise PretrainedError(
        f"{source}: not a GGUF file (no GGUF magic) nor a model directory with config.json"
    )


def convert(source: str, out: str, overwrite: bool = False) -> ImportedModel:
    """Import `source` and write a tfllm checkpoint to `out`.

    Everything is written to a temporary sibling of `out` and renamed into place at the end,
    so a failure (a corrupt tensor, a full disk, Ctrl-C) leaves `out` as it was.

    Raises:
        PretrainedError: the source cannot be imported (the message names the tensor).
        FileExistsError: `out` exists and is not empty, and `overwrite` is False.
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    imported = import_source(source)
    write_run(build_model(imported), imported.tokenizer, imported.run_config(), out, overwrite)
    return imported
