"""The saved form of a tokenizer (`tokenizer.json` beside its assets), read without building
it: what a client of a served model needs from an export's `assets.extra/tokenizer/`."""

from __future__ import annotations

import json
import os

from tfllm.registry import ConfigError

CONFIG_FILE = "tokenizer.json"


def saved_special_tokens(directory: str) -> dict[str, str]:
    """The special tokens by role (`bos`, `eos`, ...) of the tokenizer saved in `directory`,
    read from its `tokenizer.json` without TensorFlow.

    >>> import json, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(f"{d}/tokenizer.json", "w").write(
    ...     json.dumps({"config": {"special_tokens": {"eos": "</s>"}}}))
    >>> saved_special_tokens(d)
    {'eos': '</s>'}
    """
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)["config"].get("special_tokens") or {}
        if not isinstance(found, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in found.items()
        ):
            raise ValueError("special_tokens is not a mapping of roles to tokens")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"tokenizer: {path} is unreadable: {type(e).__name__}: {e}") from None
    return dict(found)
