"""The run directory: its layout, and reading and writing what a run leaves in it.

This module is the one owner of the layout. A training run (and every converted, quantized or
pruned checkpoint, and an export's `assets.extra/`) holds:

    config.yaml          the fully resolved config (`RUN_CONFIG`)
    tokenizer/           the trained tokenizer (`TOKENIZER_DIR`)
    checkpoints/         `tf.train.CheckpointManager` files, `ckpt-<step>` (`CHECKPOINT_DIR`)
    metrics.json         the final logs of a finished training run (`METRICS_FILE`)
    .workers/worker_N/   scratch checkpoints of non-chief workers (`WORKERS_DIR`)
    tensorboard/         event files (written by the tensorboard callback)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from tfllm.files import atomic_write
from tfllm.registry import ConfigError

if TYPE_CHECKING:
    from tfllm.components.tokenizers.base import Tokenizer

# TensorFlow, the tokenizers and the model builder are imported by the functions that need
# them: reading the layout (paths, configs, metrics) stays cheap for commands that only look.

RUN_CONFIG = "config.yaml"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
WORKERS_DIR = ".workers"


def checkpoint_dir(run_dir: str) -> str:
    """Where a run's (the chief's) checkpoints live."""
    return os.path.join(run_dir, CHECKPOINT_DIR)


def worker_checkpoint_dir(run_dir: str, task_id: int) -> str:
    """Scratch checkpoints of non-chief worker `task_id` (removed when it finishes)."""
    return os.path.join(run_dir, WORKERS_DIR, f"worker_{task_id}")


def tokenizer_dir(run_dir: str) -> str:
    """Where a run's tokenizer files live."""
    return os.path.join(run_dir, TOKENIZER_DIR)


def save_run_config(cfg: dict[str, Any], run_dir: str) -> str:
    """Write the fully resolved config next to the checkpoints (atomically).

    Values that came from the environment (`${oc.env:…}`, listed by `tfllm.config.to_plain`)
    are written as their interpolation text, never their value (secrets stay out of runs and
    exports); every other `${` in a resolved value is literal and stays so when read back.
    """
    from tfllm.config import ENVIRONMENT_KEY

    cfg = dict(cfg)
    secrets = cfg.pop(ENVIRONMENT_KEY, None) or {}
    container = _escaped(cfg)
    for dotted, text in secrets.items():
        node: Any = container
        *parents, last = dotted.split(".")
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, list):
                node[int(last)] = _escaped(text)
            elif last in node:
                node[last] = _escaped(text)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # the job dropped or reshaped that key: nothing of it is saved
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, RUN_CONFIG)
    return atomic_write(path, OmegaConf.to_yaml(OmegaConf.create(container)))


def _escaped(value: Any) -> Any:
    # A resolved config holds no interpolations: each `${` is text, escaped for OmegaConf.
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    if isinstance(value, str):
        return value.replace("${", "\\${")
    return value


def load_run_config(run_dir: str) -> dict[str, Any]:
    """Read the resolved config a training run saved."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f"ckpt: {run_dir} is not a tfllm run directory (no {RUN_CONFIG})")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def save_metrics(metrics: dict[str, Any], run_dir: str) -> str:
    """Write a finished run's final logs (atomically)."""
    return atomic_write(os.path.join(run_dir, METRICS_FILE), json.dumps(metrics, indent=1))


def load_metrics(run_dir: str) -> dict[str, Any] | None:
    """A finished run's final logs, or None if it has none (or they are unreadable)."""
    try:
        with open(os.path.join(run_dir, METRICS_FILE), encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


CHECKPOINT_STATE = "checkpoint"  # tf.train.CheckpointManager's state file
_CHECKPOINT_INDEX = re.compile(r"^(.+)-(\d+)\.index$")


def checkpoint_candidates(directory: str) -> tuple[list[str], bool]:
    """The checkpoints in `directory`, newest first, and whether its state file was readable.

    The state file (`checkpoint`) names them when it is intact; the `<name>-<step>.index`
    files present are added to what it names, so a damaged or stale state file never hides a
    checkpoint (and never makes a run silently start over).
    """
    import tensorflow as tf

    if not os.path.isdir(directory):
        return [], True
    named: list[str] = []
    state_ok = True
    if os.path.exists(os.path.join(directory, CHECKPOINT_STATE)):
        try:
            state = tf.train.get_checkpoint_state(directory)
        except Exception:  # noqa: BLE001 - a damaged state file: the files present decide
            state = None
        if state is None or not state.model_checkpoint_path:
            state_ok = False
        else:
            named = list(state.all_model_checkpoint_paths)
            if state.model_checkpoint_path not in named:
                named.append(state.model_checkpoint_path)
    # TensorFlow returns the state's paths joined to `directory` already: made absolute here,
    # so the same checkpoint found both ways is listed once.
    found: dict[str, int] = {}
    for path in named:
        match = re.search(r"-(\d+)$", path)
        found[os.path.abspath(path)] = int(match.group(1)) if match else -1
    for name in os.listdir(directory):
        match = _CHECKPOINT_INDEX.match(name)
        if match:
            path = os.path.abspath(os.path.join(directory, name[: -len(".index")]))
            found.setdefault(path, int(match.group(2)))
    return sorted(found, key=lambda p: found[p], reverse=True), state_ok


def repair_checkpoint_state(directory: str) -> str | None:
    """Rebuild a damaged checkpoint state file from the checkpoint files present.

    The damaged file is kept beside it as `checkpoint.damaged`; returns that path, or None
    when there was nothing to repair. `tf.train.CheckpointManager` fails on a damaged state
    file, and `tf.train.latest_checkpoint` reads it as "no checkpoint": a run would start over.
    """
    candidates, state_ok = checkpoint_candidates(directory)
    if state_ok:
        return None
    state = os.path.join(directory, CHECKPOINT_STATE)
    damaged = state + ".damaged"
    os.replace(state, damaged)
    if candidates:  # the CheckpointState proto in text format, as TensorFlow writes it
        names = [os.path.relpath(c, directory) for c in candidates]
        lines = [f"model_checkpoint_path: {json.dumps(names[0])}"]
        lines += [f"all_model_checkpoint_paths: {json.dumps(n)}" for n in reversed(names)]
        atomic_write(state, "\n".join(lines) + "\n")
    return damaged


def latest_checkpoint(directory: str) -> str | None:
    """The newest checkpoint in `directory` (see `checkpoint_candidates`), or None."""
    candidates, _ = checkpoint_candidates(directory)
    return candidates[0] if candidates else None


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the `<name>-<step>_temp` folders a save killed midway leaves behind (TensorFlow
    writes a checkpoint's shards there and renames them into place only once they are whole),
    returning what it removed. Call it before any save starts in `directory`."""
    removed = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith("_temp") and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def check_run_dir(run_dir: str) -> dict[str, Any]:
    """The resolved config of the run at `run_dir`, read without TensorFlow: the checks
    `load_run` makes first, for commands to refuse a wrong `ckpt=` before their slow imports.

    Raises:
        ConfigError: no such directory, or no run config in it.
    """
    if not os.path.isdir(run_dir):
        raise ConfigError(
            f"ckpt: no such directory: {run_dir} (a run folder, or a pretrained model's name "
            "from `tfllm pretrained list`)"
        )
    return load_run_config(run_dir)


def load_run(run_dir: str, checkpoint: str | None = None) -> tuple[Any, Tokenizer, dict]:
    """Rebuild a run's model from its saved config and restore its latest checkpoint.

    Args:
        run_dir: a directory written by `tfllm train`.
        checkpoint: a specific checkpoint prefix (default: the latest).

    Returns:
        `(model, tokenizer, config)`.
    """
    cfg = check_run_dir(run_dir)
    import tensorflow as tf

    from tfllm.components.tokenizers.base import load_tokenizer
    from tfllm.models.builder import build_model
    from tfllm.models.variables import model_variables

    tokenizer = load_tokenizer(tokenizer_dir(run_dir))
    model = build_model(
        cfg,
        tokenizer.vocabulary_size,
        tokenizer.special_token_ids(),
        tokenizer.sentinel_ids(),
        tokenizer,
    )
    path = checkpoint or latest_checkpoint(checkpoint_dir(run_dir))
    if path is None:
        raise ConfigError(f"ckpt: {run_dir} has no checkpoint yet")
    status = tf.train.Checkpoint(model=model_variables(model)).restore(path).expect_partial()
    status.assert_existing_objects_matched()
    return model, tokenizer, cfg


def load_config_and_tokenizer(path: str) -> tuple[dict[str, Any], Tokenizer]:
    """A run's (or an export version's `assets.extra/`) resolved config and tokenizer, without
    building the model: what a client of a served model needs."""
    base = _client_base(path)
    cfg = load_run_config(base)
    from tfllm.components.tokenizers.base import load_tokenizer

    return cfg, load_tokenizer(tokenizer_dir(base))


def load_config_and_special_tokens(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A run's (or an export version's `assets.extra/`) resolved config and its tokenizer's
    special tokens, read without TensorFlow: what a chat client of a served model needs."""
    from tfllm.components.tokenizers.saved import saved_special_tokens

    base = _client_base(path)
    return load_run_config(base), saved_special_tokens(tokenizer_dir(base))


def _client_base(path: str) -> str:
    extra = os.path.join(path, "assets.extra")
    base = extra if os.path.exists(os.path.join(extra, "config.yaml")) else path
    if not os.path.isdir(base):
        raise ConfigError(f"ckpt: no such directory: {path}")
    return base


def write_checkpoint(model: Any, tokenizer: Tokenizer, config: dict, out: str) -> None:
    """Write `config.yaml`, `tokenizer/` and `checkpoints/` into the new directory `out`.

    The layout is a training run's, so `generate`, `chat`, `embed`, `export`, `evaluate` and
    `train init_from=` read it like any run.
    """
    save_run_config(config, out)
    tokenizer.save_to_directory(tokenizer_dir(out))
    import tensorflow as tf

    from tfllm.models.variables import model_variables

    checkpoint = tf.train.Checkpoint(model=model_variables(model))
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_dir(out), max_to_keep=1, checkpoint_name="ckpt"
    )
    manager.save(checkpoint_number=0)


def write_run(
    model: Any, tokenizer: Tokenizer, config: dict, out: str, overwrite: bool = False
) -> None:
    """`write_checkpoint` into a temporary sibling of `out`, renamed into place at the end, so
    a failure (a full disk, Ctrl-C) leaves `out` as it was.

    Raises:
        FileExistsError: `out` exists and is not empty, and `overwrite` is False.
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"out: {out} exists and is not empty (pass overwrite=true)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        write_checkpoint(model, tokenizer, config, staging)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "previous"))
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
