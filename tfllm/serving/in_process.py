"""An export's signatures called in this process, with the client's generation methods: what
`tfllm generate ckpt=EXPORT`, `tfllm chat ckpt=EXPORT` and `tfllm.load(EXPORT)` run, so an
export answers on a laptop as it answers behind a server."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from tfllm.serving.client import GenerationCalls
from tfllm.serving.predictor import first_line

log = logging.getLogger(__name__)


def export_version(path: str) -> str | None:
    """The SavedModel folder `path` names: itself, or the newest numbered version inside it;
    None when `path` is no export. Reads only the file system.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> for version in ("1", "2", "10"):
    ...     os.makedirs(os.path.join(root, version))
    ...     open(os.path.join(root, version, "saved_model.pb"), "wb").close()
    >>> os.path.basename(export_version(root))  # the newest by number, not by name
    '10'
    >>> export_version(tempfile.mkdtemp()) is None
    True
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [d for d in os.listdir(path) if d.isdigit()]
    versions = [d for d in versions if os.path.exists(os.path.join(path, d, "saved_model.pb"))]
    return os.path.join(path, max(versions, key=int)) if versions else None


class ExportLoadError(ValueError):
    """The folder holds no SavedModel that loads (a damaged or partial copy)."""


class InProcessExport(GenerationCalls):
    """The SavedModel at `path` (a version folder), loaded here with TensorFlow and
    tensorflow-text only, as a model server loads it: `predict(inputs, signature)`,
    `signatures()`, and `GenerationCalls`' `complete`, `stream`, `generate`, `score` and
    `count_tokens`, as `tfllm.serving.Client` has them.

    An export's own check of a request (a `max_new_tokens` over its limit, an empty prompt)
    raises `ValueError` with the message a served request gets as INVALID_ARGUMENT; a
    signature the export lacks raises `TypeError` naming those it has.
    """

    def __init__(self, path: str, in_background: bool = False):
        """Load the export at `path`; with `in_background`, on a thread (TensorFlow's import
        included), so that this returns at once and the first call waits for the load: a chat
        at a terminal prompts its user meanwhile.

        Raises:
            ExportLoadError: the export does not load (from the first call, in the background).
        """
        self.path = path
        self.warmed = 0
        self._state: tuple[Any, dict[str, Any]] | None = None
        self._failure: BaseException | None = None
        self._done = threading.Event()
        if not in_background:
            self._state = self._load()
            self._done.set()
            return

        def load() -> None:
            try:
                self._state = self._load()
            except BaseException as e:  # raised again by the first call that needs the export
                self._failure = e
            finally:
                self._done.set()

        threading.Thread(target=load, name="tfllm-load", daemon=True).start()

    def _load(self) -> tuple[Any, dict[str, Any]]:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the exports' text ops)

        try:
            loaded = tf.saved_model.load(self.path)  # kept: its functions read its variables
        except Exception as e:  # TensorFlow's own: a parse error, a missing variables file
            message = first_line(getattr(e, "message", None) or str(e))
            raise ExportLoadError(f"{self.path}: the export does not load: {message}") from None
        return loaded, dict(loaded.signatures)

    def _ready(self) -> tuple[Any, dict[str, Any]]:
        """`(the loaded SavedModel, its signatures)`, once loaded."""
        self._done.wait()
        if self._failure is not None:
            raise self._failure
        assert self._state is not None
        return self._state

    @property
    def _loaded(self) -> Any:
        return self._ready()[0]

    @property
    def _functions(self) -> dict[str, Any]:
        return self._ready()[1]

    def warm(
        self,
        signatures: Collection[str] | Callable[[set[str]], Collection[str]],
        threads: int = 2,
    ) -> threading.Thread:
        """Replay the export's warmup records of `signatures` on a background thread (with
        `threads` at once, as `tfllm serve` replays them all before serving), so that the
        graphs a conversation calls are initialized while its user types: the first call of
        each otherwise spends seconds optimizing it. `signatures` may be a function of the
        export's signature names (an export loading in the background is waited for). A call
        that comes sooner waits for the initialization under way rather than doing it twice.
        A failing record, or load, is left for the call itself to report. Returns the started
        thread."""
        from tfllm.serving.servables import replay_warmup

        def replay() -> None:
            try:
                chosen = signatures(self.signature_names()) if callable(signatures) else signatures
                self.warmed = replay_warmup(self._loaded, self.path, threads, chosen)
            except BaseException as e:  # the call itself reports what fails
                log.debug("warming %s failed: %s", self.path, e)

        self.warmed = 0
        thread = threading.Thread(target=replay, name="tfllm-warmup", daemon=True)
        thread.start()
        return thread

    def signatures(self) -> dict[str, dict[str, list[str]]]:
        return {
            name: {
                "inputs": sorted(fn.structured_input_signature[1]),
                "outputs": sorted(fn.structured_outputs),
            }
            for name, fn in self._functions.items()
        }

    def predict(
        self, inputs: dict[str, Any], signature: str = "serving_default"
    ) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self._functions.get(signature)
        if fn is None:
            raise TypeError(
                f"this export has no '{signature}' signature; it has {sorted(self._functions)}"
            )
        specs = fn.structured_input_signature[1]
        try:
            out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as e:  # the export's own checks
            raise ValueError(first_line(e.message)) from None
        return {k: v.numpy() for k, v in out.items()}
