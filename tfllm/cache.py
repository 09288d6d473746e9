"""Where tfllm keeps what it downloads or measures once per machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$TFLLM_CACHE`, else `$XDG_CACHE_HOME/tfllm`, else `~/.cache/tfllm`."""
    if os.environ.get("TFLLM_CACHE"):
        return Path(os.environ["TFLLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfllm"
