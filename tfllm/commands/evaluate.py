"""`tfllm evaluate ckpt=DIR eval=perplexity|bleu|accuracy|fewshot|... data.path=...`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import run_hydra


def evaluate_job(plain: dict[str, Any]) -> None:
    from tfllm.evaluation.runner import check_evaluation, evaluate, table
    from tfllm.runs import check_run_dir

    # A wrong ckpt= or evaluation is refused before TensorFlow loads.
    check_run_dir(plain["ckpt"])
    check_evaluation(plain)
    from tfllm.runs import load_run

    model, tokenizer, run_cfg = load_run(plain["ckpt"])
    result = evaluate(model, tokenizer, plain, run_cfg)
    result["ckpt"] = plain["ckpt"]
    if plain["out"]:
        with open(plain["out"], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if plain["format"] != "json":
        print(table(result))
    print(json.dumps(result))


def main(argv: Sequence[str]) -> None:
    # In its own folder: `eval=` picks an evaluation, and `data` is a plain key.
    run_hydra("evaluate", "evaluate", evaluate_job, argv, subdir="_evaluate")
