"""Hydra override mistakes as tfllm errors: a mistyped key gets a did-you-mean.

Hydra refuses `trainer.max_step=10` with "Key 'max_step' is not in struct ... use
+trainer.max_step", advice that would add a key nothing reads. `explain` turns such a failure
into one line naming the closest existing keys.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_FAILED = re.compile(r"Could not override '([^']+)'")
_MISSING = re.compile(r"Key '([^']+)' is not in struct")


def failed_key(message: str) -> str | None:
    """The override key a Hydra composition error names, or None.

    >>> failed_key("Could not override 'trainer.max_step'.\\nTo append ...")
    'trainer.max_step'
    """
    found = _FAILED.search(message)
    return found.group(1) if found else None


def suggest_key(key: str, config: Mapping[str, Any]) -> str:
    """`key` checked against `config`: where the path stops existing, the closest keys there.

    >>> suggest_key("trainer.max_step", {"trainer": {"max_steps": 1, "log_every": 5}})
    "trainer.max_step: no such key. Did you mean 'trainer.max_steps'?"
    >>> suggest_key("traner.max_steps", {"trainer": {"max_steps": 1}})
    "traner: no such key. Did you mean 'trainer'?"
    """
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping):
            break
        if part not in node:
            prefix = ".".join(parts[:depth])
            here = f"{prefix}.{part}" if prefix else part
            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.6)
            named = [f"'{prefix}.{c}'" if prefix else f"'{c}'" for c in close]
            hint = f" Did you mean {' or '.join(named)}?" if named else ""
            if not named and node:
                keys = ", ".join(sorted(str(k) for k in node))
                hint = f" Keys there: {keys}."
            return f"{here}: no such key.{hint}"
        node = node[part]
    return f"{key}: cannot be set this way"


def explain(
    message: str, overrides: Sequence[str], compose: Callable[[list[str]], Mapping[str, Any]]
) -> str | None:
    """A did-you-mean line for a Hydra composition failure on a mistyped key (None when the
    failure is of another kind). `compose(overrides)` composes the config the user meant,
    without the failing override."""
    key = failed_key(message)
    if key is None or not _MISSING.search(message):
        return None
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        config = compose(rest)
    except Exception:  # noqa: BLE001 (another override is wrong too: Hydra's message stands)
        return None
    line = suggest_key(key, config)
    return f"{line} (+{key}=... would add it as a new key.)"
