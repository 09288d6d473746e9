"""The one place a prompt becomes ids: every generation path (the generator, streaming, chat,
beam search) calls these, and the exported `generate` signatures apply the same rules in the
graph (`tfllm.export.serving_module`; `tests/generation/test_prompt_rules.py` holds them to
the same answers).

The rules:

1. **Start.** A prompt is the tokenizer's `prompt_bos_id` (when it has one and adds it) followed
   by the text's ids. Chat passes `add_bos=False`: its template writes its own `bos_token`.
2. **Empty.** A prompt with no ids at all starts from eos (a sequence boundary); a tokenizer
   with neither bos nor eos cannot start one, and says so.
3. **Too long.** A prompt of more than `context - 1` tokens keeps its last `context - 1` (it is
   cropped from the left: the most recent text is what a continuation depends on), so there
   is always room for one new token.
4. **Length.** A row writes at most `max_new_tokens` tokens and never runs past the model's
   context: it gets `min(max_new_tokens, context - prompt length)`, what fits. Its finish
   reason says why it ended: `stop` (a stop string, a stop token or eos) or `length` (it used
   every token it could). There is no sliding window: past the context, a window would drop the
   start of the prompt (a chat's system message) without saying so.
5. **Stops.** A completion ends before the first occurrence of any stop string in its text
   (the stop itself is not part of it). A stop string that is one token also ends its row
   inside the decode loop, saving the work; with `stop_at_eos`, eos ends a row too (and, being
   a special token, is not part of the text).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def prompt_ids(tokenizer, text: str, add_bos: bool = True) -> list[int]:
    """Rules 1 and 2: the ids a prompt starts with, never empty.

    Raises:
        ValueError: the text has no ids and the tokenizer has neither bos nor eos.
    """
    ids = tokenizer.encode_one(text) if text else []
    bos = tokenizer.prompt_bos_id if add_bos else None
    if bos is not None:
        ids = [bos] + ids
    if not ids:
        if tokenizer.eos_id is None:
            raise ValueError("empty prompt and the tokenizer has no bos or eos token to start from")
        ids = [tokenizer.eos_id]
    return ids


def crop_prompt(ids: Sequence[int], context: int) -> list[int]:
    """Rule 3: `ids` cut to their last `context - 1` tokens."""
    ids = list(ids)
    if not ids:
        raise ValueError("prompt ids are empty")
    if context < 2:
        raise ValueError(f"a context of {context} tokens leaves no room to generate")
    if len(ids) > context - 1:
        log.warning(
            "prompt of %d tokens cut to its last %d to fit the context", len(ids), context - 1
        )
        ids = ids[-(context - 1) :]
    return ids


def new_token_budget(context: int, prompt_length: int, max_new_tokens: int) -> int:
    """Rule 4: how many tokens a row with a (cropped) prompt of `prompt_length` may write.

    >>> new_token_budget(64, 7, 64), new_token_budget(64, 7, 16)
    (57, 16)
    """
    return max(0, min(max_new_tokens, context - prompt_length))


def reply_room(context: int, max_new_tokens: int) -> int:
    """The positions a conversation leaves free for its reply when old messages are dropped to
    fit (chat): `max_new_tokens`, but never more than half the context, so a long reply limit
    does not push out the whole history."""
    return max(1, min(max_new_tokens, context // 2))


def encode_prompt(tokenizer, text: str, context: int, add_bos: bool = True) -> list[int]:
    """Rules 1-3: the ids a generation starts from.

    Example:

    >>> from tfllm.components.tokenizers.byte import ByteTokenizer
    >>> tokenizer = ByteTokenizer()
    >>> encode_prompt(tokenizer, "hi", context=8)  # bos, "h", "i"
    [257, 104, 105]
    >>> encode_prompt(tokenizer, "hello world", context=8)  # its last 7
    [111, 32, 119, 111, 114, 108, 100]
    """
    return crop_prompt(prompt_ids(tokenizer, text, add_bos), context)


@dataclass(frozen=True)
class Completion:
    """One generated continuation.

    Attributes:
        text: the completion, without the prompt, cut before the first stop string.
        token_ids: the new token ids (a final stop token included).
        finish_reason: `stop` (a stop string, stop token or eos ended it) or `length` (it wrote
            `max_new_tokens`, or reached the model's context); see `tfllm.generation.prompts`.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str


FINISH_STOP = "stop"
FINISH_LENGTH = "length"


def finish_reason(new_ids: Sequence[int], budget: int, stop_ids: Sequence[int], cut: bool) -> str:
    """Rule 4: `stop` when a row ended at a stop id or its text was cut at a stop string
    (`cut`), otherwise `length` (it wrote its whole budget)."""
    if cut or (new_ids and new_ids[-1] in set(stop_ids)) or len(new_ids) < budget:
        return FINISH_STOP
    return FINISH_LENGTH


def stop_tokens(
    tokenizer, stop: Sequence[str] = (), stop_at_eos: bool = True
) -> tuple[list[int], list[str]]:
    """Rule 5: `(stop ids, stop strings)`: the ids that end a row inside the decode loop
    (single-token stops, and eos with `stop_at_eos`), and the strings that end the text."""
    stop_ids: list[int] = []
    strings: list[str] = []
    for s in stop:
        if not s:
            continue
        strings.append(s)
        ids = tokenizer.encode_one(s)
        if len(ids) == 1:
            stop_ids.append(ids[0])
    if stop_at_eos and tokenizer.eos_id is not None:
        stop_ids.append(tokenizer.eos_id)
    return stop_ids, strings


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """Rule 5: `text` up to the first occurrence of any of the stop strings."""
    for s in stops:
        text = text.split(s)[0]
    return text


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of a text still being generated could begin a stop
    string: what a stream must not show yet."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


def pack_with_eos(
    bodies: Sequence[Sequence[int]], length: int, eos_id: int | None, pad_id: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Token ids each followed by eos (when there is one), cut to `length` and right-padded:
    `(ids (N, length), mask (N, length), how many were cut)`. An encoder-decoder's sources are
    packed this way, in generation and in training data alike."""
    pad = pad_id if pad_id is not None else 0
    ids = np.full((len(bodies), length), pad, np.int32)
    mask = np.zeros((len(bodies), length), bool)
    cut = 0
    for i, body in enumerate(bodies):
        seq = list(body) + ([eos_id] if eos_id is not None else [])
        if len(seq) > length:
            cut += 1
            seq = seq[:length]
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = True
    return ids, mask, cut
