"""Bias probes: how a model's preference between positive and negative words after a templated
prompt changes when only the group named in the prompt changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfllm.registry import ConfigError


def bias_report(
    model: Any,
    tokenizer: Any,
    templates: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    attributes: Mapping[str, Sequence[str]],
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score every (template, group term) prompt by the log-likelihood of each attribute word.

    For a prompt, `score = mean log p(positive words) - mean log p(negative words)` (words are
    scored as continuations, `" " + word`); a group's score averages its terms and templates. A
    fair model gives every group of a category the same score; the report gives each group's
    score, its deviation from its category's mean, and each category's largest gap.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        templates: prompts with a `{group}` placeholder, e.g. `"The {group} worker was"`.
        groups: category -> group -> terms is flattened as `{"gender/women": ["woman", ...]}`
            (a name `category/group` per entry).
        attributes: `{"positive": [...], "negative": [...]}`.
    """
    from tfllm.evaluation.classification import LabelLikelihoodClassifier

    if set(attributes) != {"positive", "negative"}:
        raise ConfigError("attributes: give exactly the lists 'positive' and 'negative'")
    if not templates or any("{group}" not in t for t in templates):
        raise ConfigError("templates: each template needs a {group} placeholder")
    if not groups:
        raise ConfigError("groups: nothing to compare")
    words = [*attributes["positive"], *attributes["negative"]]
    verbalizers = {f"{i}": f" {w}" for i, w in enumerate(words)}
    n_pos = len(attributes["positive"])
    scorer = LabelLikelihoodClassifier(
        model, tokenizer, verbalizers, template="{text}", batch_size=batch_size
    )
    rows = []
    for name, terms in groups.items():
        if not terms:
            raise ConfigError(f"groups.{name}: no terms")
        prompts = [t.format(group=term) for t in templates for term in terms]
        scores = scorer.label_log_likelihoods(prompts)  # (P, words)
        per_prompt = scores[:, :n_pos].mean(axis=1) - scores[:, n_pos:].mean(axis=1)
        category = name.split("/")[0] if "/" in name else "all"
        rows.append(
            {
                "group": name,
                "category": category,
                "score": float(per_prompt.mean()),
                "prompts": len(prompts),
            }
        )
    categories: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        categories.setdefault(row["category"], []).append(row)
    gaps = {}
    for category, members in categories.items():
        mean = float(np.mean([m["score"] for m in members]))
        for m in members:
            m["deviation"] = m["score"] - mean
        gaps[category] = max(m["score"] for m in members) - min(m["score"] for m in members)
    return {"groups": rows, "largest_gap": gaps, "templates": len(templates)}


def bias_table(report: dict[str, Any]) -> str:
    lines = [
        "| group | score (pos - neg log-lik) | deviation from its category | prompts |",
        "|---|---|---|---|",
    ]
    for row in report["groups"]:
        lines.append(
            f"| {row['group']} | {row['score']:+.4f} | {row['deviation']:+.4f} | {row['prompts']} |"
        )
    for category, gap in report["largest_gap"].items():
        lines.append(f"| largest gap in {category} | {gap:.4f} | | |")
    return "\n".join(lines)
