"""What a run needs before its model is built: the config (inherited with `init_from=` and
validated), the dataset, and the tokenizer (loaded from the run, the source run, or trained on
the training split)."""

from __future__ import annotations

import logging
import os
from typing import Any

from tfllm import registry
from tfllm.components.tokenizers.base import Tokenizer, load_tokenizer
from tfllm.models.builder import build_tokenizer
from tfllm.registry import ConfigError
from tfllm.runs import load_run_config, tokenizer_dir
from tfllm.training.validation import validate_train_config

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


def prepare_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training config checked and typed, with the architecture of `init_from` if set."""
    if cfg.get("init_from"):
        cfg = inherit_architecture(cfg, cfg["init_from"])
    return validate_train_config(cfg)


def build_dataset(cfg: dict[str, Any]) -> Any:
    """The `data` group's dataset. Chat data without a template of its own uses the
    checkpoint's (`chat.template`), and the template it uses is recorded in `cfg["chat"]`, kept
    with the run for `tfllm chat`."""
    data = cfg["data"]
    if "template" in data and not data["template"]:
        data["template"] = (cfg.get("chat") or {}).get("template")
    dataset = registry.build("dataset", data, key="data")
    template = getattr(dataset, "template", None)  # a dataset attribute, not a task hook
    if template:
        cfg["chat"] = {**(cfg.get("chat") or {}), "template": template}
    return dataset


def prepare_tokenizer(cfg: dict[str, Any], dataset: Any, run_dir: str) -> Tokenizer:
    """The run's own tokenizer if it has one (a resumed run), else the `init_from` run's, else
    (prepared data) the one the data was prepared with, else the configured one, trained on the
    training split if it needs training. With prepared data, a tokenizer from elsewhere must be
    the one it was prepared with."""
    saved = tokenizer_dir(run_dir)
    # Prepared data is already tokenized: the tokenizer comes with it, and any other must match.
    prepared = getattr(dataset, "prepared_tokenizer", None)  # a dataset attribute, not a hook
    if os.path.exists(os.path.join(saved, "tokenizer.json")):
        tokenizer, where = load_tokenizer(saved), f"this run's tokenizer ({saved})"
    elif cfg.get("init_from"):
        source = tokenizer_dir(cfg["init_from"])
        tokenizer, where = load_tokenizer(source), f"the init_from tokenizer ({source})"
    elif prepared is not None:
        return prepared()
    else:
        tokenizer, where = None, ""
    if tokenizer is not None:
        if prepared is not None:
            dataset.check_tokenizer(tokenizer, where)
        return tokenizer
    tokenizer = build_tokenizer(cfg)
    if not tokenizer.is_trained():
        train_docs, _ = dataset.texts()
        tokenizer.adapt(train_docs)
        asked = cfg["tokenizer"].get("vocab_size")
        short = isinstance(asked, int) and tokenizer.vocabulary_size < asked
        log.info(
            "trained a %s tokenizer of %s tokens on the training split%s",
            cfg["tokenizer"]["name"],
            f"{tokenizer.vocabulary_size:,}",
            f" (tokenizer.vocab_size={asked:,} asked for more than it yields)" if short else "",
        )
    return tokenizer
