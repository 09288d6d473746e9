"""Prompts for reinforcement learning: chat-templated, right-padded, room left for the reply."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.chat import DEFAULT_TEMPLATE, render
from tfllm.data.jsonl import records
from tfllm.data.rows import RowDataset
from tfllm.registry import ConfigError, register

log = logging.getLogger(__name__)


def read_prompts(path: str) -> list[list[dict[str, str]]]:
    """Prompts of a JSON-lines file, as conversations to continue: `prompt` (a user message)
    or `messages`. Errors name the file and line."""
    out = []
    for number, row in records(path):
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            out.append([{"role": "user", "content": row["prompt"]}])
        elif isinstance(row, dict) and isinstance(row.get("messages"), list) and row["messages"]:
            out.append([{"role": m["role"], "content": m["content"]} for m in row["messages"]])
        else:
            raise ConfigError(f"{path}:{number}: needs a string 'prompt' or a 'messages' list")
    if not out:
        raise ConfigError(f"{path}: no prompts")
    return out


@dataclass
class PromptSplit:
    ids: np.ndarray  # (N, P + C) prompts, right-padded, room for the reply
    lengths: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.ids)


@register("dataset", "prompts")
class PromptDataset(RowDataset):
    """Prompts in JSON lines for `task=ppo`: each rendered with the chat template and its
    generation prompt, kept to its last `sequence_length - completion_length` tokens, and
    right-padded to `sequence_length` (the decode buffer). Batches hold `prompt_ids`,
    `prompt_lengths` and `loss_weights`.

    Args:
        train, val: JSON-lines files (`prompt`, or `messages`).
        template: a Jinja chat template, or None (the checkpoint's, else the default).
        sequence_length: int. Prompt and reply together, in tokens.
        completion_length: int. Room for the reply (usually `${task.max_new_tokens}`).
        batch_size: int. Global prompts per step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        template: str | None = None,
        sequence_length: int = 80,
        completion_length: int = 16,
        batch_size: int = 8,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both JSON-lines files are required")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if not 1 <= completion_length < sequence_length:
            raise ConfigError(
                f"data.completion_length must be in [1, data.sequence_length={sequence_length}), "
                f"got {completion_length}"
            )
        self.train = train
        self.val = val
        self.template = template or DEFAULT_TEMPLATE
        self.sequence_length = sequence_length
        self.completion_length = completion_length
        self.prompt_length = sequence_length - completion_length
        self.batch_size = batch_size
        self.seed = seed

    def texts(self) -> tuple[list[str], list[str]]:
        return tuple(  # type: ignore[return-value]
            [render(self.template, m, True) for m in read_prompts(path)]
            for path in (self.train, self.val)
        )

    def encode(self, tokenizer, path: str) -> PromptSplit:
        texts = [render(self.template, m, True) for m in read_prompts(path)]
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        split = PromptSplit(
            np.full((len(texts), self.sequence_length), pad, np.int32),
            np.zeros(len(texts), np.int32),
        )
        cut = 0
        for i, ids in enumerate(tokenizer.encode(texts)["input_ids"]):
            if not ids:
                raise ConfigError(f"{path}: prompt {i + 1} encodes to no tokens")
            if len(ids) > self.prompt_length:
                cut += 1
                ids = ids[-self.prompt_length :]
            split.ids[i, : len(ids)] = ids
            split.lengths[i] = len(ids)
        if cut:
            log.warning(
                "%s: %d prompts kept to their last %d tokens", path, cut, self.prompt_length
            )
        return split

    def _gather(self, split: PromptSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        return {
            "prompt_ids": tf.ensure_shape(
                tf.gather(tf.constant(split.ids), rows), [per_replica, self.sequence_length]
            ),
            "prompt_lengths": tf.ensure_shape(
                tf.gather(tf.constant(split.lengths), rows), [per_replica]
            ),
            "loss_weights": tf.ensure_shape(weights, [per_replica]),
        }
