"""Preference pairs (a prompt, a chosen and a rejected reply), for reward models and DPO."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.data.chat import ChatDataset, conversations_ids, render
from tfllm.data.jsonl import records
from tfllm.registry import ConfigError, register

log = logging.getLogger(__name__)


def read_preferences(path: str) -> list[tuple[str, str, str]]:
    """`(prompt, chosen, rejected)` per record of a JSON-lines or Parquet file or a `datasets`
    dataset (`hf:`; TRL's layout); errors name the file and line (row)."""
    out = []
    for number, row in records(path):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")
        ):
            raise ConfigError(f"{path}:{number}: needs string 'prompt', 'chosen' and 'rejected'")
        if row["chosen"] == row["rejected"]:
            raise ConfigError(f"{path}:{number}: the chosen and rejected replies are the same")
        out.append((row["prompt"], row["chosen"], row["rejected"]))
    if not out:
        raise ConfigError(f"{path}: no pairs")
    return out


@dataclass
class PairSide:
    ids: np.ndarray  # (N, T + 1)
    weights: np.ndarray  # (N, T + 1) 1 on the reply's tokens
    length: np.ndarray  # (N,)


@dataclass
class PreferenceSplit:
    chosen: PairSide
    rejected: PairSide

    def __len__(self) -> int:
        return len(self.chosen.ids)


@register("dataset", "preferences")
class PreferenceDataset(ChatDataset):
    """Preference pairs in JSON lines (`prompt`, `chosen`, `rejected`) for `task=reward` and
    `task=dpo`.

    Each side is the conversation `[user: prompt, assistant: reply]` rendered with the chat
    template (as `data=chat` does), cut to `sequence_length` + 1 tokens; weights mark the
    reply's tokens. A batch holds, for `chosen` and `rejected` each, `<side>_token_ids`,
    `<side>_labels` (next tokens), `<side>_weights` (reply tokens as targets) and
    `<side>_mask`. Pairs whose reply is cut away entirely are dropped with a warning. The
    settings and their checks are `ChatDataset`'s.

    Args:
        train, val: JSON-lines files.
        template: a Jinja chat template, or None (the checkpoint's, else the default).
        sequence_length: int. Tokens per side.
        batch_size: int. Global pairs per optimizer step.
        seed: int. Shuffle seed.
    """

    def texts(self) -> tuple[list[str], list[str]]:
        def texts(path):
            out = []
            for prompt, chosen, rejected in read_preferences(path):
                for reply in (chosen, rejected):
                    out.append(render(self.template, self._conversation(prompt, reply), False))
            return out

        return texts(self.train), texts(self.val)

    @staticmethod
    def _conversation(prompt: str, reply: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]

    def encode(self, tokenizer, path: str) -> PreferenceSplit:
        t = self.sequence_length + 1
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        pairs = read_preferences(path)
        conversations = [
            self._conversation(prompt, reply)
            for prompt, chosen, rejected in pairs
            for reply in (chosen, rejected)
        ]
        encoded = conversations_ids(tokenizer, self.template, conversations)
        kept = []
        for i in range(len(pairs)):
            sides = [(ids[:t], weights[:t]) for ids, weights in encoded[2 * i : 2 * i + 2]]
            if all(sum(w[1:]) > 0 for _, w in sides):
                kept.append(sides)
        if len(kept) < len(pairs):
            log.warning("%s: %d pairs have a reply cut away: dropped", path, len(pairs) - len(kept))
        if not kept:
            raise ConfigError(
                f"{path}: no pair fits in data.sequence_length={self.sequence_length}"
            )

        def side(k):
            n = len(kept)
            out = PairSide(
                np.full((n, t), pad, np.int32), np.zeros((n, t), np.float32), np.zeros(n, np.int32)
            )
            for i, sides in enumerate(kept):
                ids, weights = sides[k]
                out.ids[i, : len(ids)] = ids
                out.weights[i, : len(ids)] = weights
                out.length[i] = len(ids)
            return out

        return PreferenceSplit(side(0), side(1))

    def _gather(self, split: PreferenceSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        t = self.sequence_length
        batch = {"loss_weights": tf.ensure_shape(weights, [per_replica])}
        for name, side in (("chosen", split.chosen), ("rejected", split.rejected)):
            ids = tf.gather(tf.constant(side.ids), rows)  # (B, T + 1)
            token_weights = tf.gather(tf.constant(side.weights), rows)[:, 1:]
            length = tf.gather(tf.constant(side.length), rows)
            shape = [per_replica, t]
            batch[f"{name}_token_ids"] = tf.ensure_shape(ids[:, :-1], shape)
            batch[f"{name}_labels"] = tf.ensure_shape(ids[:, 1:], shape)
            batch[f"{name}_weights"] = tf.ensure_shape(token_weights * weights[:, None], shape)
            batch[f"{name}_mask"] = tf.ensure_shape(tf.range(t)[None, :] < length[:, None], shape)
        return batch
