"""Matplotlib for the commands that draw (attention maps, scaling-law fits), or one clear error
naming the extra that installs it."""

from __future__ import annotations

from typing import Any


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message says which `pip install` adds it."""


def pyplot() -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise MissingExtraError(
            "drawing needs matplotlib, which the `eval` extra installs: pip install 'tfllm[eval]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
