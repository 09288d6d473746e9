"""Composing configs: where the shipped `conf/` lives, plugin search paths, plain dicts.

Hydra composes the YAML groups under `conf/`; Hydra's struct mode already rejects unknown keys
at composition time. The checks that a composed training config can be built live with the
training code (`tfllm.training.validation`), which may import what it validates; run-directory
config I/O lives with the run-directory layout (`tfllm.runs`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """Where the shipped `conf/` lives: `tfllm.conf` in a wheel, `conf/` in a source checkout.

    (Editable installs map only the `tfllm` package, not the `tfllm.conf` alias.)

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("tfllm.conf")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]).resolve())
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "config.yaml").exists():
        return str(checkout)
    raise FileNotFoundError("tfllm's config files are missing: reinstall tfllm")


def with_plugin_search_path(overrides: Sequence[str]) -> list[str]:
    """Hydra overrides plus `hydra.searchpath=[...]` naming every installed plugin's `conf/`
    (merged after any search path the user passed), so plugin config groups compose."""
    from tfllm import plugins

    extra = plugins.config_search_path()
    if not extra:
        return list(overrides)
    user: list[str] = []
    rest = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            user += [p.strip() for p in value.strip().strip("[]").split(",") if p.strip()]
        else:
            rest.append(override)
    paths = user + [p for p in extra if p not in user]
    return [*rest, f"hydra.searchpath=[{','.join(paths)}]"]


def compose(config_name: str = "config", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose a shipped config, plugin config groups included, as a plain dict (the Python
    equivalent of the command line: `compose("config", ["attention=gqa"])`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=with_plugin_search_path(overrides))
    return to_plain(cfg)


# The key of a plain config that lists the values read from the environment (`${oc.env:…}`),
# by dotted path with their interpolation text: saved configs keep the text, never the value.
ENVIRONMENT_KEY = "_from_environment_"
_ENV_INTERPOLATION = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:")


def environment_values(cfg: Any) -> dict[str, str]:
    """The dotted paths of `cfg` whose values come from the environment, directly or through
    another key's interpolation, each with its interpolation text (nothing is resolved).

    >>> environment_values(OmegaConf.create({"a": "${oc.env:TOKEN}", "b": "x${a}", "c": 1}))
    {'a': '${oc.env:TOKEN}', 'b': 'x${a}'}
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    strings: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")
        elif isinstance(node, str) and "${" in node:
            strings[path] = node

    walk(raw, "")
    found = {p: s for p, s in strings.items() if _ENV_INTERPOLATION.search(s)}
    changed = True
    while changed:  # values that interpolate a value from the environment carry it too
        changed = False
        for path, text in strings.items():
            if path not in found and any("${" + p + "}" in text for p in found):
                found[path] = text
                changed = True
    return dict(sorted(found.items()))


def to_plain(cfg: Any) -> Any:
    """Resolve interpolations and convert OmegaConf containers to plain Python. Values read
    from the environment are listed under `ENVIRONMENT_KEY`, for `tfllm.runs.save_run_config`
    to keep out of saved files."""
    if isinstance(cfg, (DictConfig,)) or OmegaConf.is_config(cfg):
        plain = OmegaConf.to_container(cfg, resolve=True)
        if isinstance(plain, dict):
            secrets = environment_values(cfg)
            if secrets:
                plain[ENVIRONMENT_KEY] = secrets
        return plain
    return cfg
