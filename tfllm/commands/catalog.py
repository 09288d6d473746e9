"""What `tfllm list` shows, kept in the cache folder so that the listing does not load
TensorFlow every time: the registry's entries are read once per installed state (tfllm's
version and sources, the plugins' distributions, versions and sources) and reused until that
state changes. The catalog also keeps each component's constructor arguments, so `tfllm train`
checks a config's component names and arguments (`CatalogComponents`) before TensorFlow
loads."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from importlib import metadata, util
from typing import Any

from tfllm import plugins, registry
from tfllm.cache import cache_dir
from tfllm.registry import ConfigError
from tfllm.version import __version__

CATALOG_FILE = "catalog.json"
CATALOG_FORMAT = 2  # 2: constructor arguments ("signatures") beside the entries


def _newest_source(directory: str) -> float:
    """The newest modification time of a `.py` file under `directory`."""
    newest = 0.0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def installed_state() -> list[Any]:
    """What the listing depends on: tfllm's version and sources, Python's version, and for each
    plugin entry point its distribution, version and sources (unless autoload is off)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    state: list[Any] = [
        CATALOG_FORMAT,
        __version__,
        sys.version_info[:2],
        _newest_source(here),
    ]
    if plugins.autoload_disabled():
        return [*state, "plugins off"]
    for ep in sorted(metadata.entry_points(group=plugins.GROUP), key=lambda e: e.value):
        top = ep.value.split(":")[0].split(".")[0]
        spec = util.find_spec(top)
        origin = spec.origin if spec is not None and spec.origin else ""
        source = _newest_source(os.path.dirname(origin)) if origin else 0.0
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        state.append([ep.name, ep.value, dist, version, source])
    return state


def cached_catalog() -> dict[str, Any] | None:
    """The cached catalog if it was read for the installed state, else None (nothing loaded)."""
    path = cache_dir() / CATALOG_FILE
    state = json.loads(json.dumps(installed_state()))  # tuples as JSON lists, to compare
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("state") == state else None


def _signature(entry: registry.Entry) -> dict[str, bool] | None:
    try:
        return registry.required_by_parameter(entry.obj)
    except (TypeError, ValueError):  # no signature to read: the registry checks it later
        return None


def catalog_from_registry() -> dict[str, Any]:
    """The catalog of what the registry holds now (it loads the built-ins and plugins)."""
    state = json.loads(json.dumps(installed_state()))
    listed = registry.list_entries()
    entries = [[e.kind, e.name, e.package, e.summary] for e in listed]
    return {
        "state": state,
        "kinds": sorted({e.kind for e in listed} | set(registry.KINDS)),
        "entries": entries,
        "signatures": {f"{e.kind}/{e.name}": _signature(e) for e in listed},
        "plugins": [dataclasses.asdict(status) for status in plugins.autoload()],
    }


def read_catalog() -> dict[str, Any]:
    """`{"kinds": [...], "entries": [[kind, name, package, summary], ...], "signatures":
    {"kind/name": {argument: required} or None}, "plugins": [status fields, ...]}` for the
    installed state: from the cache when it matches, else from the registry (then cached,
    unless a plugin failed to load)."""
    cached = cached_catalog()
    if cached is not None:
        return cached
    catalog = catalog_from_registry()
    if not plugins.failed():  # a failed plugin may load next time: do not keep its absence
        path = cache_dir() / CATALOG_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps(catalog), encoding="utf-8")
            os.replace(partial, path)
        except OSError:
            pass  # a read-only cache folder: list from the registry every time
    return catalog


class CatalogComponents:
    """Checks component names and constructor arguments against a catalog (`read_catalog`),
    without loading the components: the same errors as the registry's check
    (`tfllm.training.validation.RegistryComponents`), which the run makes again once loaded.

    >>> catalog = {"entries": [["norm", "rmsnorm", "tfllm", ""]],
    ...            "signatures": {"norm/rmsnorm": {"epsilon": False}}}
    >>> components = CatalogComponents(catalog)
    >>> try:
    ...     components.check_spec("norm", {"name": "rmsnorm", "scale": 2}, {}, "norm")
    ... except ConfigError as e:
    ...     print(e)
    norm.scale: norm 'rmsnorm' takes no argument 'scale'. Valid arguments: epsilon.
    """

    def __init__(self, catalog: dict[str, Any]) -> None:
        self.names: dict[str, list[str]] = {}
        for kind, name, _package, _summary in catalog["entries"]:
            self.names.setdefault(kind, []).append(name)
        self.signatures: dict[str, dict[str, bool] | None] = catalog.get("signatures") or {}

    def check_name(self, kind: str, name: str, key: str) -> None:
        if name not in self.names.get(kind, []):
            error = registry.unknown_name(kind, name, self.names.get(kind, []))
            raise ConfigError(f"{key}.name: {error}")

    def check_spec(
        self, kind: str, spec: dict[str, Any], context: dict[str, Any], key: str
    ) -> None:
        name = registry.spec_name(kind, spec, key)
        self.check_name(kind, name, key)
        accepted = self.signatures.get(f"{kind}/{name}")
        if accepted is not None:
            registry.check_args(kind, name, accepted, spec, context, key)
