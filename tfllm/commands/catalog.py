"""What `tfllm list` shows, kept in the cache folder so that the listing does not load
TensorFlow every time: the registry's entries are read once per installed state (tfllm's
version and sources, the plugins' distributions, versions and sources) and reused until that
state changes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from importlib import metadata, util
from typing import Any

from tfllm import plugins
from tfllm.cache import cache_dir
from tfllm.version import __version__

CATALOG_FILE = "catalog.json"


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
    state: list[Any] = [__version__, sys.version_info[:2], _newest_source(here)]
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


def read_catalog() -> dict[str, Any]:
    """`{"kinds": [...], "entries": [[kind, name, package, summary], ...], "plugins": [status
    fields, ...]}` for the installed state: from the cache when it matches, else from the
    registry (then cached, unless a plugin failed to load)."""
    path = cache_dir() / CATALOG_FILE
    state = json.loads(json.dumps(installed_state()))  # tuples as JSON lists, to compare
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("state") == state:
            return cached
    except (OSError, ValueError):
        pass
    from tfllm import registry

    entries = [[e.kind, e.name, e.package, e.summary] for e in registry.list_entries()]
    kinds = sorted({e[0] for e in entries} | set(registry.KINDS))
    found = [dataclasses.asdict(status) for status in plugins.autoload()]
    catalog = {"state": state, "kinds": kinds, "entries": entries, "plugins": found}
    if not plugins.failed():  # a failed plugin may load next time: do not keep its absence
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps(catalog), encoding="utf-8")
            os.replace(partial, path)
        except OSError:
            pass  # a read-only cache folder: list from the registry every time
    return catalog
