"""Checks that a composed training config can be built, run before anything is trained.

The dataclasses add types to the `model` and `trainer` groups (so `trainer.max_steps=abc`
fails with the key named), and `validate_train_config` resolves every registry name and
argument, so a bad value fails before a model is built. Nothing here imports TensorFlow: the
names and arguments are checked through a `Components`, either the registry (which loads the
components) or `tfllm list`'s cached catalog (`tfllm.commands.catalog.CatalogComponents`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tfllm import registry
from tfllm.compression.prune import check_pruning
from tfllm.models.arguments import derived_sizes
from tfllm.registry import ConfigError
from tfllm.training.strategy_names import check_strategy_name

COMPONENT_GROUPS = ("tokenizer", "positional", "attention", "ffn", "norm", "head")


@dataclass
class ModelSchema:
    name: str = "decoder"
    num_layers: int = 4
    hidden_dim: int = 128
    num_heads: int = 4
    intermediate_dim: int | None = None
    max_sequence_length: int = 256
    dropout: float = 0.0
    norm_placement: str = "pre"
    initializer_range: float = 0.02
    scaled_residual_init: bool = False
    zero_residual_init: bool = False


@dataclass
class TrainerSchema:
    strategy: str = "default"
    logical_cpus: int = 1
    max_steps: int = 1000
    grad_accum_steps: int = 1
    clip_norm: float = 1.0
    mixed_precision: str | None = None
    jit_compile: bool = True
    steps_per_execution: int = 10
    log_every: int = 50
    eval_every: int = 250
    eval_batches: int | None = 50
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    resume: str = "auto"
    deterministic: bool = False
    # FLOP/s that MFU is measured against; null reads what `tfllm bench peak` saved.
    peak_flops: float | None = None
    # Stop (evaluate and checkpoint) after the step that passes this many seconds of training.
    max_seconds: float | None = None
    callbacks: list[Any] = field(default_factory=list)


class Components(Protocol):
    """Where component names and constructor arguments are checked."""

    def check_name(self, kind: str, name: str, key: str) -> None:
        """Raise a `ConfigError` for `key` unless `kind/name` exists."""

    def check_spec(
        self, kind: str, spec: dict[str, Any], context: dict[str, Any], key: str
    ) -> None:
        """Raise a `ConfigError` for `key` unless `spec` builds its component (`context`: what
        the surrounding model passes, as `registry.resolve_args` takes it)."""


class RegistryComponents:
    """The registry's check: it loads the components (and TensorFlow), and builds schedules
    (pure Python), so values only their constructor checks fail here too."""

    def check_name(self, kind: str, name: str, key: str) -> None:
        try:
            registry.get_entry(kind, name)
        except registry.RegistryError as e:
            raise ConfigError(f"{key}.name: {e}") from None

    def check_spec(
        self, kind: str, spec: dict[str, Any], context: dict[str, Any], key: str
    ) -> None:
        if kind == "schedule":
            registry.build(kind, spec, context, key=key)
        else:
            registry.resolve_args(kind, spec, context, key=key)


SCHEMAS: dict[str, Any] = {"model": ModelSchema, "trainer": TrainerSchema}
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
RESUME = ("auto", "never", "must")


def _typed(group: str, values: dict[str, Any]) -> dict[str, Any]:
    """Type-check the keys every option of `group` shares; keys only some backbones take (an
    encoder's `type_vocabulary_size`) pass through to the registry's argument check."""
    schema = OmegaConf.structured(SCHEMAS[group])
    shared = {k: v for k, v in values.items() if k in schema or group != "model"}
    extra = {k: v for k, v in values.items() if k not in shared}
    try:
        merged = OmegaConf.merge(schema, shared)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(f"{group}.{key}: {str(e).splitlines()[0]}") from None
    return {**OmegaConf.to_container(merged, resolve=True), **extra}


def _positive(key: str, value: Any, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else 'positive'}, got {value}")


def validate_train_config(
    cfg: dict[str, Any], components: Components | None = None
) -> dict[str, Any]:
    """Check a resolved training config; return it with typed `model` and `trainer` sections.

    `components` checks the component names and arguments (default: `RegistryComponents`).

    Raises:
        ConfigError: naming the key, the value and what would be valid.
    """
    cfg = dict(cfg)
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: {seed!r} is not a whole number from 0 to 2**32 - 1")
    for group in ("model", "trainer", "data", "optimizer", "schedule", "task", *COMPONENT_GROUPS):
        if group not in cfg or not isinstance(cfg[group], dict):
            raise ConfigError(f"{group}: missing from the config")
    cfg["model"] = _typed("model", cfg["model"])
    cfg["trainer"] = _typed("trainer", cfg["trainer"])
    tr = cfg["trainer"]
    check_strategy_name(tr["strategy"])
    for key in (
        "max_steps",
        "grad_accum_steps",
        "steps_per_execution",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "logical_cpus",
    ):
        _positive(f"trainer.{key}", tr[key])
    _positive("trainer.clip_norm", tr["clip_norm"], allow_zero=True)
    if tr["mixed_precision"] not in MIXED_PRECISION:
        raise ConfigError(
            f"trainer.mixed_precision: '{tr['mixed_precision']}' is not one of "
            f"null, mixed_float16, mixed_bfloat16"
        )
    if tr["resume"] not in RESUME:
        raise ConfigError(f"trainer.resume: '{tr['resume']}' is not one of {', '.join(RESUME)}")
    m = cfg["model"]
    for key in ("num_layers", "hidden_dim", "num_heads", "max_sequence_length"):
        _positive(f"model.{key}", m[key])
    data = cfg["data"]
    if data.get("sequence_length", 0) > m["max_sequence_length"]:
        raise ConfigError(
            f"data.sequence_length={data['sequence_length']} exceeds "
            f"model.max_sequence_length={m['max_sequence_length']}"
        )
    for key in ("source_length", "target_length"):  # pairs for an encoder-decoder
        if data.get(key, 0) > m["max_sequence_length"]:
            raise ConfigError(
                f"data.{key}={data[key]} exceeds model.max_sequence_length="
                f"{m['max_sequence_length']}"
            )
    batch = data.get("batch_size", 0)
    if batch and batch % tr["grad_accum_steps"]:
        raise ConfigError(
            f"data.batch_size={batch} is not divisible by "
            f"trainer.grad_accum_steps={tr['grad_accum_steps']}"
        )
    # Every registry name and argument must resolve before anything is built.
    head_dim, intermediate_dim = derived_sizes(
        m["hidden_dim"], m["num_heads"], m["intermediate_dim"], cfg["attention"].get("head_dim")
    )
    context = dict(
        hidden_dim=m["hidden_dim"],
        num_heads=m["num_heads"],
        head_dim=head_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=m["max_sequence_length"],
        vocabulary_size=1,
        num_classes=max(2, len(cfg["task"].get("labels") or ())),
        causal=True,
    )
    check = components if components is not None else RegistryComponents()
    for group in COMPONENT_GROUPS:
        check.check_spec(group, cfg[group], context, group)
    check.check_name("model", m["name"], "model")
    check.check_spec("dataset", data, {"sequence_length": 1, "batch_size": 1}, "data")
    check.check_spec("optimizer", cfg["optimizer"], {"learning_rate": 1.0}, "optimizer")
    check.check_spec("schedule", cfg["schedule"], {}, "schedule")
    check.check_spec("task", {"name": cfg["task"]["name"]}, {"backbone": None}, "task")
    if cfg.get("adapter"):
        check.check_spec("adapter", cfg["adapter"], {}, "adapter")
    if cfg.get("pruning"):
        cfg["pruning"] = check_pruning(cfg["pruning"])
    for i, cb in enumerate(tr["callbacks"]):
        spec = {"name": cb} if isinstance(cb, str) else cb
        check.check_spec("callback", spec, {}, f"trainer.callbacks[{i}]")
    return cfg
