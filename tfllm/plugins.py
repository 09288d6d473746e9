"""Entry-point discovery of third-party plugin packages (group `tfllm.plugins`).

A plugin distribution declares, in its `pyproject.toml`::

    [project.entry-points."tfllm.plugins"]
    my_plugin = "my_plugin"

Importing the named module runs its `@register` decorators. Loading is lazy (on the first registry
look-up) and happens once. `TFLLM_DISABLE_PLUGIN_AUTOLOAD=1` turns it off. A plugin that fails to
import becomes a warning naming its distribution, and everything else keeps working.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata

from tfllm import registry

GROUP = "tfllm.plugins"
DISABLE_ENV = "TFLLM_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginStatus:
    """What happened when one entry point was loaded."""

    name: str
    distribution: str
    version: str
    module: str
    loaded: bool
    error: str | None = None
    components: list[str] = field(default_factory=list)


_status: list[PluginStatus] = []
_autoloaded = False


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=GROUP))


def autoload() -> list[PluginStatus]:
    """Load every installed plugin once (unless disabled); return their statuses."""
    global _autoloaded
    if _autoloaded or autoload_disabled():
        return list(_status)
    _autoloaded = True
    for ep in _entry_points():
        _status.append(load_entry_point(ep))
    return list(_status)


def load_entry_point(ep: metadata.EntryPoint) -> PluginStatus:
    dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0].split(".")[0]
    version = ep.dist.version if ep.dist is not None else "?"
    before = {(e.kind, e.name) for e in registry._all_entries()}
    status = PluginStatus(ep.name, dist, version, ep.value, loaded=False)
    try:
        with registry.registering_as(dist):
            module = importlib.import_module(ep.value.split(":")[0])
            if ":" in ep.value:
                hook = getattr(module, ep.value.split(":")[1])
                if callable(hook):
                    hook()
        status.loaded = True
    except Exception as e:  # noqa: BLE001 - any plugin failure must not break tfllm
        status.error = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"tfllm plugin '{ep.name}' from distribution '{dist}' {version} failed to load and "
            f"was skipped ({status.error}). Set {DISABLE_ENV}=1 to skip plugin loading.",
            RuntimeWarning,
            stacklevel=2,
        )
    after = {(e.kind, e.name) for e in registry._all_entries()}
    status.components = sorted(f"{k}/{n}" for k, n in after - before)
    return status


def statuses() -> list[PluginStatus]:
    """Statuses of the plugins loaded so far (after `autoload`)."""
    return list(_status)
