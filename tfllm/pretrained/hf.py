"""Hugging Face layouts (`config.json` + safetensors): Llama, GPT-2, BERT and T5."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tfllm.pretrained.imported import (
    ImportedModel,
    PretrainedError,
    fuse_bias,
    fuse_qkv,
    require,
)
from tfllm.pretrained.llama import llama_config, llama_weight_names

CONFIG_FILE = "config.json"


def read_safetensors(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of `model.safetensors` (or the shards an index names), as float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(directory, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise PretrainedError(f"{directory}: no model.safetensors (or index) found")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        path = os.path.join(directory, name)
        try:
            loaded = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise PretrainedError(f"{path}: not a readable safetensors file: {e}") from None
        for key, value in loaded.items():
            if value.dtype.kind not in "fV" and value.dtype != np.int64:
                raise PretrainedError(f"{path}: tensor {key} has unsupported dtype {value.dtype}")
            if value.dtype.kind == "f":
                tensors[key] = value.astype(np.float32, copy=False)
    return tensors


def _strip(tensors: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Drop a model-class prefix (`model.`, `transformer.`, `bert.`) when every key has it."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in tensors):
            return {
                (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()
            }
    return tensors


class _Taker:
    """Pops named tensors with shape checks, so leftovers can be reported."""

    def __init__(self, tensors: dict[str, np.ndarray], source: str, ignore: tuple[str, ...] = ()):
        self.tensors = dict(tensors)
        self.source = source
        for key in list(self.tensors):
            if ignore and key.endswith(ignore):
                del self.tensors[key]

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = require(self.tensors, name, self.source, shape)
        del self.tensors[name]
        return value

    def pop(self, name: str) -> np.ndarray | None:
        return self.tensors.pop(name, None)

    def finish(self, family: str) -> None:
        if self.tensors:
            raise PretrainedError(
                f"{self.source}: tensor {sorted(self.tensors)[0]} has no place in a {family} model"
            )


def _llama(cfg: dict[str, Any], tensors, directory: str, tokenizer) -> ImportedModel:
    hidden, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or hidden // n_heads
    inter = cfg["intermediate_size"]
    tied = bool(cfg.get("tie_word_embeddings", False))
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "linear")) if scaling else "linear"
    if kind not in ("linear", "default"):
        raise PretrainedError(f"{directory}: rope_scaling type {kind!r} is not supported")
    attn_bias, mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))
    vocab = cfg["vocab_size"]
    config = llama_config(
        vocabulary_size=vocab,
        num_layers=n_layers,
        hidden_dim=hidden,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        intermediate_dim=inter,
        max_sequence_length=cfg.get("max_position_embeddings", 2048),
        rms_epsilon=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)),
        rope_scaling=float(scaling.get("factor", 1.0)) if scaling else 1.0,
        head_dim=head_dim,
        tie_embeddings=tied,
        attention_bias=attn_bias,
        mlp_bias=mlp_bias,
        tokenizer={"name": _registry_name(tokenizer)},
    )
    take = _Taker(_strip(tensors, ("model.",)), directory, ignore=("rotary_emb.inv_freq",))
    names = llama_weight_names(n_layers, tied)
    q_dim, kv_dim = n_heads * head_dim, n_kv * head_dim
    weights = {
        names["embed"]: take("embed_tokens.weight", (vocab, hidden)),
        names["norm"]: take("norm.weight", (hidden,)),
    }
    head = take.pop("lm_head.weight")
    if not tied:
        if head is None:
            raise PretrainedError(f"{directory}: tensor lm_head.weight is missing")
        weights[names["lm_head"]] = require(
            {"lm_head.weight": head}, "lm_head.weight", directory, (vocab, hidden)
        ).T
    for i in range(n_layers):
        p = f"layers.{i}"
        q = take(f"{p}.self_attn.q_proj.weight", (q_dim, hidden))
        k = take(f"{p}.self_attn.k_proj.weight", (kv_dim, hidden))
        v = take(f"{p}.self_attn.v_proj.weight", (kv_dim, hidden))
        weights[names[f"{i}.qkv"]] = fuse_qkv(q, k, v)
        weights[names[f"{i}.o"]] = take(f"{p}.self_attn.o_proj.weight", (hidden, q_dim)).T
        if attn_bias:
            weights[names[f"{i}.qkv_bias"]] = fuse_bias(
                take(f"{p}.self_attn.q_proj.bias", (q_dim,)),
                take(f"{p}.self_attn.k_proj.bias", (kv_dim,)),
                take(f"{p}.self_attn.v_proj.bias", (kv_dim,)),
            )
            weights[names[f"{i}.o_bias"]] = take(f"{p}.self_attn.o_proj.bias", (hidden,))
        gate = take(f"{p}.mlp.gate_proj.weight", (inter, hidden))
        up = take(f"{p}.mlp.up_proj.weight", (inter, hidden))
        weights[names[f"{i}.gate_up"]] = np.concatenate([gate.T, up.T], axis=1)
        weights[names[f"{i}.down"]] = take(f"{p}.mlp.down_proj.weight", (hidden, inter)).T
        if mlp_bias:
            weights[names[f"{i}.gate_up_bias"]] = np.concatenate(
                [take(f"{p}.mlp.gate_proj.bias", (inter,)), take(f"{p}.mlp.up_proj.bias", (inter,))]
            )
            weights[names[f"{i}.down_bias"]] = take(f"{p}.mlp.down_proj.bias", (hidden,))
        weights[names[f"{i}.attn_norm"]] = take(f"{p}.input_layernorm.weight", (hidden,))
        weights[names[f"{i}.ffn_norm"]] = take(f"{p}.post_attention_layernorm.weight", (hidden,))
    take.finish("Llama")
    return ImportedModel(config, weights, tokenizer, _chat_template(directory))


GPT2_ACTIVATIONS = {
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
}


def _classic_config(
    backbone: str,
    norm_placement: str,
    *,
    vocab: int,
    n_layers: int,
    hidden: int,
    n_heads: int,
    inter: int,
    n_pos: int,
    activation: str,
    eps: float,
    initializer_range: float,
    task: dict[str, Any],
    tokenizer: Any,
    **model_extra: Any,
) -> dict[str, Any]:
    """GPT-2 and BERT: learned positions, biased MHA, an MLP and LayerNorm."""
    return {
        "model": {
            "name": backbone,
            "vocabulary_size": vocab,
            "num_layers": n_layers,
            "hidden_dim": hidden,
            "num_heads": n_heads,
            "intermediate_dim": inter,
            "max_sequence_length": n_pos,
            "dropout": 0.0,
            "norm_placement": norm_placement,
            "initializer_range": initializer_range,
            "scaled_residual_init": False,
            **model_extra,
        },
        "attention": {
            "name": "mha",
            "num_kv_heads": None,
            "window": None,
            "dropout": 0.0,
            "use_bias": True,
        },
        "positional": {"name": "learned"},
        "ffn": {"name": "mlp", "activation": GPT2_ACTIVATIONS[activation], "use_bias": True},
        "norm": {"name": "layernorm", "epsilon": float(eps), "use_bias": True},
        "head": {"name": "lm", "tie_embeddings": True, "use_bias": False},
        "task": task,
        "tokenizer": {"name": _registry_name(tokenizer)},
    }


def _gpt2(cfg: dict[str, Any], tensors, directory: str, tokenizer) -> ImportedModel:
    hidden, n_layers, n_heads = cfg["n_embd"], cfg["n_layer"], cfg["n_head"]
    inter = cfg.get("n_inner") or 4 * hidden
    vocab, n_pos = cfg["vocab_size"], cfg["n_positions"]
    activation = cfg.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        raise PretrainedError(f"{directory}: activation_function {activation!r} is not supported")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    config = _classic_config(
        "decoder",
        "pre",
        vocab=vocab,
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        inter=inter,
        n_pos=n_pos,
        activation=activation,
        eps=eps,
        initializer_range=cfg.get("initializer_range", 0.02),
        task={"name": "causal_lm"},
        tokenizer=tokenizer,
    )
    take = _Taker(
        _strip(tensors, ("transformer.",)), directory, ignore=(".attn.bias", ".attn.masked_bias")
    )
    take.pop("lm_head.weight")  # tied to wte
    b = "DecoderBackbone"
    weights = {
        f"{b}/token_embedding/embeddings": take("wte.weight", (vocab, hidden)),
        f"{b}/positional/position_embeddings": take("wpe.weight", (n_pos, hidden)),
        f"{b}/final_norm/gamma": take("ln_f.weight", (hidden,)),
        f"{b}/final_norm/beta": take("ln_f.bias", (hidden,)),
    }
    for i in range(n_layers):
        p, t = f"h.{i}", f"{b}/block_{i}"
        # GPT-2's Conv1D weights are already (in, out).
        weights[f"{t}/attention/qkv_proj/kernel"] = take(
            f"{p}.attn.c_attn.weight", (hidden, 3 * hidden)
        )
        weights[f"{t}/attention/qkv_proj/bias"] = take(f"{p}.attn.c_attn.bias", (3 * hidden,))
        weights[f"{t}/attention/out_proj/kernel"] = take(
            f"{p}.attn.c_proj.weight", (hidden, hidden)
        )
        weights[f"{t}/attention/out_proj/bias"] = take(f"{p}.attn.c_proj.bias", (hidden,))
        weights[f"{t}/ffn/up/kernel"] = take(f"{p}.mlp.c_fc.weight", (hidden, inter))
        weights[f"{t}/ffn/up/bias"] = take(f"{p}.mlp.c_fc.bias", (inter,))
        weights[f"{t}/ffn/down/kernel"] = take(f"{p}.mlp.c_proj.weight", (inter, hidden))
        weights[f"{t}/ffn/down/bias"] = take(f"{p}.mlp.c_proj.bias", (hidden,))
        for hf, ours in (("ln_1", "attention_norm"), ("ln_2", "ffn_norm")):
            weights[f"{t}/{ours}/gamma"] = take(f"{p}.{hf}.weight", (hidden,))
            weights[f"{t}/{ours}/beta"] = take(f"{p}.{hf}.bias", (hidden,))
    take.finish("GPT-2")
    return ImportedModel(config, weights, tokenizer, _chat_template(directory))


def _bert(cfg: dict[str, Any], tensors, directory: str, tokenizer) -> ImportedModel:
    hidden, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    n_heads, inter = cfg["num_attention_heads"], cfg["intermediate_size"]
    vocab, n_pos = cfg["vocab_size"], cfg["max_position_embeddings"]
    n_types = cfg.get("type_vocab_size", 2)
    activation = cfg.get("hidden_act", "gelu")
    if activation not in GPT2_ACTIVATIONS:
        raise PretrainedError(f"{directory}: hidden_act {activation!r} is not supported")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise PretrainedError(
            f"{directory}: position_embedding_type {cfg['position_embedding_type']!r} is not "
            "supported"
        )
    eps = cfg.get("layer_norm_eps", 1e-12)
    config = _classic_config(
        "encoder",
        "post",
        vocab=vocab,
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        inter=inter,
        n_pos=n_pos,
        activation=activation,
        eps=eps,
        initializer_range=cfg.get("initializer_range", 0.02),
        task={"name": "sentence_embedding", "pooling": "mean", "normalize": True},
        tokenizer=tokenizer,
        type_vocabulary_size=n_types,
        embedding_norm=True,
    )
    tensors = {
        k.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        ): v
        for k, v in tensors.items()
    }
    take = _Taker(_strip(tensors, ("bert.",)), directory, ignore=("position_ids",))
    for key in [k for k in take.tensors if k.startswith(("pooler.", "cls."))]:
        take.pop(key)  # task heads of other objectives: not part of the backbone
    b = "EncoderBackbone"
    weights = {
        f"{b}/token_embedding/embeddings": take(
            "embeddings.word_embeddings.weight", (vocab, hidden)
        ),
        f"{b}/positional/position_embeddings": take(
            "embeddings.position_embeddings.weight", (n_pos, hidden)
        ),
        f"{b}/segment_embedding/embeddings": take(
            "embeddings.token_type_embeddings.weight", (n_types, hidden)
        ),
        f"{b}/embedding_norm/gamma": take("embeddings.LayerNorm.weight", (hidden,)),
        f"{b}/embedding_norm/beta": take("embeddings.LayerNorm.bias", (hidden,)),
    }
    for i in range(n_layers):
        p, t = f"encoder.layer.{i}", f"{b}/block_{i}"
        qkv = [
            take(f"{p}.attention.self.{n}.weight", (hidden, hidden))
            for n in ("query", "key", "value")
        ]
        weights[f"{t}/attention/qkv_proj/kernel"] = fuse_qkv(*qkv)
        weights[f"{t}/attention/qkv_proj/bias"] = fuse_bias(
            *[take(f"{p}.attention.self.{n}.bias", (hidden,)) for n in ("query", "key", "value")]
        )
        weights[f"{t}/attention/out_proj/kernel"] = take(
            f"{p}.attention.output.dense.weight", (hidden, hidden)
        ).T
        weights[f"{t}/attention/out_proj/bias"] = take(
            f"{p}.attention.output.dense.bias", (hidden,)
        )
        weights[f"{t}/ffn/up/kernel"] = take(f"{p}.intermediate.dense.weight", (inter, hidden)).T
        weights[f"{t}/ffn/up/bias"] = take(f"{p}.intermediate.dense.bias", (inter,))
        weights[f"{t}/ffn/down/kernel"] = take(f"{p}.output.dense.weight", (hidden, inter)).T
        weights[f"{t}/ffn/down/bias"] = take(f"{p}.output.dense.bias", (hidden,))
        for hf, ours in (
            ("attention.output.LayerNorm", "attention_norm"),
            ("output.LayerNorm", "ffn_norm"),
        ):
            weights[f"{t}/{ours}/gamma"] = take(f"{p}.{hf}.weight", (hidden,))
            weights[f"{t}/{ours}/beta"] = take(f"{p}.{hf}.bias", (hidden,))
    take.finish("BERT")
    return ImportedModel(config, weights, tokenizer, None)


T5_FFN = {"relu": ("mlp", "relu"), "gated-gelu": ("swiglu", "gelu_approximate")}


def _t5(cfg: dict[str, Any], tensors, directory: str, tokenizer) -> ImportedModel:
    """T5 (v1.0: ReLU MLP, tied head) and T5 v1.1 / Flan-T5 (gated GELU, untied head).

    T5 does not scale attention logits by `1/sqrt(d_kv)`, and v1.0 reads the decoder's output
    scaled by `d_model ** -0.5`; both are folded into the weights (the query projections, the
    decoder's final norm), which is exact up to float rounding. The head is tied unless the
    checkpoint holds an `lm_head.weight` of its own.
    """
    hidden, n_heads, d_kv = cfg["d_model"], cfg["num_heads"], cfg["d_kv"]
    n_enc = cfg["num_layers"]
    n_dec = cfg.get("num_decoder_layers") or n_enc
    inter, vocab = cfg["d_ff"], cfg["vocab_size"]
    proj = cfg.get("feed_forward_proj", "relu")
    if proj not in T5_FFN:
        raise PretrainedError(
            f"{directory}: feed_forward_proj {proj!r} is not supported ({', '.join(T5_FFN)})"
        )
    ffn_name, activation = T5_FFN[proj]
    # Whether the decoder's output is rescaled before the head: older configs say it with
    # `tie_word_embeddings` (false in v1.1), transformers 5 with `scale_decoder_outputs`.
    rescale = bool(cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True)))
    head = tensors.get("lm_head.weight")  # absent or equal to `shared` when the head is tied
    tied = head is None or np.array_equal(head, tensors.get("shared.weight"))
    buckets = cfg.get("relative_attention_num_buckets", 32)
    attention = {"name": "mha", "num_kv_heads": None, "window": None, "dropout": 0.0}
    attention.update(use_bias=False, head_dim=d_kv)
    config = {
        "model": {
            "name": "encoder_decoder",
            "vocabulary_size": vocab,
            "num_layers": n_enc,
            "num_decoder_layers": n_dec,
            "hidden_dim": hidden,
            "num_heads": n_heads,
            "intermediate_dim": inter,
            "max_sequence_length": cfg.get("n_positions") or 512,
            "dropout": 0.0,
            "norm_placement": "pre",
            "initializer_range": 0.02,
            "scaled_residual_init": False,
            "cross_attention": dict(attention),
        },
        "attention": attention,
        "positional": {
            "name": "relative",
            "num_buckets": buckets,
            "max_distance": cfg.get("relative_attention_max_distance", 128),
        },
        "ffn": {"name": ffn_name, "activation": activation, "use_bias": False},
        "norm": {"name": "rmsnorm", "epsilon": float(cfg.get("layer_norm_epsilon", 1e-6))},
        "head": {"name": "lm", "tie_embeddings": tied, "use_bias": False},
        "task": {"name": "seq2seq"},
        "tokenizer": {"name": _registry_name(tokenizer)},
    }
    take = _Taker(tensors, directory)
    for copy in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        take.pop(copy)  # the shared embedding, saved again under each stack's name
    inner = n_heads * d_kv
    scale = np.float32(np.sqrt(d_kv))  # undoes tfllm's 1/sqrt(d_kv) on the logits
    b = "EncoderDecoderBackbone"
    shared = take("shared.weight", (vocab, hidden))
    weights = {f"{b}/token_embedding/embeddings": shared}
    take.pop("lm_head.weight")
    if not tied:
        weights["LMHead/kernel"] = require(
            {"lm_head.weight": head}, "lm_head.weight", directory, (vocab, hidden)
        ).T

    def attention_weights(prefix: str, ours: str, cross: bool) -> None:
        q, k, v = (take(f"{prefix}.{n}.weight", (inner, hidden)) for n in "qkv")
        if cross:
            weights[f"{ours}/q_proj/kernel"] = q.T * scale
            weights[f"{ours}/kv_proj/kernel"] = np.concatenate([k.T, v.T], axis=1)
        else:
            weights[f"{ours}/qkv_proj/kernel"] = fuse_qkv(q * scale, k, v)
        weights[f"{ours}/out_proj/kernel"] = take(f"{prefix}.o.weight", (hidden, inner)).T

    def ffn_weights(prefix: str, ours: str) -> None:
        if ffn_name == "mlp":
            weights[f"{ours}/up/kernel"] = take(f"{prefix}.wi.weight", (inter, hidden)).T
        else:
            gate = take(f"{prefix}.wi_0.weight", (inter, hidden))
            up = take(f"{prefix}.wi_1.weight", (inter, hidden))
            weights[f"{ours}/gate_up/kernel"] = np.concatenate([gate.T, up.T], axis=1)
        weights[f"{ours}/down/kernel"] = take(f"{prefix}.wo.weight", (hidden, inter)).T

    for stack, count in (("encoder", n_enc), ("decoder", n_dec)):
        weights[f"{b}/{stack}_positional/bias_table"] = take(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            (buckets, n_heads),
        )
        for i in range(count):
            p, t = f"{stack}.block.{i}.layer", f"{b}/{stack}_block_{i}"
            attention_weights(f"{p}.0.SelfAttention", f"{t}/attention", cross=False)
            weights[f"{t}/attention_norm/scale"] = take(f"{p}.0.layer_norm.weight", (hidden,))
            ffn_layer = 1
            if stack == "decoder":
                attention_weights(f"{p}.1.EncDecAttention", f"{t}/cross_attention", cross=True)
                weights[f"{t}/cross_norm/scale"] = take(f"{p}.1.layer_norm.weight", (hidden,))
                ffn_layer = 2
            ffn_weights(f"{p}.{ffn_layer}.DenseReluDense", f"{t}/ffn")
            weights[f"{t}/ffn_norm/scale"] = take(f"{p}.{ffn_layer}.layer_norm.weight", (hidden,))
        final = take(f"{stack}.final_layer_norm.weight", (hidden,))
        if stack == "decoder" and rescale:
            final = final * np.float32(hidden**-0.5)  # T5 v1.0 rescales before its head
        weights[f"{b}/{stack}_norm/scale"] = final
    take.finish("T5")
    return ImportedModel(config, weights, tokenizer, None)


FAMILIES: dict[str, Callable[..., ImportedModel]] = {
    "llama": _llama,
    "mistral": _llama,
    "gpt2": _gpt2,
    "bert": _bert,
    "t5": _t5,
}


def _registry_name(tokenizer: Any) -> str:
    from tfllm import registry

    for entry in registry.list_entries("tokenizer"):
        if type(tokenizer) is entry.obj:
            return entry.name
    return type(tokenizer).__name__


def _chat_template(directory: str) -> str | None:
    path = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
        if isinstance(template, str):
            return template
    jinja = os.path.join(directory, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    return None


def load_hf_tokenizer(directory: str, family: str):
    """The tokenizer in an HF model directory, as a tfllm tokenizer."""
    from tfllm.components.tokenizers.bpe import BPETokenizer
    from tfllm.components.tokenizers.sentencepiece import SentencePieceTokenizer
    from tfllm.components.tokenizers.wordpiece import WordPieceTokenizer

    has = lambda name: os.path.exists(os.path.join(directory, name))  # noqa: E731
    settings: dict[str, Any] = {}
    if has("tokenizer_config.json"):
        with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
            settings = json.load(f)
    add_bos = bool(settings.get("add_bos_token", family in ("llama", "mistral")))
    specials = {}
    for role in ("bos", "eos", "unk", "pad"):
        token = settings.get(f"{role}_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token:
            specials[role] = token
    added = [
        entry["content"]
        for entry in (settings.get("added_tokens_decoder") or {}).values()
        if isinstance(entry, dict) and entry.get("special") and "content" in entry
    ]
    try:
        if family == "bert":
            return WordPieceTokenizer(path=directory)
        if has("vocab.json") and has("merges.txt"):
            return BPETokenizer(
                path=directory,
                add_bos=add_bos,
                special_tokens=specials or None,
                added_tokens=added or None,
            )
        if has("tokenizer.json"):
            return BPETokenizer(
                path=os.path.join(directory, "tokenizer.json"),
                add_bos=add_bos,
                special_tokens=specials or None,
                added_tokens=added or None,
            )
        for name in ("tokenizer.model", "spiece.model"):  # spiece.model: T5's
            if has(name):
                return SentencePieceTokenizer(path=os.path.join(directory, name))
    except (ValueError, KeyError) as e:
        raise PretrainedError(f"{directory}: tokenizer: {e}") from None
    raise PretrainedError(
        f"{directory}: no tokenizer files (vocab.json + merges.txt, a BPE tokenizer.json, "
        "or tokenizer.model; vocab.txt or tokenizer.json for BERT)"
    )


def import_hf(directory: str) -> ImportedModel:
    """Read an HF model directory (`config.json` + safetensors + tokenizer files).

    Raises:
        PretrainedError: unsupported `model_type`, a missing or mis-shaped tensor (named), or
            unreadable files.
    """
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise PretrainedError(f"{directory}: no {CONFIG_FILE}") from None
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path}: not valid JSON: {e}") from None
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise PretrainedError(
            f"{path}: model_type {family!r} is not supported (supported: {', '.join(FAMILIES)})"
        )
    tensors = read_safetensors(directory)
    tokenizer = load_hf_tokenizer(directory, family)
    try:
        imported = FAMILIES[family](cfg, tensors, directory, tokenizer)
    except KeyError as e:
        raise PretrainedError(f"{path}: config key {e} is missing") from None
    imported.source = {"path": os.path.abspath(directory), "format": "hf", "architecture": family}
    if family == "bert":
        _sentence_transformers_settings(directory, imported.config)
    return imported


def _sentence_transformers_settings(directory: str, config: dict[str, Any]) -> None:
    """Pooling and maximum length from a sentence-transformers export, when present."""
    pooling_path = os.path.join(directory, "1_Pooling", "config.json")
    if os.path.exists(pooling_path):
        with open(pooling_path, encoding="utf-8") as f:
            pooling = json.load(f)
        if pooling.get("pooling_mode_cls_token"):
            config["task"]["pooling"] = "cls"
        elif pooling.get("pooling_mode_lasttoken"):
            config["task"]["pooling"] = "last_token"
        elif not pooling.get("pooling_mode_mean_tokens", True):
            raise PretrainedError(
                f"{pooling_path}: only mean, cls or last-token pooling is supported"
            )
    settings_path = os.path.join(directory, "sentence_bert_config.json")
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            settings = json.load(f)
        if settings.get("max_seq_length"):
            config["embedding"] = {"max_length": int(settings["max_seq_length"])}
    modules_path = os.path.join(directory, "modules.json")
    if os.path.exists(modules_path):
        with open(modules_path, encoding="utf-8") as f:
            modules = [m.get("type", "") for m in json.load(f)]
        config["task"]["normalize"] = any(m.endswith("Normalize") for m in modules)
