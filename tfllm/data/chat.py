"""Conversations for supervised fine-tuning: chat-templated, with loss on assistant tokens only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfllm.components.tokenizers.chat_template import render_template
from tfllm.data.jsonl import records
from tfllm.data.rows import RowDataset
from tfllm.registry import ConfigError, register

log = logging.getLogger(__name__)

# Used when neither `data.template` nor the checkpoint (`chat.template`) gives one. Plain-text
# role markers, so it suits any tokenizer, a character one included; the end of each reply is
# the tokenizer's eos token, appended as a token.
DEFAULT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}### User:\n{{ m.content }}\n\n"
    "{% else %}### Assistant:\n{{ m.content }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
ROLES = ("system", "user", "assistant")


def _messages(row: Any, where: str) -> list[dict[str, str]]:
    """A row's conversation: `messages` as is, or `instruction`/`input`/`output` (Alpaca) as a
    user turn and an assistant turn."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: a JSON object expected")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{where}: 'messages' must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise ConfigError(f"{where}: every message needs a role in {ROLES}")
            if not isinstance(m.get("content"), str):
                raise ConfigError(f"{where}: a message's content must be a string")
        if not any(m["role"] == "assistant" for m in messages):
            raise ConfigError(f"{where}: no assistant message to learn from")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "instruction" in row and "output" in row:
        prompt = str(row["instruction"])
        if row.get("input"):
            prompt += "\n\n" + str(row["input"])
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": row["output"]},
        ]
    raise ConfigError(f"{where}: needs 'messages', or 'instruction' and 'output'")


def read_conversations(path: str) -> list[list[dict[str, str]]]:
    """Conversations of a JSON-lines or Parquet file or a `datasets` dataset (`hf:`); errors
    name the file and line (row)."""
    out = [_messages(row, f"{path}:{number}") for number, row in records(path)]
    if not out:
        raise ConfigError(f"{path}: no conversations")
    return out


def render(template: str, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return render_template(template, messages, None, add_generation_prompt=generation_prompt)


def conversation_texts(template: str, prompt: str, reply: str) -> tuple[str, str]:
    """`(prompt text, full text)` of the one-turn conversation `[user: prompt, assistant:
    reply]`: the render with the generation prompt, and the whole conversation, which starts
    with it (what `conversation_ids` tokenizes, and what a reward export mirrors).

    Raises:
        ValueError: the template does not render the conversation as a growing prefix.
    """
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    head = render(template, messages[:1], generation_prompt=True)
    full = render(template, messages, generation_prompt=False)
    if not full.startswith(head):
        raise ValueError(
            "the chat template does not render conversations as growing prefixes; "
            "its assistant turns cannot be located"
        )
    return head, full


def conversation_ids(
    tokenizer, template: str, messages: list[dict[str, str]]
) -> tuple[list[int], list[float]]:
    """Token ids of a templated conversation and a weight per token: 1 on the assistant's
    replies (and the eos that ends each), 0 on everything else.

    The text before each reply is the template rendered up to it with the generation prompt,
    exactly the prompt `tfllm chat` sends; the reply is what the full render adds after it.
    Each piece is tokenized on its own, as at inference, where the prompt is tokenized and the
    reply generated. A reply not followed by the tokenizer's eos gets one, so the model learns
    to stop.
    """
    return conversations_ids(tokenizer, template, [messages])[0]


def conversations_ids(
    tokenizer, template: str, conversations: list[list[dict[str, str]]]
) -> list[tuple[list[int], list[float]]]:
    """`conversation_ids` of each conversation, the pieces of all of them tokenized together
    (one tokenizer call per thousand pieces instead of one per piece)."""
    pieces = [conversation_pieces(template, messages) for messages in conversations]
    texts = sorted({text for found in pieces for text, _ in found})
    ids_of: dict[str, list[int]] = {}
    for i in range(0, len(texts), 1024):
        chunk = texts[i : i + 1024]
        ids_of.update(zip(chunk, tokenizer.encode(chunk)["input_ids"], strict=True))
    eos = tokenizer.eos_id
    out = []
    for found in pieces:
        ids: list[int] = []
        weights: list[float] = []
        for text, weight in found:
            piece = ids_of[text]
            if weight and eos is not None and eos not in piece:  # a reply ends with eos
                piece = [*piece, eos]
            ids += piece
            weights += [weight] * len(piece)
        out.append((ids, weights))
    return out


def conversation_pieces(template: str, messages: list[dict[str, str]]) -> list[tuple[str, float]]:
    """The texts `conversation_ids` tokenizes, in order, each with its weight: the text before
    each reply (0.0, left out when empty) and the reply (1.0, empty when the template adds
    nothing).

    Raises:
        ValueError: the template does not render the conversation as growing prefixes.
    """
    pieces: list[tuple[str, float]] = []
    done = ""  # text rendered so far
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(template, messages[:k], generation_prompt=True)
        full = render(template, messages[: k + 1], generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError(
                "the chat template does not render conversations as growing prefixes; "
                "its assistant turns cannot be located"
            )
        if prompt[len(done) :]:
            pieces.append((prompt[len(done) :], 0.0))
        pieces.append((full[len(prompt) :], 1.0))
        done = full
    return pieces


@dataclass
class ChatSplit:
    ids: np.ndarray  # (N, T + 1)
    weights: np.ndarray  # (N, T + 1) loss weight of each token as a target
    length: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.ids)


@register("dataset", "chat")
class ChatDataset(RowDataset):
    """Conversations in JSON lines for supervised fine-tuning (`task=sft`).

    Each line holds `messages` (`[{"role": "system"|"user"|"assistant", "content": ...}]`) or
    `instruction`, optional `input`, and `output`. Conversations are rendered with the chat
    template (`data.template`, else the checkpoint's `chat.template`, else `DEFAULT_TEMPLATE`)
    and only assistant tokens carry loss (`conversation_ids`). One conversation per row, cut to
    `sequence_length` + 1 tokens and padded: no packing, so conversations never attend to each
    other (the price is padding; sort or bucket by length upstream to cut it). Rows cut so far
    that no assistant token is left are dropped with a warning. Batches hold `token_ids`,
    `labels` (the next tokens), `loss_weights` and `padding_mask`, as the causal LM expects.

    Args:
        train, val: JSON-lines files.
        template: a Jinja chat template, or None.
        sequence_length: int. Tokens per row (inputs; targets are shifted by one).
        batch_size: int. Global conversations per optimizer step.
        seed: int. Shuffle seed.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        template: str | None = None,
        sequence_length: int = 256,
        batch_size: int = 8,
        seed: int = 0,
    ):
        if not train or not val:
            raise ConfigError("data.train and data.val: both JSON-lines files are required")
        if sequence_length < 2:
            raise ConfigError(f"data.sequence_length must be at least 2, got {sequence_length}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.train = train
        self.val = val
        self.template = template or DEFAULT_TEMPLATE
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.seed = seed

    def texts(self) -> tuple[list[str], list[str]]:
        return tuple(  # type: ignore[return-value]
            [render(self.template, c, False) for c in read_conversations(path)]
            for path in (self.train, self.val)
        )

    def check_markers(self, tokenizer) -> None:
        """The template's own text (role markers, separators) must survive the tokenizer: a
        marker that becomes the unknown token teaches the model nothing (a character tokenizer
        trained without `#` reads `### User:` as `<unk><unk><unk> User:`).

        Raises:
            ConfigError: a piece of the template's text tokenizes to the unknown token.
        """
        unk = tokenizer.unk_id
        if unk is None:
            return
        messages = [{"role": r, "content": ""} for r in ROLES]
        markers = render(self.template, messages, generation_prompt=True)
        lost = sorted({p for p in markers.split() if unk in tokenizer.encode_one(p)})
        if lost:
            raise ConfigError(
                f"data.template: its markers {lost} are not in the tokenizer's vocabulary (they "
                "would become the unknown token); set data.template to one written in "
                "characters the tokenizer knows, or train the tokenizer on the templated data"
            )

    def encode(self, tokenizer, path: str) -> ChatSplit:
        self.check_markers(tokenizer)
        t = self.sequence_length + 1
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        rows = []
        conversations = read_conversations(path)
        try:
            for ids, weights in conversations_ids(tokenizer, self.template, conversations):
                ids, weights = ids[:t], weights[:t]
                if sum(weights[1:]) > 0:
                    rows.append((ids, weights))
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"data.template: {e}") from None
        dropped = len(conversations) - len(rows)
        if dropped:
            log.warning("%s: %d conversations have no reply within %d tokens", path, dropped, t)
        if not rows:
            raise ConfigError(f"{path}: no conversation has a reply within {t} tokens")
        split = ChatSplit(
            np.full((len(rows), t), pad, np.int32),
            np.zeros((len(rows), t), np.float32),
            np.asarray([len(r[0]) for r in rows], np.int32),
        )
        for i, (ids, weights) in enumerate(rows):
            split.ids[i, : len(ids)] = ids
            split.weights[i, : len(ids)] = weights
        return split

    def _gather(self, split: ChatSplit, rows, weights, per_replica: int) -> dict[str, Any]:
        t = self.sequence_length
        ids = tf.gather(tf.constant(split.ids), rows)  # (B, T + 1)
        token_weights = tf.gather(tf.constant(split.weights), rows)
        length = tf.gather(tf.constant(split.length), rows)
        real = tf.range(t)[None, :] < length[:, None]  # (B, T) inputs that are tokens
        return {
            "token_ids": tf.ensure_shape(ids[:, :-1], [per_replica, t]),
            "labels": tf.ensure_shape(ids[:, 1:], [per_replica, t]),
            "loss_weights": tf.ensure_shape(
                token_weights[:, 1:] * weights[:, None], [per_replica, t]
            ),
            "padding_mask": tf.ensure_shape(real, [per_replica, t]),
        }
