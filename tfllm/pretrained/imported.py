"""What every importer produces, and how it becomes a tfllm model with its weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfllm import progress


class PretrainedError(ValueError):
    """A checkpoint that cannot be imported: the message names the file and the tensor."""


@dataclass
class ImportedModel:
    """A pretrained checkpoint mapped onto registry names.

    Attributes:
        config: a resolved tfllm config: `model`, `attention`, `positional`, `ffn`, `norm`,
            `head`, `task` and `tokenizer` groups, as a training run saves them.
        weights: numpy arrays keyed by tfllm checkpoint names (`DecoderBackbone/block_0/...`,
            see `tfllm.models.variables.model_variables`), already in tfllm's layout.
        tokenizer: the tokenizer, built from the checkpoint's own files.
        chat_template: a Jinja chat template, if the checkpoint has one.
        source: where the checkpoint came from (for the config's `pretrained` record).
    """

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    tokenizer: Any
    chat_template: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def run_config(self) -> dict[str, Any]:
        """The config to save beside the converted weights."""
        cfg = copy.deepcopy(self.config)
        cfg["pretrained"] = dict(self.source)
        if self.chat_template is not None:
            cfg["chat"] = {"template": self.chat_template}
        return cfg


def build_model(imported: ImportedModel):
    """Build the tfllm model the config names and assign the imported weights to it."""
    from tfllm.models.builder import build_model as build_from_config

    tokenizer = imported.tokenizer
    model = build_from_config(  # as `tfllm.runs.load_run` builds it
        imported.config,
        tokenizer.vocabulary_size,
        tokenizer.special_token_ids(),
        tokenizer.sentinel_ids(),
        tokenizer,
    )
    assign_weights(model, imported.weights, imported.source.get("path", "checkpoint"))
    return model


def assign_weights(model: Any, weights: dict[str, np.ndarray], source: str) -> None:
    """Copy `weights` into `model`, checking that names and shapes match exactly.

    Raises:
        PretrainedError: a weight is missing, left over, or has the wrong shape; the message
            names the tensor.
    """
    from tfllm.models.variables import model_variables

    variables = {k: v for k, v in model_variables(model).items() if not k.startswith("rng/")}
    missing = sorted(set(variables) - set(weights))
    if missing:
        raise PretrainedError(
            f"{source}: the checkpoint has no tensor for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(set(weights) - set(variables))
    if extra:
        raise PretrainedError(
            f"{source}: tensor {extra[0]} has no place in the model"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for name, variable in progress.tracked(variables.items(), f"loading {source}", unit="tensor"):
        value = weights[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise PretrainedError(
                f"{source}: tensor {name} has shape {tuple(value.shape)} but the config "
                f"implies {tuple(variable.shape)}"
            )
        if not np.all(np.isfinite(value)):
            raise PretrainedError(f"{source}: tensor {name} holds NaN or Inf values")
        variable.assign(value.astype(variable.dtype.as_numpy_dtype, copy=False))


def fuse_qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`(out, in)` torch-layout q, k, v projections to tfllm's fused `(in, q+k+v)` kernel."""
    return np.concatenate([q.T, k.T, v.T], axis=1)


def fuse_bias(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([q, k, v], axis=0)


def require(tensors: dict[str, np.ndarray], name: str, source: str, shape=None) -> np.ndarray:
    """`tensors[name]`, or a `PretrainedError` naming it; checks `shape` when given."""
    if name not in tensors:
        raise PretrainedError(f"{source}: tensor {name} is missing")
    value = tensors[name]
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise PretrainedError(
            f"{source}: tensor {name} has shape {tuple(value.shape)} but the config implies "
            f"{tuple(shape)}"
        )
    return value
