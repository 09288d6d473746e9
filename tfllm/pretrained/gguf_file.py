"""GGUF checkpoints (llama.cpp's format) with the Llama layout: SmolLM2, Llama, Mistral."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfllm.pretrained.imported import ImportedModel, PretrainedError, fuse_qkv, require
from tfllm.pretrained.llama import llama_config, llama_weight_names

# What `gguf.quants.dequantize` turns back into floats; anything else is refused by name.
SUPPORTED_TYPES = (
    "F32",
    "F16",
    "BF16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)
# llama.cpp pre-tokenizer names whose regex tfllm's byte-level BPE reproduces exactly.
PRE_TOKENIZERS = {"gpt2": False, "default": False, "smollm": True}


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary permutation of a q or k weight `(n_heads * head_dim, d_in)`.

    llama.cpp interleaves each head's two rotary halves (GPT-J layout); Hugging Face and tfllm
    rotate halves (GPT-NeoX layout).
    """
    d_out, d_in = w.shape
    head_dim = d_out // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, d_in).swapaxes(1, 2).reshape(d_out, d_in)


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (the inverse of `unpermute_rotary`), as its converter writes."""
    d_out, d_in = w.shape
    head_dim = d_out // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, d_in).swapaxes(1, 2).reshape(d_out, d_in)


class GGUFFile:
    """Metadata and dequantized tensors of one GGUF file, with errors that name the tensor."""

    def __init__(self, path: str):
        from gguf import GGUFReader

        self.path = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"source: no such file: {path}")
        try:
            self.reader = GGUFReader(path)
        except Exception as e:  # the reader raises ValueError, IndexError, struct errors...
            raise PretrainedError(
                f"{path}: not a readable GGUF file (corrupt or truncated?): {e}"
            ) from None
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key: str, default: Any = None) -> Any:
        f = self.reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception as e:
            raise PretrainedError(f"{self.path}: metadata {key} is unreadable: {e}") from None

    def need(self, key: str) -> Any:
        value = self.field(key)
        if value is None:
            raise PretrainedError(f"{self.path}: metadata {key} is missing")
        return value

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32, shaped like PyTorch's `(out, in)` weights."""
        from gguf import GGML_QUANT_SIZES
        from gguf.quants import dequantize

        t = self.tensors.get(name)
        if t is None:
            raise PretrainedError(f"{self.path}: tensor {name} is missing")
        qtype = t.tensor_type.name
        if qtype not in SUPPORTED_TYPES:
            raise PretrainedError(
                f"{self.path}: tensor {name} uses quantization type {qtype}, which tfllm cannot "
                f"dequantize (supported: {', '.join(SUPPORTED_TYPES)})"
            )
        block, type_size = GGML_QUANT_SIZES[t.tensor_type]
        elements = int(np.prod([int(d) for d in t.shape]))
        if t.data.nbytes != elements // block * type_size:
            raise PretrainedError(
                f"{self.path}: tensor {name} holds {t.data.nbytes} bytes, {qtype} of shape "
                f"{tuple(int(d) for d in t.shape)} needs {elements // block * type_size} "
                "(truncated file?)"
            )
        try:
            values = dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise PretrainedError(
                f"{self.path}: tensor {name} could not be dequantized: {e}"
            ) from None
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        return np.asarray(values, dtype=np.float32).reshape(shape)


def import_gguf(path: str) -> ImportedModel:
    """Read a Llama-layout GGUF file: config, dequantized weights, tokenizer, chat template.

    Raises:
        PretrainedError: the file is corrupt or truncated, a tensor is missing, mis-shaped or
            of an unsupported quantization type, or the architecture is not Llama.
    """
    from tfllm.components.tokenizers.bpe import BPETokenizer, read_gguf_bpe

    g = GGUFFile(path)
    arch = g.need("general.architecture")
    if arch != "llama":
        raise PretrainedError(
            f"{path}: general.architecture is {arch!r}; tfllm imports 'llama' GGUF files"
        )
    n_layers = int(g.need("llama.block_count"))
    hidden = int(g.need("llama.embedding_length"))
    n_heads = int(g.need("llama.attention.head_count"))
    n_kv = int(g.field("llama.attention.head_count_kv", n_heads))
    head_dim = int(g.field("llama.attention.key_length", hidden // n_heads))
    tied = "output.weight" not in g.tensors

    tok_model = g.field("tokenizer.ggml.model")
    pre = g.field("tokenizer.ggml.pre", "default")
    if tok_model != "gpt2":
        raise PretrainedError(
            f"{path}: tokenizer.ggml.model is {tok_model!r}; tfllm imports byte-level BPE "
            "('gpt2') GGUF vocabularies"
        )
    if pre not in PRE_TOKENIZERS:
        raise PretrainedError(
            f"{path}: pre-tokenizer {pre!r} is not supported (supported: "
            f"{', '.join(PRE_TOKENIZERS)})"
        )
    try:
        vocabulary, merges, specials = read_gguf_bpe(path, g.reader)  # the open reader
        added = specials.pop("added", None)
        tokenizer = BPETokenizer(
            vocabulary=vocabulary,
            merges=merges,
            special_tokens=specials or None,
            added_tokens=added,
            split_digits=PRE_TOKENIZERS[pre],
            add_bos=bool(g.field("tokenizer.ggml.add_bos_token", False)),
        )
    except ValueError as e:
        raise PretrainedError(str(e)) from None
    vocab = tokenizer.vocabulary_size
    scaling = g.field("llama.rope.scaling.factor") or 1.0
    scaling_type = g.field("llama.rope.scaling.type", "linear" if scaling != 1.0 else "none")
    if scaling_type not in ("none", "linear"):
        raise PretrainedError(f"{path}: rope scaling type {scaling_type!r} is not supported")

    config = llama_config(
        vocabulary_size=vocab,
        num_layers=n_layers,
        hidden_dim=hidden,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        intermediate_dim=int(g.need("llama.feed_forward_length")),
        max_sequence_length=int(g.need("llama.context_length")),
        rms_epsilon=float(g.need("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(g.field("llama.rope.freq_base", 10000.0)),
        rope_scaling=float(scaling),
        head_dim=head_dim,
        tie_embeddings=tied,
        tokenizer={
            "name": "bpe",
            "split_digits": PRE_TOKENIZERS[pre],
            "add_prefix_space": False,
        },
    )
    names = llama_weight_names(n_layers, tied)
    q_dim, kv_dim = n_heads * head_dim, n_kv * head_dim
    inter = config["model"]["intermediate_dim"]
    src = {name: g.tensor(name) for name in g.tensors}  # all, so leftovers are seen too

    def take(name, shape):
        value = require(src, name, path, shape)
        del src[name]
        return value

    weights = {
        names["embed"]: take("token_embd.weight", (vocab, hidden)),
        names["norm"]: take("output_norm.weight", (hidden,)),
    }
    if not tied:
        weights[names["lm_head"]] = take("output.weight", (vocab, hidden)).T
    for i in range(n_layers):
        blk = f"blk.{i}"
        q = unpermute_rotary(take(f"{blk}.attn_q.weight", (q_dim, hidden)), n_heads)
        k = unpermute_rotary(take(f"{blk}.attn_k.weight", (kv_dim, hidden)), n_kv)
        v = take(f"{blk}.attn_v.weight", (kv_dim, hidden))
        weights[names[f"{i}.qkv"]] = fuse_qkv(q, k, v)
        weights[names[f"{i}.o"]] = take(f"{blk}.attn_output.weight", (hidden, q_dim)).T
        gate = take(f"{blk}.ffn_gate.weight", (inter, hidden))
        up = take(f"{blk}.ffn_up.weight", (inter, hidden))
        weights[names[f"{i}.gate_up"]] = np.concatenate([gate.T, up.T], axis=1)
        weights[names[f"{i}.down"]] = take(f"{blk}.ffn_down.weight", (hidden, inter)).T
        weights[names[f"{i}.attn_norm"]] = take(f"{blk}.attn_norm.weight", (hidden,))
        weights[names[f"{i}.ffn_norm"]] = take(f"{blk}.ffn_norm.weight", (hidden,))
    src.pop("rope_freqs.weight", None)  # llama.cpp's precomputed frequencies: derived
    if src:
        raise PretrainedError(f"{path}: tensor {sorted(src)[0]} has no place in a Llama model")
    return ImportedModel(
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        chat_template=g.field("tokenizer.chat_template"),
        source={"path": os.path.abspath(path), "format": "gguf", "architecture": "llama"},
    )
