"""What a run needs before its model is built: the config (inherited with `init_from=` and
validated), the dataset, and the tokenizer (loaded from the run, the source run, or trained on
the training split)."""

from __future__ import annotations

import os
from typing import Any

from tfllm import registry
from tfllm.components.tokenizers.base import Tokenizer, load_tokenizer
from tfllm.models.builder import build_tokenizer
from tfllm.registry import ConfigError
from tfllm.runs import load_run_config, tokenizer_dir
from tfllm.training.validation import validate_train_config

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
    return cfg


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
    the configured one, trained on the training split if it needs training."""
    saved = tokenizer_dir(run_dir)
    if os.path.exists(os.path.join(saved, "tokenizer.json")):
        return load_tokenizer(saved)
    if cfg.get("init_from"):
        return load_tokenizer(tokenizer_dir(cfg["init_from"]))
    tokenizer = build_tokenizer(cfg)
    if not tokenizer.is_trained():
        train_docs, _ = dataset.texts()
        tokenizer.adapt(train_docs)
    return tokenizer
