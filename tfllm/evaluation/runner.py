"""`tfllm evaluate`: one evaluation of a trained or imported model, as a table and as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfllm import progress
from tfllm.registry import ConfigError

EVALS = ("perplexity", "bleu", "accuracy", "bias", "claims")


def _data_path(cfg: dict[str, Any]) -> Any:
    path = cfg["data"].get("path")
    if not path:
        raise ConfigError(f"data.path: eval={cfg['eval']['name']} needs data.path=...")
    return path


# The evaluations that read `data.path` (bias brings its own prompts).
READS_DATA = ("perplexity", "bleu", "accuracy", "claims")


def check_evaluation(cfg: dict[str, Any]) -> None:
    """What `evaluate` would refuse before it reads anything, checked without the model (and
    without TensorFlow): an unknown evaluation, or one that reads data without `data.path`.

    >>> check_evaluation({"eval": {"name": "bleu"}, "data": {}})
    Traceback (most recent call last):
    ...
    tfllm.registry.ConfigError: data.path: eval=bleu needs data.path=...
    """
    name = _evaluation_name(cfg)
    if name in READS_DATA:
        _data_path(cfg)


def _evaluation_name(cfg: dict[str, Any]) -> str:
    name = cfg["eval"].get("name")
    if name not in EVALS:
        raise ConfigError(f"eval.name: unknown evaluation '{name}'; one of {', '.join(EVALS)}")
    return name


def _read_text(paths: str | Sequence[str], max_chars: int | None) -> str:
    from tfllm.data.text import read_documents

    try:
        documents = read_documents(paths)
    except FileNotFoundError as e:
        raise ConfigError(f"data.path: {e}") from None
    text = "\n".join(documents)
    return text[:max_chars] if max_chars else text


def run_perplexity(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    from tfllm.evaluation.perplexity import perplexity

    ev = cfg["eval"]
    text = _read_text(_data_path(cfg), ev.get("max_chars"))
    try:
        result = perplexity(
            model, tokenizer, text, ev.get("window"), ev.get("stride"), ev.get("batch_size", 8)
        )
    except ValueError as e:
        raise ConfigError(f"eval: {e}") from None
    return result.as_dict()


def run_bleu(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Greedy outputs for `eval.template` per source (a causal LM continues the prompt, an
    encoder-decoder reads it as its input), scored against the references."""
    from tfllm.data.seq2seq import read_pairs
    from tfllm.evaluation.bleu import corpus_bleu
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.generation.seq2seq import make_generator

    ev, data = cfg["eval"], cfg["data"]
    pairs = read_pairs(_data_path(cfg), data["source_column"], data["reference_column"])
    if data.get("limit"):
        pairs = pairs[: data["limit"]]
    prompts = [ev["template"].format(source=s) for s, _ in pairs]
    config = GenerationConfig(
        max_new_tokens=ev["max_new_tokens"],
        temperature=0.0,
        stop=tuple(ev.get("stop") or ()),
    )
    generator = make_generator(model, tokenizer)
    hypotheses = []
    for i in progress.tracked(
        range(0, len(prompts), ev.get("batch_size", 8)), "bleu", unit="batch"
    ):
        out = generator.generate(prompts[i : i + ev.get("batch_size", 8)], config)
        hypotheses += [c[0].strip() for c in out]
    try:
        score = corpus_bleu(
            hypotheses,
            [r for _, r in pairs],
            lowercase=ev.get("lowercase", False),
            tokenize=ev.get("tokenize", "13a"),
        )
    except ValueError as e:
        raise ConfigError(f"eval: {e}") from None
    result = score.as_dict()
    result["examples"] = len(pairs)
    result["samples"] = [
        {"source": s, "reference": r, "output": h}
        for (s, r), h in list(zip(pairs, hypotheses, strict=True))[:3]
    ]
    return result


def run_accuracy(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Label-likelihood classification for every `eval.shots` count, on the same examples."""
    from tfllm.evaluation.classification import LabelLikelihoodClassifier, read_labelled_tsv

    ev, data = cfg["eval"], cfg["data"]
    verbalizers = {str(k): str(v) for k, v in ev["verbalizers"].items()}
    labels = list(verbalizers)
    columns = dict(text_column=data["text_column"], label_column=data["label_column"])
    examples = read_labelled_tsv(_data_path(cfg), labels, **columns)
    if data.get("limit"):
        import random

        examples = random.Random(ev.get("seed", 0)).sample(
            examples, min(data["limit"], len(examples))
        )
    shots_list = ev["shots"] if isinstance(ev["shots"], list) else [ev["shots"]]
    demonstrations = []
    if any(shots_list):
        if not ev.get("demonstrations"):
            raise ConfigError("eval.demonstrations: few-shot needs a labelled file to draw from")
        demonstrations = read_labelled_tsv(ev["demonstrations"], labels, **columns)
    reports = {}
    for shots in shots_list:
        classifier = LabelLikelihoodClassifier(
            model,
            tokenizer,
            verbalizers,
            template=ev["template"],
            shots=int(shots),
            demonstrations=demonstrations,
            separator=ev.get("separator", "\n\n"),
            seed=ev.get("seed", 0),
            normalize=ev.get("normalize", False),
            chain_of_thought=ev.get("chain_of_thought"),
            reasoning_tokens=ev.get("reasoning_tokens", 48),
            batch_size=ev.get("batch_size", 8),
            balanced=ev.get("balanced", True),
        )
        if ev.get("calibrate"):
            raw, calibrated = classifier.evaluate(examples, calibrate=True)
            reports[f"{shots}-shot"] = raw.as_dict()
            reports[f"{shots}-shot calibrated"] = calibrated.as_dict()
        else:
            reports[f"{shots}-shot"] = classifier.evaluate(examples).as_dict()
    counts = {label: sum(e.label == label for e in examples) for label in labels}
    majority = max(counts.values()) / len(examples)
    return {"examples": len(examples), "chance": 1 / len(labels), "majority": majority, **reports}


def run_bias(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    from tfllm.evaluation.bias import bias_report

    ev = cfg["eval"]
    return bias_report(
        model, tokenizer, ev["templates"], ev["groups"], ev["attributes"], ev.get("batch_size", 8)
    )


def run_claims(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Claim checking on retrieved (or given) evidence; with a knowledge base, beside the
    same model on the claims alone."""
    from tfllm.evaluation.claims import ClaimChecker, claim_report, read_claims
    from tfllm.retrieval.knowledge_base import KnowledgeBase

    ev, data = cfg["eval"], cfg["data"]
    rows = read_claims(str(_data_path(cfg)))
    if data.get("limit"):
        rows = rows[: int(data["limit"])]
    kb = KnowledgeBase.load(ev["kb"]) if ev.get("kb") else None
    chat_template = ((cfg.get("run") or {}).get("chat") or {}).get("template")
    checker = ClaimChecker(
        model,
        tokenizer,
        kb,
        k=int(ev.get("k", 3)),
        template=ev.get("template"),
        calibrate=bool(ev.get("calibrate", True)),
        batch_size=int(ev.get("batch_size", 8)),
        chat_template=chat_template if ev.get("chat", True) else None,
    )
    result = {"with evidence": claim_report(checker, rows, retrieve=kb is not None)}
    if kb is not None and ev.get("without_retrieval", True):
        alone = [{**r, "evidence": ""} for r in rows]
        result["claim alone"] = claim_report(checker, alone, retrieve=False)
    return result


def evaluate(
    model: Any, tokenizer: Any, cfg: dict[str, Any], run_cfg: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run `cfg["eval"]` on the model; `run_cfg` (the checkpoint's config) gives what an
    evaluation may need of the model beyond it, such as its chat template (eval=claims)."""
    cfg = {**cfg, "run": run_cfg or {}}
    name = _evaluation_name(cfg)
    runners = {
        "perplexity": run_perplexity,
        "bleu": run_bleu,
        "accuracy": run_accuracy,
        "bias": run_bias,
        "claims": run_claims,
    }
    from tfllm.tasks.causal_lm import CausalLM

    if name in ("perplexity", "accuracy", "bias", "claims") and not isinstance(model, CausalLM):
        raise ConfigError(
            f"eval={name} scores text by its likelihood under a causal language model, and ckpt "
            f"holds a {type(model).__name__}; a fine-tuned classifier reports its accuracy on "
            "data.val while it trains"
        )
    return {"eval": name, **runners[name](model, tokenizer, cfg)}


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the scalar results (per shot count for accuracy)."""
    rows = []
    if result["eval"] == "bias":
        from tfllm.evaluation.bias import bias_table

        return bias_table(result)
    if result["eval"] == "accuracy":
        rows.append("| prompt | accuracy | macro-F1 | examples |")
        rows.append("|---|---|---|---|")
        for key, value in result.items():
            if isinstance(value, dict) and "accuracy" in value:
                rows.append(
                    f"| {key} | {value['accuracy']:.4f} | {value['macro_f1']:.4f} | "
                    f"{value['examples']} |"
                )
        rows.append(f"| chance | {result['chance']:.4f} | | |")
        rows.append(f"| majority label | {result['majority']:.4f} | | |")
        return "\n".join(rows)
    if result["eval"] == "claims":
        rows.append("| evidence | accuracy | macro-F1 | recall@k | claims |")
        rows.append("|---|---|---|---|---|")
        for key, value in result.items():
            if isinstance(value, dict):
                recall = next((v for k, v in value.items() if k.startswith("recall@")), None)
                shown = "" if recall is None else f"{recall:.4f}"
                rows.append(
                    f"| {key} | {value['accuracy']:.4f} | {value['macro_f1']:.4f} | {shown} | "
                    f"{value['claims']} |"
                )
        first = next(v for v in result.values() if isinstance(v, dict))
        rows.append(f"| majority label | {first['majority']:.4f} | | | |")
        return "\n".join(rows)
    rows.append("| metric | value |")
    rows.append("|---|---|")
    for key, value in result.items():
        if isinstance(value, float):
            rows.append(f"| {key} | {value:.4f} |")
        elif isinstance(value, int) and not isinstance(value, bool):
            rows.append(f"| {key} | {value} |")
    return "\n".join(rows)
