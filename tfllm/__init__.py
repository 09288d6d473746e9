"""tfllm: build, train, align, evaluate and serve transformer language models on Keras 3 and
TensorFlow.

Importing the package is cheap (no TensorFlow): it only tells the registry how to load the
built-in components and the installed plugins, which happens on the first registry look-up.
`tfllm.load`, `tfllm.train` and `tfllm.evaluate` are the Python API (docs/python.md).
See docs/architecture.md for the layers and what may import what.
"""

from tfllm import registry as _registry
from tfllm.version import API_VERSION, __version__

__all__ = ["API_VERSION", "__version__", "evaluate", "load", "train"]


def __getattr__(name: str):
    """`tfllm.load`, `tfllm.train` and `tfllm.evaluate` (the Python API, `tfllm.api`), imported
    on first use so that `import tfllm` stays cheap."""
    if name in ("load", "train", "evaluate"):
        from tfllm import api

        return getattr(api, name)
    raise AttributeError(f"module 'tfllm' has no attribute '{name}'")


def _load_components() -> None:
    import tfllm.builtins  # noqa: F401  (registers every built-in component)
    from tfllm import plugins

    plugins.autoload()


def _load_notes() -> str:
    from tfllm import plugins

    return "".join(
        f" Plugin '{p.distribution}' was not loaded ({p.error})." for p in plugins.failed()
    )


# Installed from above, so the registry (the bottom layer) imports nothing of tfllm's.
_registry.set_loader(_load_components, _load_notes)
