"""Loading what a training run left in its directory: config, tokenizer, latest weights."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from tfllm.components.tokenizers.base import Tokenizer, load_tokenizer
from tfllm.config import load_run_config
from tfllm.models.builder import build_model
from tfllm.registry import ConfigError
from tfllm.training.checkpoint import model_variables
from tfllm.training.trainer import CHECKPOINT_DIR, TOKENIZER_DIR


def load_run(run_dir: str, checkpoint: str | None = None) -> tuple[Any, Tokenizer, dict]:
    """Rebuild a run's model from its saved config and restore its latest checkpoint.

    Args:
        run_dir: a directory written by `tfllm train`.
        checkpoint: a specific checkpoint prefix (default: the latest).

    Returns:
        `(model, tokenizer, config)`.
    """
    if not os.path.isdir(run_dir):
        raise ConfigError(f"ckpt: no such directory: {run_dir}")
    cfg = load_run_config(run_dir)
    tokenizer = load_tokenizer(os.path.join(run_dir, TOKENIZER_DIR))
    model = build_model(
        cfg,
        tokenizer.vocabulary_size,
        tokenizer.special_token_ids(),
        tokenizer.sentinel_ids(),
        tokenizer,
    )
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    if path is None:
        raise ConfigError(f"ckpt: {run_dir} has no checkpoint yet")
    status = tf.train.Checkpoint(model=model_variables(model)).restore(path).expect_partial()
    status.assert_existing_objects_matched()
    return model, tokenizer, cfg


def load_config_and_tokenizer(path: str) -> tuple[dict[str, Any], Tokenizer]:
    """A run's (or an export version's `assets.extra/`) resolved config and tokenizer, without
    building the model: what a client of a served model needs."""
    extra = os.path.join(path, "assets.extra")
    base = extra if os.path.exists(os.path.join(extra, "config.yaml")) else path
    if not os.path.isdir(base):
        raise ConfigError(f"ckpt: no such directory: {path}")
    cfg = load_run_config(base)
    return cfg, load_tokenizer(os.path.join(base, TOKENIZER_DIR))


def write_checkpoint(model: Any, tokenizer: Tokenizer, config: dict, out: str) -> None:
    """Write `config.yaml`, `tokenizer/` and `checkpoints/` into the new directory `out`.

    The layout is a training run's, so `generate`, `chat`, `embed`, `export`, `evaluate` and
    `train init_from=` read it like any run.
    """
    from tfllm.config import save_run_config

    save_run_config(config, out)
    tokenizer.save_to_directory(os.path.join(out, TOKENIZER_DIR))
    checkpoint = tf.train.Checkpoint(model=model_variables(model))
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out, CHECKPOINT_DIR), max_to_keep=1, checkpoint_name="ckpt"
    )
    manager.save(checkpoint_number=0)


def write_run(
    model: Any, tokenizer: Tokenizer, config: dict, out: str, overwrite: bool = False
) -> None:
    """`write_checkpoint` into a temporary sibling of `out`, renamed into place at the end, so
    a failure (a full disk, Ctrl-C) leaves `out` as it was.

    Raises:
        FileExistsError: `out` exists and is not empty, and `overwrite` is False.
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        write_checkpoint(model, tokenizer, config, staging)
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
