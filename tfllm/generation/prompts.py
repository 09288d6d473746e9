"""The one place a prompt becomes ids: every generation path (the generator, streaming, chat,
beam search) calls these, and the exported `generate` signatures apply the same rules in the
graph (`tfllm.export.serving_module`; `tests/generation/test_prompt_rules.py` holds them to
the same answers).

The rules:

1. **Start.** A prompt is the tokenizer's `prompt_bos_id` (when it has one and adds it) followed
   by the text's ids. Chat passes `add_bos=False`: its template writes its own `bos_token`.
2. **Empty.** A prompt with no ids at all starts from eos (a sequence boundary); a tokenizer
   with neither bos nor eos cannot start one, and says so.
3. **Room.** `max_new_tokens` must leave the prompt at least one position of the model's
   context. (Python generation that asks for more continues in rounds over a sliding window,
   as nanoGPT's sampler does; an export, which runs one round, refuses it.)
4. **Too long.** A prompt longer than `context - max_new_tokens` keeps its last tokens (it is
   cropped from the left: the most recent text is what a continuation depends on).
5. **Stops.** A completion ends before the first occurrence of any stop string in its text
   (the stop itself is not part of it). A stop string that is one token also ends its row
   inside the decode loop, saving the work; with `stop_at_eos`, eos ends a row too (and, being
   a special token, is not part of the text).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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


def prompt_room(context: int, max_new_tokens: int) -> int:
    """Rule 3: how many prompt tokens fit beside `max_new_tokens` new ones.

    Raises:
        ValueError: `max_new_tokens` leaves no room for a prompt.
    """
    if max_new_tokens >= context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {context} tokens"
        )
    return context - max_new_tokens


def crop_prompt(ids: Sequence[int], context: int, max_new_tokens: int) -> list[int]:
    """Rules 3 and 4: `ids` cut to their last `context - max_new_tokens` tokens."""
    room = prompt_room(context, max_new_tokens)
    ids = list(ids)
    if not ids:
        raise ValueError("prompt ids are empty")
    if len(ids) > room:
        log.warning("prompt of %d tokens cut to its last %d to fit the context", len(ids), room)
        ids = ids[-room:]
    return ids


def encode_prompt(
    tokenizer, text: str, context: int, max_new_tokens: int, add_bos: bool = True
) -> list[int]:
    """Rules 1-4: the ids a generation of `max_new_tokens` starts from.

    Example:

    >>> from tfllm.components.tokenizers.byte import ByteTokenizer
    >>> tokenizer = ByteTokenizer()
    >>> encode_prompt(tokenizer, "hi", context=8, max_new_tokens=4)  # bos, "h", "i"
    [257, 104, 105]
    >>> encode_prompt(tokenizer, "hello world", context=8, max_new_tokens=4)  # its last 4
    [111, 114, 108, 100]
    """
    return crop_prompt(prompt_ids(tokenizer, text, add_bos), context, max_new_tokens)


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
