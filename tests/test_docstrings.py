"""Every docstring example in tfllm (and the example plugin) runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import tfllm

PACKAGES = {"tfllm": tfllm.__path__}
try:
    import tfllm_plugin_example

    PACKAGES["tfllm_plugin_example"] = tfllm_plugin_example.__path__
except ImportError:  # the plugin is installed by the README's test command
    pass

MODULES = sorted(
    m.name
    for prefix, path in PACKAGES.items()
    for m in pkgutil.walk_packages(path, prefix + ".")
    if ".conf" not in m.name
)


def test_the_walk_finds_the_component_modules():
    assert {"tfllm.components.attention.mha", "tfllm.tasks.base", "tfllm.registry"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
