"""A training run's config, as the run will use it: the architecture of `init_from=` taken
from the run it names, data lengths fitted to that model, and every value checked. Nothing here
imports TensorFlow, so `tfllm train` refuses a bad config before its slow imports."""

from __future__ import annotations

import logging
import os
from typing import Any

from tfllm.registry import ConfigError
from tfllm.runs import load_run_config
from tfllm.training.validation import Components, validate_train_config

log = logging.getLogger(__name__)

# The groups a fine-tuning run takes from the run it starts from.
ARCHITECTURE_GROUPS = ("model", "attention", "positional", "ffn", "norm", "tokenizer", "chat")


def inherit_architecture(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """`cfg` with the architecture of the run (or converted checkpoint) at `source`: the
    backbone (`model`) and its component groups and the tokenizer come from there, so a
    fine-tuning config names only the task, the data and the training settings. `model.dropout`
    keeps the fine-tuning config's value."""
    if not os.path.isdir(source):
        raise ConfigError(f"init_from: no such directory: {source}")
    base = load_run_config(source)
    cfg = dict(cfg)
    dropout = (cfg.get("model") or {}).get("dropout")
    for group in ARCHITECTURE_GROUPS:
        if group in base:
            cfg[group] = dict(base[group])
    if dropout is not None:
        cfg["model"]["dropout"] = dropout
    cfg["data"] = fit_lengths(dict(cfg.get("data") or {}), int(cfg["model"]["max_sequence_length"]))
    return cfg


# Data lengths that must fit the model's context, and for each a share of it (None: all).
LENGTH_KEYS = {
    "sequence_length": None,
    "source_length": None,
    "target_length": None,
    "max_question_length": 2,
}


def fit_lengths(data: dict[str, Any], context: int) -> dict[str, Any]:
    """A fine-tuning run's data lengths, fitted to the context of the model it starts from: a
    default written for bigger models (SFT's 256 tokens, PPO's 80, SQuAD's 64-token questions)
    becomes the context (half of it for a question), with a note.

    >>> fit_lengths({"sequence_length": 256, "max_question_length": 64}, 64)
    {'sequence_length': 64, 'max_question_length': 32}
    """
    for key, share in LENGTH_KEYS.items():
        limit = context if share is None else context // share
        value = data.get(key)
        if isinstance(value, int) and value > limit:
            log.info(
                "data.%s=%d does not fit the model's context of %d tokens (init_from): using %d",
                key,
                value,
                context,
                limit,
            )
            data[key] = limit
    return data


def prepare_config(cfg: dict[str, Any], components: Components | None = None) -> dict[str, Any]:
    """The training config checked and typed, with the architecture of `init_from` if set.

    `components` checks component names and arguments (default: against the registry, which
    loads TensorFlow; `tfllm train` checks against the cached catalog first).
    """
    if cfg.get("init_from"):
        cfg = inherit_architecture(cfg, cfg["init_from"])
    return validate_train_config(cfg, components)
