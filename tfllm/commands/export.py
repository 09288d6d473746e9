"""`tfllm export ckpt=DIR export.base_path=... export.name=...` writes a SavedModel version;
`tfllm export inspect DIR` describes one and `tfllm export run DIR key=value ...` calls it."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, settings


def export_job(plain: dict[str, Any]) -> None:
    from tfllm.export.settings import ExportSettings
    from tfllm.runs import check_run_dir

    # A wrong ckpt= or setting is refused before TensorFlow loads.
    check_run_dir(plain["ckpt"])
    ex = plain["export"]
    export_settings = settings(ExportSettings, ex, prefix="export.")
    version = ex["version"]
    if version is not None and (not isinstance(version, int) or version < 1):
        raise CommandError(f"export.version must be a positive integer, got {version!r}")
    from tfllm.export.exporter import export_model
    from tfllm.export.validate import ExportValidationError
    from tfllm.runs import load_run

    model, tokenizer, run_cfg = load_run(plain["ckpt"])
    try:
        result = export_model(
            model,
            tokenizer,
            run_cfg,
            ex["base_path"],
            ex["name"],
            ex["version"],
            export_settings,
            validate=ex["validate"],
        )
    except (ExportValidationError, ValueError) as e:
        raise CommandError(f"export: {e}") from None
    print(f"exported version {result.version} to {result.path}")
    print(f"signatures: {', '.join(result.signatures)}")
    if result.validation:
        v = result.validation
        print(
            f"validated in a fresh process: {v['compared']}; {v['core_ops']} TensorFlow core "
            f"op types, tf-text ops: {', '.join(v['text_ops']) or 'none'}"
        )


def inspect_or_run(action: str, argv: Sequence[str]) -> None:
    """`tfllm export inspect DIR` / `tfllm export run DIR [signature=NAME] key=value ...`."""
    if not argv:
        raise CommandError(f"usage: tfllm export {action} SAVED_MODEL_DIR ...")
    from tfllm.export.validate import describe, run_signature

    path, rest = argv[0], argv[1:]
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise CommandError(f"{path} holds no saved_model.pb")
    if action == "inspect":
        print(describe(path))
        return
    signature, inputs = "serving_default", {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"expected key=value, got {item!r}")
        if key == "signature":
            signature = value
            continue
        try:
            inputs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            inputs[key] = value
    try:
        outputs = run_signature(path, signature, inputs)
    except (KeyError, ValueError) as e:
        raise CommandError(e.args[0]) from None
    except Exception as e:  # an op error: the model rejected the inputs
        from tfllm.serving.predictor import first_line

        raise CommandError(first_line(getattr(e, "message", str(e)))) from None
    print(json.dumps(outputs, ensure_ascii=False, indent=1))


def main(argv: Sequence[str]) -> None:
    if argv[:1] in (["inspect"], ["run"]):
        inspect_or_run(argv[0], argv[1:])
    else:
        run_hydra("export", "export", export_job, argv)
