"""What a run needs before its model is built, besides its config (`run_config`): the dataset,
and the tokenizer (loaded from the run, the source run, or trained on the training split)."""

from __future__ import annotations

import logging
import os
from typing import Any

from tfllm import registry
from tfllm.components.tokenizers.base import Tokenizer, load_tokenizer
from tfllm.models.builder import build_tokenizer
from tfllm.runs import tokenizer_dir

log = logging.getLogger(__name__)


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
