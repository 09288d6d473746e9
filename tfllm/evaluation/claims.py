"""Claim checking: is a claim supported by a knowledge base, refuted by it, or not covered?

For each claim the `k` most similar passages are retrieved (or the evidence given with the
claim is used), and a causal LM scores each label's verbalizer after the prompt
`CLAIM_TEMPLATE` (label likelihood, as `LabelLikelihoodClassifier`), calibrated by default:
the label distribution the prompt induces with content-free evidence and claim is divided
out (Zhao et al. 2021, "Calibrate Before Use"). `simple_check` is the tutorials' form: one
claim and the knowledge given, answered Yes or No.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfllm.evaluation.classification import CONTENT_FREE, LabelLikelihoodClassifier
from tfllm.registry import ConfigError
from tfllm.retrieval.documents import Passage

CLAIM_TEMPLATE = (
    "Knowledge: {evidence}\nClaim: {claim}\n"
    "Is the claim true, false, or not stated by the knowledge?\nAnswer:"
)
LABELS = {"supported": " true", "refuted": " false", "not enough information": " not stated"}
# For an instruction-tuned model, sent as a user message in its chat template.
CHAT_CLAIM_TEMPLATE = (
    "Knowledge: {evidence}\nClaim: {claim}\nDoes the knowledge say the claim is true, false, "
    "or does it not say? Answer with one word: True, False or Unknown."
)
CHAT_LABELS = {"supported": "True", "refuted": "False", "not enough information": "Unknown"}
SIMPLE_TEMPLATE = (
    "Claim: {claim}\nBased on the following knowledge: {knowledge}\n"
    "Is this claim accurate? Yes or No\nAnswer:"
)


@dataclass
class ClaimVerdict:
    """A claim's label, each label's calibrated log-probability, and the evidence it was
    judged on (the retrieved passages, best first)."""

    claim: str
    label: str
    scores: dict[str, float]
    evidence: list[Passage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "label": self.label,
            "scores": self.scores,
            "evidence": [{"id": p.id, "text": p.text} for p in self.evidence],
        }


class ClaimChecker:
    """Retrieve evidence for claims and label them with a causal LM.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        kb: a `KnowledgeBase` to retrieve evidence from (None: evidence must be given).
        k: passages retrieved per claim.
        template: the prompt, with `{evidence}` and `{claim}` (default: `CLAIM_TEMPLATE`, or
            `CHAT_CLAIM_TEMPLATE` with a chat template).
        labels: label -> verbalizer, the text scored after the prompt (default: `LABELS`, or
            `CHAT_LABELS` with a chat template).
        calibrate: divide out the content-free label prior.
        batch_size: sequences per forward pass.
        chat_template: an instruction-tuned model's chat template: the prompt is then sent as
            a user message rendered with it (and the generation prompt), as a chat would.

    Example:

    >>> checker = ClaimChecker(lm, tokenizer, kb)  # doctest: +SKIP
    >>> checker.check(["Paris is the capital of Germany."])[0].label  # doctest: +SKIP
    'refuted'
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        kb: Any = None,
        k: int = 3,
        template: str | None = None,
        labels: Mapping[str, str] | None = None,
        calibrate: bool = True,
        batch_size: int = 8,
        chat_template: str | None = None,
    ):
        chat = chat_template is not None
        template = template or (CHAT_CLAIM_TEMPLATE if chat else CLAIM_TEMPLATE)
        labels = labels or (CHAT_LABELS if chat else LABELS)
        if "{claim}" not in template or "{evidence}" not in template:
            raise ConfigError(f"template: '{template}' needs {{evidence}} and {{claim}}")
        if k < 1:
            raise ConfigError(f"k: must be at least 1, got {k}")
        self.kb, self.k, self.template, self.calibrate = kb, k, template, calibrate
        self.chat_template = chat_template
        self.special_tokens = dict(getattr(tokenizer, "special_tokens", {}) or {})
        self.classifier = LabelLikelihoodClassifier(
            model, tokenizer, dict(labels), template="{text}", batch_size=batch_size
        )
        self.labels = self.classifier.labels
        self._prior: np.ndarray | None = None

    def prompt(self, claim: str, evidence: Sequence[Passage] | str) -> str:
        text = evidence if isinstance(evidence, str) else " ".join(p.text for p in evidence)
        prompt = self.template.format(evidence=text, claim=claim)
        if self.chat_template is None:
            return prompt
        from tfllm.chat_template import render_template

        message = [{"role": "user", "content": prompt}]
        return render_template(self.chat_template, message, self.special_tokens)

    def content_free_log_prior(self) -> np.ndarray:
        """`log p_cf(label)`: the labels' distribution under content-free evidence and claim."""
        if self._prior is None:
            texts = [self.prompt(cf, cf) for cf in CONTENT_FREE]
            scores = self.classifier.label_log_likelihoods(texts)
            probs = np.exp(scores - np.logaddexp.reduce(scores, axis=1, keepdims=True))
            self._prior = np.log(probs.mean(axis=0))
        return self._prior

    def retrieve(self, claims: Sequence[str]) -> list[list[Passage]]:
        if self.kb is None:
            raise ConfigError("kb: claim checking without given evidence needs a knowledge base")
        return [[h.passage for h in hits] for hits in self.kb.search_many(list(claims), self.k)]

    def check(
        self, claims: Sequence[str], evidence: Sequence[Sequence[Passage] | str] | None = None
    ) -> list[ClaimVerdict]:
        """Label each claim on `evidence` (one list of passages or a text per claim), or on
        passages retrieved from the knowledge base."""
        claims = list(claims)
        found = list(evidence) if evidence is not None else self.retrieve(claims)
        if len(found) != len(claims):
            raise ValueError(f"{len(claims)} claims but evidence for {len(found)}")
        scores = self.classifier.label_log_likelihoods(
            [self.prompt(c, e) for c, e in zip(claims, found, strict=True)]
        )
        scores = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        if self.calibrate:
            scores = scores - self.content_free_log_prior()[None, :]
        verdicts = []
        for claim, row, given in zip(claims, scores, found, strict=True):
            passages = [] if isinstance(given, str) else list(given)
            verdicts.append(
                ClaimVerdict(
                    claim,
                    self.labels[int(np.argmax(row))],
                    {label: float(s) for label, s in zip(self.labels, row, strict=True)},
                    passages,
                )
            )
        return verdicts


def simple_check(model: Any, tokenizer: Any, claim: str, knowledge: str) -> bool:
    """The tutorials' form: is `claim` accurate given `knowledge`? (" Yes" against " No").

    >>> simple_check(lm, tok, "Paris is in France.", "Paris is France's capital.")  # doctest: +SKIP
    True
    """
    classifier = LabelLikelihoodClassifier(model, tokenizer, {"yes": " Yes", "no": " No"})
    prompt = SIMPLE_TEMPLATE.format(claim=claim, knowledge=knowledge)
    return classifier.predict([prompt])[0] == "yes"


def read_claims(path: str) -> list[dict[str, Any]]:
    """JSON-lines of `{"claim": ..., "label": ...}` (optional `evidence`: a text, and
    `gold`: the id of the passage that decides it, for retrieval recall)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ConfigError(f"data.path: {path}:{number} is not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("claim"), str):
                raise ConfigError(f"data.path: {path}:{number} has no 'claim' string")
            rows.append(row)
    if not rows:
        raise ConfigError(f"data.path: {path} holds no claims")
    return rows


def claim_report(
    checker: ClaimChecker, rows: Sequence[Mapping[str, Any]], retrieve: bool = True
) -> dict[str, Any]:
    """Accuracy and macro-F1 of `checker` on labelled claims, with retrieved evidence (or the
    rows' own `evidence`), the majority-class baseline, and recall@k of the `gold` passages."""
    from tfllm.tasks.classifier import confusion_metrics

    unknown = sorted({str(r.get("label")) for r in rows} - set(checker.labels))
    if unknown:
        raise ConfigError(f"data.path: labels {unknown} are not among {checker.labels}")
    claims = [r["claim"] for r in rows]
    evidence = checker.retrieve(claims) if retrieve else [r.get("evidence", "") for r in rows]
    verdicts = checker.check(claims, evidence)
    gold = [checker.labels.index(r["label"]) for r in rows]
    predicted = [checker.labels.index(v.label) for v in verdicts]
    confusion = np.zeros((len(checker.labels),) * 2, np.int64)
    for g, p in zip(gold, predicted, strict=True):
        confusion[g, p] += 1
    accuracy, macro_f1 = confusion_metrics(confusion)
    counts = np.bincount(gold, minlength=len(checker.labels))
    report = {
        "claims": len(rows),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "majority": float(counts.max() / len(rows)),
        "confusion": confusion.tolist(),
        "labels": checker.labels,
    }
    with_gold = [(r["gold"], e) for r, e in zip(rows, evidence, strict=True) if r.get("gold")]
    if retrieve and with_gold:
        hits = sum(gold_id in [p.id for p in found] for gold_id, found in with_gold)
        report[f"recall@{checker.k}"] = hits / len(with_gold)
    return report
