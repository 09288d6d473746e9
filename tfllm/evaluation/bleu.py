"""Corpus BLEU, computed as sacrebleu computes it (13a, char or no tokenization; exp smoothing)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# mteval-v13a's tokenization, as sacrebleu's default `13a` tokenizer applies it.
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a tokenization (sacrebleu `tokenize="13a"`)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (
            line.replace("&quot;", '"')
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
        )
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


TOKENIZERS = {
    "13a": tokenize_13a,
    "char": lambda line: list("".join(line.split())),  # sacrebleu `char`: spaces dropped
    "none": lambda line: line.split(),
}


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


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
    """Corpus BLEU of `hypotheses` against one or more references per sentence.

    Matches `sacrebleu.corpus_bleu(hypotheses, [refs...])` with its defaults: 13a tokenization,
    clipped n-gram counts summed over the corpus, the closest reference length for the brevity
    penalty, and `exp` smoothing (the k-th zero-match precision becomes `1 / (2**k * total)`).

    Args:
        hypotheses: one output per sentence.
        references: per sentence, a reference string or a list of references.
        max_order: the longest n-gram.
        lowercase: compare case-insensitively.
        tokenize: `13a` (sacrebleu's default, for text with words), `char` (characters, for
            scripts without spaces or character-level tasks) or `none` (split on whitespace).

    Raises:
        ValueError: hypotheses and references differ in number, or an unknown `tokenize`.
    """
    if tokenize not in TOKENIZERS:
        raise ValueError(f"tokenize must be one of {', '.join(TOKENIZERS)}, got '{tokenize}'")
    split = TOKENIZERS[tokenize]
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(hypotheses):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(refs)} reference sets: they pair by position"
        )
    matches, totals = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for hyp, sentence_refs in zip(hypotheses, refs, strict=True):
        norm = (lambda s: s.lower()) if lowercase else (lambda s: s)
        h = split(norm(hyp))
        rs = [split(norm(r)) for r in sentence_refs]
        hyp_len += len(h)
        # The closest reference length; ties go to the shorter one.
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        counts = _ngrams(h, max_order)
        max_ref: Counter = Counter()
        for r in rs:
            max_ref |= _ngrams(r, max_order)
        for gram, count in counts.items():
            n = len(gram) - 1
            totals[n] += count
            matches[n] += min(count, max_ref[gram])
    precisions, smooth = [], 1.0
    for n in range(max_order):
        if totals[n] == 0:
            precisions.append(0.0)
        elif matches[n] == 0:
            smooth *= 2
            precisions.append(100.0 / (smooth * totals[n]))
        else:
            precisions.append(100.0 * matches[n] / totals[n])
    if hyp_len == 0 or min(precisions) == 0.0:
        score = 0.0
    else:
        score = math.exp(sum(math.log(p / 100.0) for p in precisions) / max_order) * 100.0
    bp = 1.0 if hyp_len > ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0)
    return BLEUScore(score * bp, precisions, bp, hyp_len, ref_len)
