"""`tfllm quantize ckpt=DIR out=DIR` and `tfllm prune ckpt=DIR out=DIR sparsity=S`: a run (or
converted checkpoint) in, a compressed run directory out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import run_hydra
from tfllm.registry import ConfigError


def quantize_run(
    ckpt: str, out: str, activations: str = "none", overwrite: bool = False, mode: str = "int8"
) -> dict[str, Any]:
    """A run or converted checkpoint in, a reduced-precision checkpoint directory out.

    `mode="int8"`: int8 matrices with one scale per output channel (`activations="dynamic"`
    quantizes activations per token too). `mode="bf16"`: the whole model rebuilt under the
    bfloat16 dtype policy, every weight rounded to bfloat16. A LoRA adapter is merged first.
    The written config records `quantization`, so every loader (generate, chat, evaluate,
    export, serve) rebuilds the model in that precision before restoring.
    Returns what was done: the mode, the layers quantized (int8) or weights rounded (bf16),
    and weight bytes before and after.
    """
    from tfllm.compression.quantization_spec import check_quantization
    from tfllm.runs import check_run_dir, load_run, write_run

    # A wrong ckpt= or mode is refused before TensorFlow loads.
    check_run_dir(ckpt)
    spec = check_quantization({"mode": mode, "activations": activations})
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    from tfllm.adapters.lora import merge_adapter
    from tfllm.compression.quantize import quantize_model, weight_bytes

    model, tokenizer, cfg = load_run(ckpt)
    if cfg.get("quantization"):
        raise ConfigError(f"ckpt: {ckpt} is already quantized ({cfg['quantization']})")
    if cfg.get("adapter"):
        model, cfg = merge_adapter(model, cfg, tokenizer)
    before = weight_bytes(model)
    cfg = {**cfg, "quantization": spec}
    if spec["mode"] == "bf16":
        model = _rebuilt_in_bfloat16(model, tokenizer, cfg)
        done = {"weights": sum(1 for w in model.weights if w.dtype == "bfloat16")}
    else:
        done = {"layers": len(quantize_model(model, **spec))}
    write_run(model, tokenizer, cfg, out, overwrite)
    return {
        "mode": spec["mode"],
        **done,
        "bytes_before": before,
        "bytes_after": weight_bytes(model),
    }


def _rebuilt_in_bfloat16(model: Any, tokenizer: Any, cfg: dict[str, Any]) -> Any:
    """`model`'s architecture built again from `cfg` (which asks for bf16), holding `model`'s
    weights rounded to bfloat16 (integer state, such as dropout's generators, copied)."""
    import tensorflow as tf

    from tfllm.models.builder import build_model
    from tfllm.models.variables import model_variables

    rebuilt = build_model(
        cfg,
        tokenizer.vocabulary_size,
        tokenizer.special_token_ids(),
        tokenizer.sentinel_ids(),
        tokenizer,
    )
    source, target = model_variables(model), model_variables(rebuilt)
    if source.keys() != target.keys():  # one architecture, built twice: never expected
        changed = sorted(source.keys() ^ target.keys())
        raise ValueError(f"bf16 rebuild changed the weights: {changed}")
    for name, variable in target.items():
        variable.assign(tf.cast(source[name], variable.dtype))
    return rebuilt


def prune_run(
    ckpt: str,
    out: str,
    sparsity: float,
    scope: str = "global",
    targets: Sequence[str] | None = None,
    finetune_steps: int = 0,
    learning_rate: float = 1e-4,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prune a run's weights by magnitude into `out`, then optionally fine-tune.

    Without fine-tuning `out` is a checkpoint directory like `tfllm convert`'s. With
    `finetune_steps` it is a training run: the source's config with `init_from=ckpt`,
    `pruning` set (the trainer prunes at step 0 and keeps the zeros), a constant learning rate
    and `finetune_steps` steps; `overrides` (`{"data": {...}}`) replace whole config blocks,
    for a converted checkpoint that carries no data config. Running the same command again
    resumes an interrupted fine-tune.
    """
    from tfllm.runs import RUN_CONFIG, check_run_dir, load_run, load_run_config, write_run

    check_run_dir(ckpt)  # a wrong ckpt= is refused before TensorFlow loads
    from tfllm.compression.prune import check_pruning, prune_model, sparsity_of

    spec = check_pruning({"sparsity": sparsity, "scope": scope, "targets": targets})
    if finetune_steps < 0:
        raise ConfigError(f"finetune_steps must be >= 0, got {finetune_steps}")
    resuming = finetune_steps and os.path.exists(os.path.join(out, RUN_CONFIG))
    if os.path.exists(out) and os.listdir(out) and not (overwrite or resuming):
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    if not finetune_steps:
        model, tokenizer, cfg = load_run(ckpt)
        prune_model(model, **spec)
        write_run(model, tokenizer, {**cfg, "pruning": spec}, out, overwrite)
        total, _ = sparsity_of(model, spec["targets"])
        return {"sparsity": total, "run_dir": out}
    from tfllm.training.trainer import Trainer

    cfg = load_run_config(ckpt)
    cfg.update(overrides or {})
    cfg["init_from"] = os.path.abspath(ckpt)
    cfg["pruning"] = spec
    cfg["schedule"] = {"name": "constant", "peak_learning_rate": learning_rate, "warmup_steps": 0}
    every = max(1, min(finetune_steps, 250))
    cfg["trainer"] = {
        **cfg["trainer"],
        "max_steps": finetune_steps,
        "eval_every": every,
        "checkpoint_every": every,
        "resume": "auto",
    }
    trainer = Trainer(cfg, out)
    logs = trainer.fit()
    total, _ = sparsity_of(trainer.model, spec["targets"])
    return {"sparsity": total, "run_dir": out, "val_loss": logs.get("val_loss")}


def quantize_job(plain: dict[str, Any]) -> None:
    done = quantize_run(
        plain["ckpt"], plain["out"], plain["activations"], plain["overwrite"], plain["mode"]
    )
    ratio = done["bytes_before"] / done["bytes_after"]
    what = (
        f"rounded {done['weights']} weights to bf16"
        if done["mode"] == "bf16"
        else f"quantized {done['layers']} layers to int8"
    )
    print(
        f"{what}: weights {done['bytes_before'] / 1e6:.2f} MB "
        f"-> {done['bytes_after'] / 1e6:.2f} MB ({ratio:.2f}x) in {plain['out']}"
    )


def prune_job(plain: dict[str, Any]) -> None:
    done = prune_run(
        plain["ckpt"],
        plain["out"],
        plain["sparsity"],
        plain["scope"],
        plain["targets"],
        plain["finetune_steps"],
        plain["learning_rate"],
        {"data": plain["data"]} if plain["data"] else None,
        plain["overwrite"],
    )
    line = f"pruned to sparsity {done['sparsity']:.3f} in {done['run_dir']}"
    if done.get("val_loss") is not None:
        line += f" (fine-tuned: val loss {done['val_loss']:.4f})"
    print(line)


def quantize_main(argv: Sequence[str]) -> None:
    run_hydra("quantize", "quantize", quantize_job, argv)


def prune_main(argv: Sequence[str]) -> None:
    run_hydra("prune", "prune", prune_job, argv)
