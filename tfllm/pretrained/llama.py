"""The Llama architecture (Llama 2/3, SmolLM2, Mistral-style GQA) as tfllm registry specs."""

from __future__ import annotations

from typing import Any


def llama_config(
    *,
    vocabulary_size: int,
    num_layers: int,
    hidden_dim: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_dim: int,
    max_sequence_length: int,
    rms_epsilon: float,
    rope_theta: float,
    rope_scaling: float = 1.0,
    head_dim: int | None = None,
    tie_embeddings: bool = True,
    attention_bias: bool = False,
    mlp_bias: bool = False,
    tokenizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A resolved tfllm config for a Llama-layout decoder.

    Llama is `attention=mha` with `num_kv_heads`, `positional=rope`, `ffn=swiglu`,
    `norm=rmsnorm`, pre-norm blocks and an `lm` head (tied or not): nothing bespoke.
    """
    attention: dict[str, Any] = {
        "name": "mha",
        "num_kv_heads": num_kv_heads,
        "window": None,
        "dropout": 0.0,
        "use_bias": attention_bias,
    }
    if head_dim is not None and head_dim != hidden_dim // num_heads:
        attention["head_dim"] = head_dim
    return {
        "model": {
            "name": "decoder",
            "vocabulary_size": vocabulary_size,
            "num_layers": num_layers,
            "hidden_dim": hidden_dim,
            "num_heads": num_heads,
            "intermediate_dim": intermediate_dim,
            "max_sequence_length": max_sequence_length,
            "dropout": 0.0,
            "norm_placement": "pre",
            "initializer_range": 0.02,
            "scaled_residual_init": False,
        },
        "attention": attention,
        "positional": {
            "name": "rope",
            "max_wavelength": float(rope_theta),
            "scaling_factor": float(rope_scaling),
        },
        "ffn": {"name": "swiglu", "use_bias": mlp_bias},
        "norm": {"name": "rmsnorm", "epsilon": float(rms_epsilon)},
        "head": {"name": "lm", "tie_embeddings": tie_embeddings, "use_bias": False},
        "task": {"name": "causal_lm"},
        "tokenizer": dict(tokenizer or {}),
    }


BACKBONE = "DecoderBackbone"


def llama_weight_names(num_layers: int, tie_embeddings: bool) -> dict[str, str]:
    """tfllm checkpoint name of each role (`embed`, `norm`, `lm_head`; per-layer roles carry
    their layer index)."""
    names = {
        "embed": f"{BACKBONE}/token_embedding/embeddings",
        "norm": f"{BACKBONE}/final_norm/scale",
    }
    if not tie_embeddings:
        names["lm_head"] = "LMHead/kernel"
    for i in range(num_layers):
        block = f"{BACKBONE}/block_{i}"
        names[f"{i}.qkv"] = f"{block}/attention/qkv_proj/kernel"
        names[f"{i}.qkv_bias"] = f"{block}/attention/qkv_proj/bias"
        names[f"{i}.o"] = f"{block}/attention/out_proj/kernel"
        names[f"{i}.o_bias"] = f"{block}/attention/out_proj/bias"
        names[f"{i}.gate_up"] = f"{block}/ffn/gate_up/kernel"
        names[f"{i}.gate_up_bias"] = f"{block}/ffn/gate_up/bias"
        names[f"{i}.down"] = f"{block}/ffn/down/kernel"
        names[f"{i}.down_bias"] = f"{block}/ffn/down/bias"
        names[f"{i}.attn_norm"] = f"{block}/attention_norm/scale"
        names[f"{i}.ffn_norm"] = f"{block}/ffn_norm/scale"
    return names
