"""Corpus BLEU through sacrebleu (the reference implementation), with one reference list per
sentence as tfllm's evaluation data holds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TOKENIZE = ("13a", "char", "none")


@dataclass
class BLEUScore:
    """Corpus BLEU and its parts.

    Attributes:
        score: BLEU × 100.
        precisions: modified n-gram precisions × 100, n = 1..4.
        brevity_penalty: `exp(1 - r / c)` when the output is shorter than the references, else 1.
        hyp_len: total hypothesis tokens `c`.
        ref_len: total reference tokens `r` (the closest reference length per sentence).
    """

    score: float
    precisions: list[float]
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    def as_dict(self) -> dict[str, object]:
        return {
            "bleu": self.score,
            "precisions": self.precisions,
            "brevity_penalty": self.brevity_penalty,
            "hyp_len": self.hyp_len,
            "ref_len": self.ref_len,
        }


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
    max_order: int = 4,
    lowercase: bool = False,
    tokenize: str = "13a",
) -> BLEUScore:
    """Corpus BLEU of `hypotheses` against one or more references per sentence:
    `sacrebleu.metrics.BLEU` with its defaults (13a tokenization, `exp` smoothing), the
    references turned from per-sentence lists into sacrebleu's streams (a sentence with fewer
    references than another leaves a gap, which sacrebleu skips).

    Args:
        hypotheses: one output per sentence.
        references: per sentence, a reference string or a list of references.
        max_order: the longest n-gram.
        lowercase: compare case-insensitively.
        tokenize: `13a` (sacrebleu's default, for text with words), `char` (characters, for
            scripts without spaces or character-level tasks) or `none` (split on whitespace).

    Raises:
        ValueError: hypotheses and references differ in number, or an unknown `tokenize`.

    Example:

    >>> round(corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]).score, 1)
    100.0
    """
    from sacrebleu.metrics import BLEU

    if tokenize not in TOKENIZE:
        raise ValueError(f"tokenize must be one of {', '.join(TOKENIZE)}, got '{tokenize}'")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(hypotheses):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(refs)} reference sets: they pair by position"
        )
    if any(not r for r in refs):
        raise ValueError("every hypothesis needs at least one reference")
    width = max((len(r) for r in refs), default=1)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    metric = BLEU(lowercase=lowercase, tokenize=tokenize, max_ngram_order=max_order)
    found = metric.corpus_score(list(hypotheses), streams)
    return BLEUScore(found.score, list(found.precisions), found.bp, found.sys_len, found.ref_len)
