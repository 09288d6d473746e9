"""The `trainer.strategy` names, checked without TensorFlow (`strategy.py` builds them)."""

from __future__ import annotations

from tfllm.registry import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu", "auto")


def check_strategy_name(name: str) -> None:
    """Raise a `ConfigError` naming the valid strategies unless `name` is one.

    >>> check_strategy_name("mirrored")
    """
    if name not in STRATEGIES:
        raise ConfigError(
            f"trainer.strategy: unknown strategy '{name}'. Valid: {', '.join(STRATEGIES)}."
        )
