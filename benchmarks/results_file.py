"""Where the benchmark scripts here leave what they measured (imported by them, with this folder
last on `sys.path`): `results/NAME.md`, the table a script printed, beside `results/NAME.json`,
the numbers behind it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def save_results(
    name: str,
    text: str,
    payload: Any = None,
    *,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Print `text` and write it to `results/NAME.md`, ending in one newline; write `payload`,
    when there is one, to `results/NAME.json` (indented; `default` as `json.dump`'s)."""
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
    if payload is not None:
        with open(os.path.join(RESULTS, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, default=default)
