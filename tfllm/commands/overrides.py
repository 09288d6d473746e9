"""Hydra override mistakes as tfllm errors: a mistyped key gets a did-you-mean.

Hydra refuses `trainer.max_step=10` with "Key 'max_step' is not in struct ... use
+trainer.max_step", advice that would add a key nothing reads. `explain` turns such a failure
into one line naming the closest existing keys.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_FAILED = re.compile(r"Could not override '([^']+)'")
_MISSING = re.compile(r"Key '([^']+)' is not in struct")


def failed_key(message: str) -> str | None:
    """The override key a Hydra composition error names, or None.

    >>> failed_key("Could not override 'trainer.max_step'.\\nTo append ...")
    'trainer.max_step'
    """
    found = _FAILED.search(message)
    return found.group(1) if found else None


def suggest_key(key: str, config: Mapping[str, Any]) -> str:
    """`key` checked against `config`: where the path stops existing, the closest keys there.

    >>> suggest_key("trainer.max_step", {"trainer": {"max_steps": 1, "log_every": 5}})
    "trainer.max_step: no such key. Did you mean 'trainer.max_steps'?"
    >>> suggest_key("traner.max_steps", {"trainer": {"max_steps": 1}})
    "traner: no such key. Did you mean 'trainer'?"
    """
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping):
            break
        if part not in node:
            prefix = ".".join(parts[:depth])
            here = f"{prefix}.{part}" if prefix else part
            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.6)
            named = [f"'{prefix}.{c}'" if prefix else f"'{c}'" for c in close]
            hint = f" Did you mean {' or '.join(named)}?" if named else ""
            if not named and node:
                keys = ", ".join(sorted(str(k) for k in node))
                hint = f" Keys there: {keys}."
            return f"{here}: no such key.{hint}"
        node = node[part]
    return f"{key}: cannot be set this way"


def explain(
    message: str, overrides: Sequence[str], compose: Callable[[list[str]], Mapping[str, Any]]
) -> str | None:
    """A did-you-mean line for a Hydra composition failure on a mistyped key (None when the
    failure is of another kind). `compose(overrides)` composes the config the user meant,
    without the failing override."""
    key = failed_key(message)
    if key is None or not _MISSING.search(message):
        return None
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        config = compose(rest)
    except Exception:  # noqa: BLE001 (another override is wrong too: Hydra's message stands)
        return None
    line = suggest_key(key, config)
    return f"{line} (+{key}=... would add it as a new key.)"


# What a command-line override may name as a `_target_` under `hydra.`: Hydra's documented
# callbacks, launchers and sweepers (and their samplers). Anything else is a callable Hydra
# would import and run before the job: refused.
ALLOWED_TARGETS = frozenset(
    {
        "hydra.experimental.callbacks.LogJobReturnCallback",
        "hydra.experimental.callbacks.PickleJobInfoCallback",
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
        "hydra_plugins.hydra_rq_launcher.rq_launcher.RQLauncher",
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "hydra_plugins.hydra_ax_sweeper.ax_sweeper.AxSweeper",
        "hydra_plugins.hydra_nevergrad_sweeper.nevergrad_sweeper.NevergradSweeper",
    }
)
ALLOWED_TARGET_PREFIXES = ("optuna.samplers.", "optuna.pruners.")
# Handler classes a logging override may name (logging's dictConfig imports and calls them).
ALLOWED_LOG_CLASSES = frozenset(
    {"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler"}
)


def refused_hydra_override(overrides: Sequence[str]) -> str | None:
    """Why one of `overrides` may not run, or None: a `hydra.` override that names a callable
    outside the allow-list (`_target_`, a logging `()` factory or handler `class`).

    >>> refused_hydra_override(["hydra.callbacks.x._target_=shutil.copyfile"])[:40]
    "hydra.callbacks.x._target_: 'shutil.copy"
    >>> refused_hydra_override(["trainer.max_steps=5", "hydra/launcher=basic"]) is None
    True
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if not candidates:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - malformed: Hydra itself reports it
        return None
    for override in parsed:
        if override.is_delete():
            continue
        try:
            value = override.value()
        except Exception:  # noqa: BLE001 - a sweep or an odd value: checked as text
            value = override.get_value_element_as_str()
        problem = _refused_value(override.key_or_group, value)
        if problem:
            return problem
    return None


def _refused_value(key: str, value: Any) -> str | None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            problem = _refused_value(f"{key}.{k}", v)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _refused_value(f"{key}.{i}", v)
            if problem:
                return problem
        return None
    last = key.rsplit(".", 1)[-1]
    if last == "_target_" and not (
        str(value) in ALLOWED_TARGETS or str(value).startswith(ALLOWED_TARGET_PREFIXES)
    ):
        return (
            f"{key}: {str(value)!r} is not a callable tfllm lets Hydra run; a command-line "
            "override may name Hydra's own callbacks, launchers and sweepers only (see "
            "docs/training.md)"
        )
    logging_key = key.startswith(("hydra.job_logging", "hydra.hydra_logging"))
    if logging_key and last == "()":
        return f"{key}: logging factories ('()') cannot be set from the command line"
    if logging_key and last == "class" and str(value) not in ALLOWED_LOG_CLASSES:
        return f"{key}: {str(value)!r} is not one of {', '.join(sorted(ALLOWED_LOG_CLASSES))}"
    return None
