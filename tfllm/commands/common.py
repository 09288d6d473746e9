"""What every command shares: one way to report a user error, Hydra and `key=value` argument
handling, and turning a config mapping into typed settings."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from tfllm.commands.overrides import explain, refused_hydra_override
from tfllm.evaluation.plotting import MissingExtraError
from tfllm.registry import ConfigError, RegistryError

T = TypeVar("T")


class CommandError(Exception):
    """A user-facing failure: printed as one `tfllm: error:` line, exit status 2."""


# What a user can fix: reported as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    RegistryError,
    CommandError,
    FileNotFoundError,
    FileExistsError,
    MissingExtraError,
)


def fail(message: str, status: int = 2) -> NoReturn:
    """Print `tfllm: error: message` on stderr and exit with `status`."""
    print(f"tfllm: error: {message}", file=sys.stderr)
    sys.exit(status)


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    """Turn a user error raised inside the block into one error line and exit status 2."""
    try:
        yield
    except USER_ERRORS as e:
        fail(str(e))


def reported(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run inside `reporting()` (for Hydra jobs, whose exceptions Hydra would print as
    tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with reporting():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def user_error(prefix: str = "") -> Iterator[None]:
    """Re-raise a `ValueError` from the library as a `CommandError` (with `prefix`)."""
    try:
        yield
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise CommandError(f"{prefix}{e}") from None


def config_dir() -> str:
    """Where the shipped `conf/` lives (see `tfllm.config.config_dir`)."""
    from tfllm.config import config_dir as find

    try:
        return find()
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None


def check_required(cfg: Any) -> None:
    """Refuse a composed config whose mandatory values (`???` in its YAML: `ckpt`,
    `export.name`, a dataset's `train` file) were not given, naming each.

    >>> from omegaconf import OmegaConf
    >>> try:
    ...     check_required(OmegaConf.create({"ckpt": "???", "export": {"name": "???"}}))
    ... except CommandError as e:
    ...     print(e)
    ckpt, export.name: required, not set (pass ckpt=... export.name=...)
    """
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        needed = " ".join(f"{key}=..." for key in missing)
        raise CommandError(f"{', '.join(missing)}: required, not set (pass {needed})")


# Config keys that name a checkpoint folder, or a packaged pretrained model.
CHECKPOINT_KEYS = ("ckpt", "init_from")


def with_pretrained_paths(plain: Any) -> Any:
    """`plain` with each checkpoint key that names a packaged pretrained model (`tfllm
    pretrained`) and is not a path here replaced by its converted checkpoint's folder."""
    if not isinstance(plain, dict):
        return plain
    from tfllm.pretrained.packages import resolve_checkpoint

    for key in CHECKPOINT_KEYS:
        if isinstance(plain.get(key), str):
            plain[key] = resolve_checkpoint(plain[key])
    return plain


def run_hydra(
    name: str,
    config_name: str,
    job: Callable[[dict[str, Any]], Any],
    argv: Sequence[str],
    subdir: str | None = None,
) -> None:
    """Compose `config_name` with the user's overrides through Hydra (multirun, `--cfg`,
    `--help` included) and run `job` on the resolved config as a plain dict, reporting user
    errors as one line. Installed plugins' `conf/` folders join the search path after
    tfllm's own (not for configs in a subfolder, whose groups are plain keys)."""
    import hydra

    from tfllm.config import to_plain, with_plugin_search_path

    refused = refused_hydra_override([a for a in argv if not a.startswith("-")])
    if refused:
        raise CommandError(refused)
    path = config_dir() if subdir is None else os.path.join(config_dir(), subdir)
    if "--help" in argv or "-h" in argv:
        text = settings_help(os.path.join(path, f"{config_name}.yaml"))
        if text is not None:
            print(text)
            return
    argv = with_plugin_search_path(argv) if subdir is None else list(argv)
    if config_name == "config":  # a training run: Hydra's own files go into the run itself
        run_dirs = [a.split("=", 1)[1] for a in argv if a.startswith("run_dir=")]
        if run_dirs and "-m" not in argv and "--multirun" not in argv:
            argv = [*argv, f"hydra.run.dir={run_dirs[-1]}"]
    argv = [*argv, f"hydra.job.name={name.replace(' ', '_')}"]
    sys.argv = [f"tfllm {name}", *argv]

    @reported
    def app(cfg: Any) -> Any:
        check_required(cfg)
        return job(with_pretrained_paths(to_plain(cfg)))

    app.__name__ = job.__name__
    app.__module__ = job.__module__
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us, to be explained
    try:
        hydra.main(config_path=path, config_name=config_name, version_base="1.3")(app)()
    except Exception as e:
        if full_error == "1":
            raise
        import yaml
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, yaml.YAMLError):
            raise CommandError(broken_yaml(e)) from None
        if not isinstance(e, (HydraException, OmegaConfBaseException)):
            raise
        message = str(e).strip()
        if isinstance(e.__cause__, OmegaConfBaseException):
            message += "\n" + str(e.__cause__).strip()
        overrides = [a for a in argv if not a.startswith("-")]
        better = explain(message, overrides, lambda rest: compose_plain(path, config_name, rest))
        raise CommandError(better or message) from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def settings_help(file: str) -> str | None:
    r"""`tfllm COMMAND --help` for a command whose config composes no groups: its YAML file as
    written, comments included, without its `defaults` list and `hydra` settings (Hydra's own
    help would list the training config's groups, which such a command does not read). None
    for a config that composes groups (`tfllm train`, `tfllm evaluate`, `tfllm tokenizer
    train`): Hydra's help lists them.

    >>> import os, tempfile
    >>> file = os.path.join(tempfile.mkdtemp(), "hello.yaml")
    >>> with open(file, "w") as f:
    ...     _ = f.write("# `tfllm hello`: says hello.\ndefaults:\n  - _self_\n\nname: ???  # who\n"
    ...                 "\nhydra:\n  output_subdir: null\n")
    >>> print(settings_help(file))
    # `tfllm hello`: says hello.
    <BLANKLINE>
    name: ???  # who
    <BLANKLINE>
    Override any key as key=value (??? marks a value you must give); --cfg job prints the
    composed config, -m runs a sweep.
    """
    with open(file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept: list[str] = []
    section = None
    for line in lines:
        if line.startswith(("defaults:", "hydra:")):  # the config's own plumbing
            section = line.split(":")[0]
            continue
        if section and line.startswith((" ", "-")):
            entry = line.strip().lstrip("- ").strip()
            if section == "defaults" and entry != "_self_" and "hydra/" not in entry:
                return None  # a config group: Hydra's help shows the options
            continue
        section = None
        if line.strip() or (kept and kept[-1].strip()):  # no runs of blank lines
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    footer = [
        "Override any key as key=value (??? marks a value you must give); --cfg job prints the",
        "composed config, -m runs a sweep.",
    ]
    return "\n".join([*kept, "", *footer])


def broken_yaml(error: Exception) -> str:
    """One line for a config file that is not valid YAML: the file, where, what, and the plugin
    that ships it (if a plugin does)."""
    from tfllm.plugins import owner_of

    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"a config file is not valid YAML: {problem}"
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}"
    owner = owner_of(mark.name)
    shipped = f" (shipped by plugin '{owner}')" if owner else ""
    return f"{where}{shipped} is not valid YAML: {problem}"


def compose_plain(path: str, config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The config `overrides` compose to, unresolved (for did-you-mean hints)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=path, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def key_values(command: str, argv: Sequence[str], allowed: dict[str, str | None]) -> dict:
    """`key=value` arguments of a plain (non-Hydra) command; `None` defaults are required."""
    values = dict(allowed)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise CommandError(
                f"{command}: unknown argument '{item}'; arguments: "
                + ", ".join(f"{k}=" for k in allowed)
            )
        values[key] = value
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise CommandError(f"{command}: {missing[0]}= is required")
    return values


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits a dataclass field's type (int, float, bool, str, None,
    their unions, tuples and lists of them, dicts; other types are not checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        item = args[0] if args else Any
        return isinstance(value, (tuple, list)) and all(_fits(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts) + (" (or null)" if type(None) in typing.get_args(hint) else "")
    if typing.get_origin(hint) in (tuple, list):
        items = {int: "whole numbers", float: "numbers", bool: "booleans", str: "strings"}
        args = typing.get_args(hint)
        return f"a list of {items[args[0]]}" if args and args[0] in items else "a list"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def settings(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """An instance of the dataclass `cls` from the keys of `values` it has fields for (lists
    become tuples where the field holds a tuple, and so does one string), each value checked
    against its field's type and the whole with `validate()` if it has one; a bad value is a
    `CommandError` naming `prefix` + the key.

    >>> from tfllm.generation.settings import GenerationConfig
    >>> try:
    ...     settings(GenerationConfig, {"temperature": "abc"})
    ... except CommandError as e:
    ...     print(e)
    temperature: 'abc' is not a number
    """
    hints = typing.get_type_hints(cls)
    args: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            value, hint = values[f.name], hints.get(f.name, Any)
            if isinstance(value, str) and typing.get_origin(hint) is tuple:
                value = (value,)  # one stop string: `stop=END` as well as `'stop=[a,b]'`
            if not _fits(value, hint):
                raise CommandError(f"{prefix}{f.name}: {value!r} is not {_type_name(hint)}")
            if isinstance(value, list) and typing.get_origin(hint) is tuple:
                value = tuple(value)
            args[f.name] = value
    instance = cls(**args)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        with user_error(prefix):
            validate()
    return instance


def texts_argument(values: Mapping[str, Any], one: str, many: str) -> list[str]:
    """The texts a command was given as `one="..."` or `'many=[a,b]'`."""
    texts = values[many] if values.get(many) is not None else [values.get(one)]
    if not texts or any(not isinstance(t, str) for t in texts):
        raise CommandError(f"pass {one}=\"...\" or '{many}=[first,second]'")
    return texts
