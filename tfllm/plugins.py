"""Entry-point discovery of third-party plugin packages (group `tfllm.plugins`).

A plugin distribution declares, in its `pyproject.toml`::

    [project.entry-points."tfllm.plugins"]
    my_plugin = "my_plugin"

Importing the named module runs its `@register` decorators. The module declares the plugin API
version it targets, `TFLLM_API_VERSION = 1`; a plugin targeting a version this tfllm does not
support is refused with a message that names both. A `conf/` folder inside the plugin's top-level
package joins Hydra's search path, so its YAML config groups (`conf/attention/linear.yaml`) are
usable as `tfllm train attention=linear` right after `pip install`.

Loading is lazy (on the first registry look-up) and happens once. `TFLLM_DISABLE_PLUGIN_AUTOLOAD=1`
turns it off, configs included. A plugin that fails to import, clashes with a registered name or
is refused becomes a warning naming its distribution; whatever it had registered is rolled back,
and everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tfllm import registry
from tfllm.version import API_VERSION, __version__

GROUP = "tfllm.plugins"
DISABLE_ENV = "TFLLM_DISABLE_PLUGIN_AUTOLOAD"
API_ATTRIBUTE = "TFLLM_API_VERSION"
# Plugin API versions this tfllm loads. A breaking change to a component contract bumps
# `tfllm.API_VERSION`; older versions stay here for as long as they are still honoured.
SUPPORTED_API_VERSIONS: tuple[int, ...] = (API_VERSION,)


class PluginAPIError(ImportError):
    """A plugin targets a plugin API version this tfllm does not support."""


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
    api_version: int | None = None
    conf_dir: str | None = None


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


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    if ep.dist is not None:
        return ep.dist.name, ep.dist.version
    return ep.value.split(":")[0].split(".")[0], "?"


def check_api_version(module: object, distribution: str) -> int:
    """Return the plugin API version `module` declares; raise `PluginAPIError` if it declares
    none or one this tfllm does not support."""
    declared = getattr(module, API_ATTRIBUTE, None)
    supported = ", ".join(str(v) for v in SUPPORTED_API_VERSIONS)
    if declared is None:
        raise PluginAPIError(
            f"{getattr(module, '__name__', module)} does not declare {API_ATTRIBUTE}; a plugin "
            f"states the tfllm plugin API version it targets (this tfllm {__version__} "
            f"supports {supported})"
        )
    if not isinstance(declared, int) or declared not in SUPPORTED_API_VERSIONS:
        raise PluginAPIError(
            f"'{distribution}' targets tfllm plugin API version {declared!r}, but tfllm "
            f"{__version__} supports version {supported}; install a release of "
            f"'{distribution}' built for API {supported}, or a tfllm that supports {declared!r}"
        )
    return declared


def load_entry_point(ep: metadata.EntryPoint) -> PluginStatus:
    dist, version = _distribution(ep)
    before = {(e.kind, e.name) for e in registry._all_entries()}
    keras_before = _keras_registrations()
    status = PluginStatus(ep.name, dist, version, ep.value, loaded=False, conf_dir=conf_dir(ep))
    try:
        with registry.transaction(), registry.registering_as(dist):
            module = importlib.import_module(ep.value.split(":")[0])
            status.api_version = check_api_version(module, dist)
            if ":" in ep.value:
                hook = getattr(module, ep.value.split(":")[1])
                if callable(hook):
                    hook()
        status.loaded = True
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - any plugin failure (sys.exit too) is contained
        _restore_keras_registrations(keras_before)
        status.error = f"{type(e).__name__}: {e}"
        refused = "was refused" if isinstance(e, PluginAPIError) else "failed to load"
        warnings.warn(
            f"tfllm plugin '{ep.name}' from distribution '{dist}' {version} {refused} and "
            f"was skipped ({status.error}). Set {DISABLE_ENV}=1 to skip plugin loading.",
            RuntimeWarning,
            stacklevel=2,
        )
    after = {(e.kind, e.name) for e in registry._all_entries()}
    status.components = sorted(f"{k}/{n}" for k, n in after - before)
    return status


def _keras_registry() -> Any:
    # Keras's global custom-object tables, if Keras is imported (a plugin may import it).
    return sys.modules.get("keras.src.saving.object_registration")


def _keras_registrations() -> tuple[dict, dict] | None:
    tables = _keras_registry()
    if tables is None:
        return None
    return dict(tables.GLOBAL_CUSTOM_OBJECTS), dict(tables.GLOBAL_CUSTOM_NAMES)


def _restore_keras_registrations(before: tuple[dict, dict] | None) -> None:
    """Undo what a failed plugin registered with `keras.saving.register_keras_serializable`."""
    tables = _keras_registry()
    if tables is None:
        return
    if before is None:
        # Keras was first imported by the plugin: drop what is not Keras's or tfllm's own.
        def foreign(obj: Any) -> bool:
            root = str(getattr(obj, "__module__", "") or "").split(".")[0]
            return root not in ("keras", "tfllm")

        for name, obj in list(tables.GLOBAL_CUSTOM_OBJECTS.items()):
            if foreign(obj):
                del tables.GLOBAL_CUSTOM_OBJECTS[name]
        for obj in list(tables.GLOBAL_CUSTOM_NAMES):
            if foreign(obj):
                del tables.GLOBAL_CUSTOM_NAMES[obj]
        return
    for table, saved in zip(
        (tables.GLOBAL_CUSTOM_OBJECTS, tables.GLOBAL_CUSTOM_NAMES), before, strict=True
    ):
        table.clear()
        table.update(saved)


def statuses() -> list[PluginStatus]:
    """Statuses of the plugins loaded so far (after `autoload`)."""
    return list(_status)


def failed() -> list[PluginStatus]:
    """Plugins that were discovered but not loaded (import error, name clash, refused API)."""
    return [s for s in _status if not s.loaded]


def conf_dir(ep: metadata.EntryPoint) -> str | None:
    """The plugin's config folder, `<top-level package>/conf`, found without importing it."""
    top = ep.value.split(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "conf"
        if candidate.is_dir():
            return str(candidate.resolve())
    return None


def config_search_path() -> list[str]:
    """Hydra search-path entries (`file://...`) for every installed plugin's `conf/`, in
    entry-point order; empty when plugin autoload is disabled. Nothing is imported."""
    if autoload_disabled():
        return []
    paths = []
    for ep in _entry_points():
        found = conf_dir(ep)
        if found and f"file://{found}" not in paths:
            paths.append(f"file://{found}")
    return paths


def owner_of(path: str) -> str | None:
    """The distribution whose plugin `conf/` holds the file at `path`, or None. Nothing is
    imported."""
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError):
        return None
    for ep in _entry_points():
        found = conf_dir(ep)
        if found and resolved.is_relative_to(found):
            return _distribution(ep)[0]
    return None


def shadowed_configs(plugin_conf: str, core_conf: str) -> list[str]:
    """Config files a plugin ships that Hydra never picks because tfllm's own `conf/` (first in
    the search path) has the same group and name."""
    root = Path(plugin_conf)
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.yaml")
        if (Path(core_conf) / path.relative_to(root)).exists()
    )
