"""`tfllm generate ckpt=RUN_DIR prompt="..."`: sampling or beam search, with an optional
safety filter on every completion."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfllm.commands.common import CommandError, run_hydra, settings, texts_argument, user_error


def safety_filter(spec: Any) -> Any:
    """The safety filter a command's `safety=` names, or None."""
    if not spec:
        return None
    from tfllm.components.safety.base import build_safety_filter

    with user_error("safety: "):
        return build_safety_filter(spec)


def generate_job(plain: dict[str, Any]) -> None:
    from tfllm.generation.settings import GenerationConfig
    from tfllm.runs import check_run_dir
    from tfllm.serving.in_process import export_version

    # A wrong ckpt=, prompt or setting is refused before TensorFlow loads.
    version = export_version(plain["ckpt"])
    if version is None:
        check_run_dir(plain["ckpt"])
    prompts = texts_argument(plain, "prompt", "prompts")
    config = settings(GenerationConfig, plain)
    safety = safety_filter(plain.get("safety"))
    if version is not None:
        beams = (plain.get("num_beams", 1), plain["length_penalty"])
        outputs, echo = exported_completions(version, prompts, config, *beams)
        write_outputs(prompts, outputs, echo, safety)
        return
    from tfllm.generation.seq2seq import is_seq2seq, make_generator
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(plain["ckpt"])
    with user_error():
        if plain.get("num_beams", 1) > 1:
            from tfllm.generation.beam import beam_generate

            outputs = beam_generate(
                model,
                tokenizer,
                prompts,
                num_beams=plain["num_beams"],
                max_new_tokens=config.max_new_tokens,
                length_penalty=plain["length_penalty"],
                num_return_sequences=config.num_return_sequences,
                stop_at_eos=config.stop_at_eos,
                stop=config.stop,
            )
        else:
            generator = make_generator(model, tokenizer, jit_compile=plain["jit_compile"])
            found = generator.complete(prompts, config)
            outputs = [[c.text for c in row] for row in found]
            short = sum(
                c.finish_reason == "length" and len(c.token_ids) < config.max_new_tokens
                for row in found
                for c in row
            )
            if short:
                print(
                    f"tfllm: note: {short} completion(s) ended at the model's context of "
                    f"{model.max_sequence_length} tokens, before max_new_tokens="
                    f"{config.max_new_tokens}",
                    file=sys.stderr,
                )
    # A causal LM continues its prompt; an encoder-decoder's output stands alone.
    write_outputs(prompts, outputs, not is_seq2seq(model), safety)


def exported_completions(
    version: str, prompts: list[str], config: Any, num_beams: int = 1, length_penalty: float = 1.0
) -> tuple[list, bool]:
    """The texts an export answers for `prompts` with `config`'s settings, as a server would
    answer them: its `generate` signature (`num_return_sequences` rows each), or with
    `num_beams` > 1 its `beam` signature (an encoder-decoder's: the best
    `num_return_sequences`); each cut at `config.stop`. Also whether its outputs continue
    their prompts (a causal LM's do)."""
    from tfllm.generation.prompts import cut_at_stops
    from tfllm.serving.in_process import InProcessExport

    n = config.num_return_sequences
    with user_error():
        export = InProcessExport(version)
        if num_beams > 1:
            if "beam" not in export.signature_names():
                raise CommandError(
                    "num_beams: this export has no beam signature (an encoder-decoder's export "
                    "has one; beam search of a causal LM runs on its run: ckpt=RUN_DIR)"
                )
            out = export.predict(
                {
                    "prompts": np.asarray(prompts, dtype=object),
                    "num_beams": np.int32(num_beams),
                    "max_new_tokens": np.int32(config.max_new_tokens),
                    "length_penalty": np.float32(length_penalty),
                },
                "beam",
            )
            rows = [[t.decode("utf-8") for t in row[:n]] for row in out["completions"]]
        else:
            found = export.complete(
                [p for p in prompts for _ in range(n)],
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                seed=config.seed,
            )
            rows = [[c.text for c in found[i * n : (i + 1) * n]] for i in range(len(prompts))]
    outputs = [[cut_at_stops(text, config.stop) for text in row] for row in rows]
    return outputs, export.continues_prompts()


def write_outputs(prompts: list[str], outputs: list[list[str]], echo: bool, safety: Any) -> None:
    """Each completion on its own line (after its prompt when `echo`), through the safety
    filter when there is one; a rule between them when there are several."""
    for prompt, completions in zip(prompts, outputs, strict=True):
        for text in completions:
            if safety is not None:
                verdict = safety.verdicts([text])[0]
                if verdict.flagged:
                    reasons = ", ".join(verdict.reasons)
                    print(f"tfllm: safety filter flagged a completion ({reasons})", file=sys.stderr)
                text = verdict.text
            sys.stdout.write((prompt if echo else "") + text + "\n")
            if len(prompts) > 1 or len(completions) > 1:
                sys.stdout.write("-" * 40 + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str]) -> None:
    run_hydra("generate", "generate", generate_job, argv)
