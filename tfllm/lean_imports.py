"""Keras's optional imports that no `tfllm` command uses, skipped in a command's process.

Importing TensorFlow imports Keras, and Keras imports `matplotlib.pyplot` (for
`keras.visualization`), IPython (for `KerasFileEditor`'s notebook display) and pandas (to slice
DataFrames given to `fit`) whenever they are installed: about 1.3 s of every command's start on
a 2-core machine, a quarter of TensorFlow's import. Keras guards each with
`try: ... except ImportError`, so a command's process answers those imports with ImportError
when Keras asks, and only then: tfllm's own plots and the `datasets` library import them as
usual.

Example:

>>> finder = KerasOptionalImports()
>>> finder.find_spec("numpy") is None  # anything else is left to the other finders
True
"""

from __future__ import annotations

import importlib.abc
import sys
from types import FrameType

SKIPPED = frozenset({"matplotlib", "IPython", "pandas"})
_IMPORT_MACHINERY = ("importlib", "_frozen_importlib")


def _importer(frame: FrameType | None) -> str:
    """The module whose `import` statement is running: the first frame outside the import
    machinery."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(_IMPORT_MACHINERY):
            return name
        frame = frame.f_back
    return ""


class KerasOptionalImports(importlib.abc.MetaPathFinder):
    """Refuses `SKIPPED` packages to modules under `keras.src`; finds nothing itself."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (the ABC's)
        if fullname.partition(".")[0] in SKIPPED and _importer(sys._getframe(1)).startswith(
            "keras.src."
        ):
            raise ImportError(f"{fullname} is not imported for Keras in a tfllm command")
        return None


def install() -> None:
    """Put the finder first on `sys.meta_path` (once)."""
    if not any(isinstance(f, KerasOptionalImports) for f in sys.meta_path):
        sys.meta_path.insert(0, KerasOptionalImports())
