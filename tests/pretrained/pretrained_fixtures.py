"""Tiny pretrained checkpoints written in real formats (GGUF, HF safetensors) for the tests."""

from __future__ import annotations

import json
import pathlib

import numpy as np

LLAMA = dict(hidden=32, layers=2, heads=4, kv_heads=2, inter=64, context=64, theta=1e5, eps=1e-5)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_vocab() -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary: 256 bytes, three merges, then the chat specials."""
    from tfllm.components.tokenizers.bpe import bytes_to_unicode

    enc = bytes_to_unicode()
    tokens = [enc[b] for b in range(256)]
    merges = ["t h", "th e", "Ġ the"]
    tokens += ["th", "the", "Ġthe"] + SPECIALS
    return tokens, merges


def llama_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random Llama weights in Hugging Face names and `(out, in)` layout."""
    rng = np.random.default_rng(seed)
    c = LLAMA
    vocab = len(byte_vocab()[0])
    head_dim = c["hidden"] // c["heads"]
    w = lambda *shape: (rng.normal(size=shape) * 0.2).astype(np.float32)  # noqa: E731
    tensors = {
        "model.embed_tokens.weight": w(vocab, c["hidden"]),
        "model.norm.weight": 1 + w(c["hidden"]),
    }
    for i in range(c["layers"]):
        p = f"model.layers.{i}"
        tensors[f"{p}.self_attn.q_proj.weight"] = w(c["heads"] * head_dim, c["hidden"])
        tensors[f"{p}.self_attn.k_proj.weight"] = w(c["kv_heads"] * head_dim, c["hidden"])
        tensors[f"{p}.self_attn.v_proj.weight"] = w(c["kv_heads"] * head_dim, c["hidden"])
        tensors[f"{p}.self_attn.o_proj.weight"] = w(c["hidden"], c["heads"] * head_dim)
        tensors[f"{p}.mlp.gate_proj.weight"] = w(c["inter"], c["hidden"])
        tensors[f"{p}.mlp.up_proj.weight"] = w(c["inter"], c["hidden"])
        tensors[f"{p}.mlp.down_proj.weight"] = w(c["hidden"], c["inter"])
        tensors[f"{p}.input_layernorm.weight"] = 1 + w(c["hidden"])
        tensors[f"{p}.post_attention_layernorm.weight"] = 1 + w(c["hidden"])
    return tensors


# GGUF name and storage type of each HF tensor (per-layer names use {i}).
GGUF_NAMES = {
    "model.embed_tokens.weight": ("token_embd.weight", "Q8_0"),
    "model.norm.weight": ("output_norm.weight", "F32"),
    "self_attn.q_proj.weight": ("attn_q.weight", "Q4_0"),
    "self_attn.k_proj.weight": ("attn_k.weight", "Q4_1"),
    "self_attn.v_proj.weight": ("attn_v.weight", "F16"),
    "self_attn.o_proj.weight": ("attn_output.weight", "F32"),
    "mlp.gate_proj.weight": ("ffn_gate.weight", "Q8_0"),
    "mlp.up_proj.weight": ("ffn_up.weight", "F32"),
    "mlp.down_proj.weight": ("ffn_down.weight", "Q4_1"),
    "input_layernorm.weight": ("attn_norm.weight", "F32"),
    "post_attention_layernorm.weight": ("ffn_norm.weight", "F32"),
}


def _gguf_name(hf_name: str) -> tuple[str, str]:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    parts = hf_name.split(".")  # model.layers.{i}.rest
    name, qtype = GGUF_NAMES[".".join(parts[3:])]
    return f"blk.{parts[2]}.{name}", qtype


def quantized(values: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """`(stored bytes or floats, what they dequantize to)` for a GGML type."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    if qtype == "F32":
        return values, values
    if qtype == "F16":
        half = values.astype(np.float16)
        return half, half.astype(np.float32)
    t = GGMLQuantizationType[qtype]
    data = quantize(values, t)
    return data, dequantize(data, t).reshape(values.shape).astype(np.float32)


def write_llama_gguf(
    path: pathlib.Path, tensors: dict[str, np.ndarray], raw_override: dict | None = None
) -> dict[str, np.ndarray]:
    """Write a llama.cpp-style GGUF (q/k in rotary permutation, mixed quantization types).

    Returns the HF-layout tensors as the file will dequantize them.
    """
    import gguf

    from tfllm.pretrained.gguf_file import permute_rotary

    c = LLAMA
    tokens, merges = byte_vocab()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c["layers"])
    writer.add_context_length(c["context"])
    writer.add_embedding_length(c["hidden"])
    writer.add_feed_forward_length(c["inter"])
    writer.add_head_count(c["heads"])
    writer.add_head_count_kv(c["kv_heads"])
    writer.add_rope_freq_base(c["theta"])
    writer.add_layer_norm_rms_eps(c["eps"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    effective = {}
    for hf_name, value in tensors.items():
        name, qtype = _gguf_name(hf_name)
        stored = value
        if name.endswith("attn_q.weight"):
            stored = permute_rotary(value, c["heads"])
        elif name.endswith("attn_k.weight"):
            stored = permute_rotary(value, c["kv_heads"])
        if raw_override and name in raw_override:
            data, raw_type = raw_override[name]
            writer.add_tensor(name, data, raw_dtype=raw_type)
            effective[hf_name] = value
            continue
        data, dequantized = quantized(stored, qtype)
        if qtype in ("F32", "F16"):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[qtype])
        if name.endswith("attn_q.weight"):
            from tfllm.pretrained.gguf_file import unpermute_rotary

            dequantized = unpermute_rotary(dequantized, c["heads"])
        elif name.endswith("attn_k.weight"):
            from tfllm.pretrained.gguf_file import unpermute_rotary

            dequantized = unpermute_rotary(dequantized, c["kv_heads"])
        effective[hf_name] = dequantized
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return effective


def write_llama_hf(directory: pathlib.Path, tensors: dict[str, np.ndarray], **overrides) -> None:
    """An HF Llama directory: config.json, model.safetensors, vocab.json + merges.txt."""
    from safetensors.numpy import save_file

    c = LLAMA
    tokens, merges = byte_vocab()
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": len(tokens),
        "hidden_size": c["hidden"],
        "intermediate_size": c["inter"],
        "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"],
        "num_key_value_heads": c["kv_heads"],
        "max_position_embeddings": c["context"],
        "rms_norm_eps": c["eps"],
        "rope_theta": c["theta"],
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": tokens.index("<|im_start|>"),
        "eos_token_id": tokens.index("<|im_end|>"),
    }
    config.update(overrides)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(directory / "model.safetensors"),
    )
    (directory / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8"
    )
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": False,
                "chat_template": CHAT_TEMPLATE,
                "eos_token": "<|im_end|>",
                "bos_token": "<|im_start|>",
            }
        )
    )
