"""The component registry: every tokenizer, layer, model, task and trainer part, keyed `kind/name`.

Hydra composes configs that *name* components; this module turns those names into objects.
Registration is loud: a duplicate name or an unknown one raises an error that lists what exists,
suggests the closest match and points at `tfllm list`.

Example:

    >>> from tfllm import registry
    >>> cls = registry.get("positional", "rope")
    >>> layer = registry.build("positional", {"name": "rope", "max_wavelength": 10000},
    ...                        context={"head_dim": 16})
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

KINDS: tuple[str, ...] = (
    "tokenizer",
    "positional",
    "attention",
    "ffn",
    "norm",
    "head",
    "model",
    "task",
    "dataset",
    "optimizer",
    "schedule",
    "callback",
    "safety_filter",
    "adapter",
    "reward",
)

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry name. Its message is the whole explanation."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(ValueError):
    """A configuration value that cannot be built; the message names the key."""


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Attributes:
        kind: The registry kind, e.g. `"attention"`.
        name: The name configs use, e.g. `"mha"`.
        obj: The class (or factory function) that builds it.
        package: The distribution it came from (`"tfllm"` for built-ins).
    """

    kind: str
    name: str
    obj: Any
    package: str

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.splitlines()[0] if doc else ""


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_current_package: list[str] = []
_loaded = False
# Installed by the package (`tfllm/__init__.py`): imports the built-ins and the plugins, and
# explains what failed to load. The registry itself imports nothing of tfllm's.
_loader: Callable[[], None] | None = None
_load_notes: Callable[[], str] | None = None


def _package_of(obj: Any) -> str:
    if _current_package:
        return _current_package[-1]
    module = getattr(obj, "__module__", "") or ""
    return module.split(".")[0] or "__main__"


@contextlib.contextmanager
def registering_as(package: str) -> Iterator[None]:
    """Attribute every registration inside the block to `package` (used by plugin loading)."""
    _current_package.append(package)
    try:
        yield
    finally:
        _current_package.pop()


def add_kind(kind: str) -> None:
    """Open a new registry kind (plugins may add kinds of their own)."""
    _ENTRIES.setdefault(kind, {})


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def register(kind: str, name: str, *, override: bool = False) -> Callable[[T], T]:
    """Class (or function) decorator that registers a component under `kind/name`.

    Keras classes are also registered as Keras-serializable under the package that defines them,
    so `.keras` files that contain them load again.

    Args:
        kind: One of `KINDS` (or a kind added with `add_kind`).
        name: The name configs use.
        override: Replace an existing entry instead of raising. Plugins that deliberately
            replace a built-in pass `override=True`.
    """
    if kind not in _ENTRIES:
        raise RegistryError(
            f"Unknown registry kind '{kind}'.{_suggest(kind, list(_ENTRIES))} "
            f"Kinds: {', '.join(sorted(_ENTRIES))}."
        )

    def decorator(obj: T) -> T:
        package = _package_of(obj)
        existing = _ENTRIES[kind].get(name)
        if existing is not None and existing.obj is not obj and not override:
            raise RegistryError(
                f"{kind} '{name}' is already registered by package '{existing.package}' "
                f"({existing.obj.__module__}.{existing.obj.__qualname__}); package '{package}' "
                f"tried to register it again. Pick another name or pass override=True. "
                f"Registered {kind} names: {', '.join(sorted(_ENTRIES[kind]))}."
            )
        if inspect.isclass(obj) and hasattr(obj, "get_config"):
            _register_with_keras(obj, package)
        _ENTRIES[kind][name] = Entry(kind=kind, name=name, obj=obj, package=package)
        return obj

    return decorator


def _register_with_keras(cls: type, package: str) -> None:
    import keras

    registered = f"{package}>{cls.__name__}"
    if keras.saving.get_registered_object(registered) is cls:
        return
    keras.saving.get_custom_objects().pop(registered, None)
    keras.saving.register_keras_serializable(package=package, name=cls.__name__)(cls)


def set_loader(load: Callable[[], None], notes: Callable[[], str] | None = None) -> None:
    """Say how to load every component (run once, on the first look-up) and how to explain
    what failed to load (appended to unknown-name errors)."""
    global _loader, _load_notes
    _loader, _load_notes = load, notes


def ensure_loaded() -> None:
    """Run the installed loader once: the built-in components and, unless disabled, the
    installed plugins."""
    global _loaded
    if _loaded or _loader is None:
        return
    _loaded = True
    _loader()


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Undo every registration made inside the block if it raises (a plugin that fails to load,
    or is refused, leaves nothing half-registered behind)."""
    snapshot = {kind: dict(entries) for kind, entries in _ENTRIES.items()}
    try:
        yield
    except BaseException:
        _ENTRIES.clear()
        _ENTRIES.update(snapshot)
        raise


def _check_kind(kind: str) -> None:
    if kind not in _ENTRIES:
        raise RegistryError(
            f"Unknown registry kind '{kind}'.{_suggest(kind, list(_ENTRIES))} "
            f"Kinds: {', '.join(sorted(_ENTRIES))}."
        )


def _all_entries() -> list[Entry]:
    return [e for entries in _ENTRIES.values() for e in entries.values()]


def unknown_name(kind: str, name: str, names: list[str], notes: str = "") -> RegistryError:
    """The error for a `kind/name` that is not among `names`: it lists them, suggests the closest
    and points at `tfllm list` (`notes` says which plugins failed to load, if any)."""
    names = sorted(names)
    return RegistryError(
        f"Unknown {kind} '{name}'.{_suggest(str(name), names)} "
        f"Available {kind} names: {', '.join(names) or '(none)'}. "
        f"Run `tfllm list {kind}` to see each with its package.{notes}"
    )


def get_entry(kind: str, name: str) -> Entry:
    """Return the registry entry for `kind/name`, or raise an error listing what exists."""
    ensure_loaded()
    _check_kind(kind)
    try:
        return _ENTRIES[kind][name]
    except KeyError:
        notes = _load_notes() if _load_notes is not None else ""
        raise unknown_name(kind, name, list(_ENTRIES[kind]), notes) from None


def get(kind: str, name: str) -> Any:
    """Return the class or factory registered as `kind/name`."""
    return get_entry(kind, name).obj


def list_entries(kind: str | None = None) -> list[Entry]:
    """Every registered entry (of one kind, or of all), sorted by kind then name."""
    ensure_loaded()
    if kind is not None:
        _check_kind(kind)
    kinds = [kind] if kind else sorted(_ENTRIES)
    return [_ENTRIES[k][n] for k in kinds for n in sorted(_ENTRIES[k])]


def parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """The named constructor parameters of a registered class or factory."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    return {
        n: p
        for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def required_by_parameter(obj: Any) -> dict[str, bool]:
    """`{parameter: True if it has no default}` for the constructor of `obj`: what `check_args`
    needs, in a form that can be cached as JSON."""
    return {n: p.default is inspect.Parameter.empty for n, p in parameters(obj).items()}


def spec_name(kind: str, spec: Mapping[str, Any], key: str | None = None) -> str:
    """The component name a config spec (`{"name": ..., **args}`) asks for.

    Raises:
        ConfigError: the spec names none.
    """
    if "name" not in spec or spec["name"] in (None, ""):
        raise ConfigError(f"{key or kind}.name is missing: say which {kind} to build.")
    return str(spec["name"])


def check_args(
    kind: str,
    name: str,
    accepted: Mapping[str, bool],
    spec: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments that build `kind/name` from a config spec, given the constructor's
    parameters (`accepted`: name -> required, as `required_by_parameter` returns them).

    Raises:
        ConfigError: the spec has an argument the component does not take, or lacks one it
            needs.
    """
    key = key or kind
    args = {k: v for k, v in spec.items() if k != "name"}
    unknown = [k for k in args if k not in accepted]
    if unknown:
        valid = sorted(accepted)
        bad = unknown[0]
        raise ConfigError(
            f"{key}.{bad}: {kind} '{name}' takes no argument '{bad}'.{_suggest(bad, valid)} "
            f"Valid arguments: {', '.join(valid)}."
        )
    merged = {k: v for k, v in (context or {}).items() if k in accepted}
    merged.update(args)
    missing = [n for n, needed in accepted.items() if needed and n not in merged and n != "name"]
    if missing:
        raise ConfigError(f"{key}: {kind} '{name}' needs '{missing[0]}', which is not set.")
    return merged


def resolve_args(
    kind: str,
    spec: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> tuple[Entry, dict[str, Any]]:
    """Check a config spec (`{"name": ..., **args}`) against the component's signature.

    `context` holds values the surrounding model knows (hidden size, number of heads, ...); each
    is passed only if the component's constructor names it, and the spec's own values win.

    Returns:
        The entry and the keyword arguments to construct it with.

    Raises:
        ConfigError: the spec has no name, or an argument the component does not take.
    """
    key = key or kind
    name = spec_name(kind, spec, key)
    try:
        entry = get_entry(kind, name)
    except RegistryError as e:
        raise ConfigError(f"{key}.name: {e}") from None
    accepted = required_by_parameter(entry.obj)
    return entry, check_args(kind, name, accepted, spec, context, key)


def build(
    kind: str,
    spec: Mapping[str, Any] | str,
    context: Mapping[str, Any] | None = None,
    key: str | None = None,
    **kwargs: Any,
) -> Any:
    """Construct a registered component from a spec.

    Args:
        kind: Registry kind.
        spec: A name, or a mapping with `name` and the component's arguments.
        context: Values offered to the constructor if it names them (see `resolve_args`).
        key: The config key to name in errors (defaults to `kind`).
        **kwargs: Extra arguments passed as-is (e.g. `dtype=` for Keras layers).
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    entry, args = resolve_args(kind, spec, context, key)
    args.update(kwargs)
    try:
        return entry.obj(**args)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key or kind} ({kind} '{entry.name}'): {e}") from e
