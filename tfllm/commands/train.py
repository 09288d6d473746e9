"""`tfllm train [overrides]`: train the composed config into `run_dir` (Hydra multirun with -m)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import USER_ERRORS, CommandError, fail, run_hydra

HYDRA_FILES = {".hydra", "train.log"}  # what Hydra writes into a run before the job starts


def discard_unused_run(run_dir: str) -> None:
    """Remove a run folder that holds nothing but Hydra's files (a run refused before it
    started), and the empty folders above it below the working directory (`runs/<date>/`)."""
    if not os.path.isdir(run_dir) or not set(os.listdir(run_dir)) <= HYDRA_FILES:
        return
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    path, here = os.path.abspath(run_dir), os.getcwd()
    while True:  # the run folder, then its empty parents below the working directory
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)
        if not path.startswith(here + os.sep):
            return


def check_before_tensorflow(plain: dict[str, Any]) -> None:
    """Check the config as the Trainer will, against `tfllm list`'s cached catalog, so that a
    wrong name or value fails in a second, before TensorFlow loads. Without a catalog for the
    installed state this reads the registry (and caches the catalog for the next command):
    TensorFlow loads here instead of in the Trainer, which checks again with the registry."""
    from tfllm import plugins
    from tfllm.commands.catalog import CatalogComponents, read_catalog
    from tfllm.training.run_config import prepare_config
    from tfllm.training.validation import RegistryComponents

    catalog = read_catalog()
    # A plugin that failed to load here (never cached) is named by the registry's own errors.
    components = RegistryComponents() if plugins.failed() else CatalogComponents(catalog)
    prepare_config(dict(plain), components)


def train_job(plain: dict[str, Any]) -> float | None:
    """Train one composed config; the multirun sweeper reads the returned validation loss."""
    plain = dict(plain)
    run_dir = plain.pop("run_dir")
    if not run_dir:
        raise CommandError("run_dir is empty")
    # The config is checked whole before anything is built or trained: from the catalog
    # first, then by the Trainer with the loaded registry.
    try:
        check_before_tensorflow(plain)
    except USER_ERRORS:
        discard_unused_run(run_dir)
        raise
    from tfllm.training.trainer import PREEMPTED_EXIT_CODE, Trainer, TrainingDivergedError

    try:
        logs = Trainer(plain, run_dir).fit()
    except TrainingDivergedError as e:
        fail(str(e), status=3)
    except USER_ERRORS:
        discard_unused_run(run_dir)
        raise
    if "preempted_at_step" in logs:
        print(
            f"\nstopped by SIGTERM at step {int(logs['preempted_at_step'])}: checkpoint saved "
            f"in {run_dir}; run the same command again to resume",
            file=sys.stderr,
        )
        sys.exit(PREEMPTED_EXIT_CODE)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
    print(f"\ntrained to {run_dir}: {summary}")
    return logs.get("val_loss")


def main(argv: Sequence[str]) -> None:
    run_hydra("train", "config", train_job, argv)
