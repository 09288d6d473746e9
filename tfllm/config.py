"""Composing configs: where the shipped `conf/` lives, plugin search paths, plain dicts.

Hydra composes the YAML groups under `conf/`; Hydra's struct mode already rejects unknown keys
at composition time. The checks that a composed training config can be built live with the
training code (`tfllm.training.validation`), which may import what it validates; run-directory
config I/O lives with the run-directory layout (`tfllm.runs`).
"""

from __future__ import annotations

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


def to_plain(cfg: Any) -> Any:
    """Resolve interpolations and convert OmegaConf containers to plain Python."""
    if isinstance(cfg, (DictConfig,)) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
