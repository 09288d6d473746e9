"""Moved to `tfllm.models.variables` (kept for one plugin API version)."""

from tfllm.models.variables import model_variables

__all__ = ["model_variables"]
