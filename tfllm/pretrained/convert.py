"""`tfllm convert`: a pretrained checkpoint in, a tfllm checkpoint directory out, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile

from tfllm.pretrained.imported import ImportedModel, PretrainedError, build_model


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


def write_checkpoint(model, tokenizer, config: dict, out: str) -> None:
    """Write `config.yaml`, `tokenizer/` and `checkpoints/` into the new directory `out`.

    The layout is a training run's, so `generate`, `chat`, `embed`, `export` and `train
    init_from=` read it like any run.
    """
    import tensorflow as tf

    from tfllm.config import save_run_config
    from tfllm.training.checkpoint import model_variables
    from tfllm.training.trainer import CHECKPOINT_DIR, TOKENIZER_DIR

    save_run_config(config, out)
    tokenizer.save_to_directory(os.path.join(out, TOKENIZER_DIR))
    checkpoint = tf.train.Checkpoint(model=model_variables(model))
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out, CHECKPOINT_DIR), max_to_keep=1, checkpoint_name="ckpt"
    )
    manager.save(checkpoint_number=0)


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
    model = build_model(imported)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        write_checkpoint(model, imported.tokenizer, imported.run_config(), staging)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "previous"))
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return imported
