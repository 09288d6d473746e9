"""Completions streamed while they are made, from an export's streaming signatures.

TF Serving's Predict answers once per call, so a server streams by calling the export in
pieces: `prompt_ids` once, then `generate_ids` for a few tokens at a time (each call continues
from the ids so far), and `completion_text` on the new ids after each call. The decode loop
seeds each sample by its position and its row, so the pieces draw exactly the tokens one
`generate` call draws: the streamed text equals the non-streamed text, greedy or sampled.

Each piece re-reads the ids so far (the export keeps no cache between calls), so pieces start
small for an early first token and grow: 1 token, then 4, 16 and 64 at most. A completion of
`N` tokens costs about `log4(N) + 1` prompt passes more than one `generate` call.

Text goes out only when no later token can change it: a trailing partial UTF-8 character
(`\\ufffd` from a multi-byte character split across tokens) and a tail that could begin a stop
string (the export's, as `completion_text` reports in `held`, or the request's) wait for the
next piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIRST_PIECE = 1
GROWTH = 4
LARGEST_PIECE = 64
STREAM_SIGNATURES = ("prompt_ids", "generate_ids", "completion_text")

Run = Callable[[str, dict[str, Any]], dict[str, Any]]


def cut_at_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found.

    >>> cut_at_stops("Hello. World.", (".", "World"))
    ('Hello', True)
    """
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def settled(text: str, stops: Sequence[str], held: int = 0) -> str:
    """The part of an unfinished completion no later token can change: `text` without its last
    `held` characters, a trailing partial character or a tail that may begin a stop string.

    >>> settled("Who goes th", ["there"])
    'Who goes '
    >>> settled("caf\\ufffd", [])
    'caf'
    """
    text = text[: len(text) - held].rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return text[: len(text) - hold]


def _text(value: bytes | str) -> str:
    """A string output as gRPC (bytes) or REST (text) returns it."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Row:
    prompt: list[int]
    budget: int
    new: list[int] = field(default_factory=list)
    sent: str = ""
    reason: str | None = None


class IncrementalCompletions:
    """Iterates `(row, text piece, finish_reason)` for rows decoded in pieces.

    A row yields its text in order; its last item has the finish reason (`stop` or `length`,
    as `generate` reports it) and the piece that completes the text (possibly empty). After the
    iteration, `new_tokens` counts the tokens decoded.

    Args:
        run: calls one of the export's signatures: `run(signature, inputs) -> outputs`.
        prompts: one prompt per row (repeat a prompt for several choices: rows are sampled as
            `generate` samples a batch, by row index).
        max_new_tokens, temperature, top_p, seed, top_k: as `generate` takes them (0: the
            export's default length).
        stops: the request's stop strings, cut here after the export's own (which
            `completion_text` cuts), as the non-streamed paths cut them.

    `prompt_ids` runs when the object is made, so a bad prompt fails before any text is sent.
    """

    def __init__(
        self,
        run: Run,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stops: Sequence[str] = (),
        top_k: int = 0,
    ):
        self._run = run
        self._sampling = {
            "temperature": np.asarray(temperature, np.float32),
            "top_k": np.asarray(top_k, np.int32),
            "top_p": np.asarray(top_p, np.float32),
            "seed": np.asarray(seed, np.int32),
        }
        self._stops = tuple(stops)
        out = run(
            "prompt_ids",
            {
                "prompts": np.asarray([p.encode("utf-8") for p in prompts], dtype=object),
                "max_new_tokens": np.asarray(max_new_tokens, np.int32),
            },
        )
        self.rows = [
            _Row(list(ids[:n]), int(budget))
            for ids, n, budget in zip(out["token_ids"], out["lengths"], out["budgets"], strict=True)
        ]
        self.calls = 0

    @property
    def new_tokens(self) -> int:
        return sum(len(r.new) for r in self.rows)

    def _padded(self, seqs: list[list[int]]) -> dict[str, np.ndarray]:
        width = max(1, max(len(s) for s in seqs))
        ids = np.full((len(seqs), width), -1, np.int32)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
        return {"token_ids": ids, "lengths": np.asarray([len(s) for s in seqs], np.int32)}

    def _decode_piece(self, size: int) -> None:
        """`size` more tokens for every row (every row runs, so rows keep their indices)."""
        inputs = self._padded([r.prompt + r.new for r in self.rows])
        inputs["max_new_tokens"] = np.asarray(size, np.int32)
        out = self._run("generate_ids", {**inputs, **self._sampling})
        self.calls += 1
        for r, tokens, n, reason in zip(
            self.rows, out["tokens"], out["lengths"], out["finish_reasons"], strict=True
        ):
            if r.reason is not None:
                continue
            r.new.extend(int(t) for t in tokens[:n])
            reason = _text(reason)
            if reason == "stop":
                r.reason = "stop"
            elif len(r.new) >= r.budget:
                r.reason = "length"

    def __iter__(self) -> Iterator[tuple[int, str, str | None]]:
        size = FIRST_PIECE
        while any(r.reason is None for r in self.rows):
            live = [i for i, r in enumerate(self.rows) if r.reason is None]
            room = max(self.rows[i].budget - len(self.rows[i].new) for i in live)
            self._decode_piece(min(size, room))
            texts = self._run("completion_text", self._padded([r.new for r in self.rows]))
            for i in live:
                r = self.rows[i]
                text = _text(texts["completions"][i])
                if bool(texts["stopped"][i]):
                    r.reason = "stop"
                text, cut = cut_at_stops(text, self._stops)
                if cut:
                    r.reason = "stop"
                held = int(texts["held"][i])
                shown = text if r.reason is not None else settled(text, self._stops, held)
                piece = shown[len(r.sent) :] if shown.startswith(r.sent) else ""
                r.sent += piece
                if piece or r.reason is not None:
                    yield i, piece, r.reason
            size = min(size * GROWTH, LARGEST_PIECE)
