"""Loading what a training run left in its directory: config, tokenizer, latest weights."""

from __future__ import annotations

import os
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
