"""`tfllm export`: a checkpoint to `<base>/<name>/<version>/`, a SavedModel TF Serving loads."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from tfllm import progress
from tfllm.export.serving_module import CausalLMServing, EmbeddingServing, ExportSettings

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PROMPTS = ("Hello", "The meaning of life is")


@dataclass
class ExportResult:
    """Where an export went and what it holds."""

    path: str
    version: int
    signatures: list[str]
    validation: dict[str, Any] = field(default_factory=dict)


def next_version(model_dir: str) -> int:
    """One more than the highest numeric version folder in `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def build_serving_module(model, tokenizer, cfg: dict[str, Any], settings: ExportSettings):
    """The `tf.Module` whose signatures the SavedModel exports, chosen by the model's task."""
    from tfllm.tasks.classifier import SequenceClassifier, TokenClassifier
    from tfllm.tasks.extractive_qa import SpanExtractor
    from tfllm.tasks.masked_lm import MaskedLM
    from tfllm.tasks.reward import RewardModel

    task = cfg["task"]["name"]
    data = cfg.get("data") or {}
    length = settings.sequence_length or data.get("sequence_length") or model.max_sequence_length
    if hasattr(model, "call_with_cache"):
        template = (cfg.get("chat") or {}).get("template")
        return CausalLMServing(model, tokenizer, settings, chat_template=template)
    if hasattr(model, "bind"):  # an encoder-decoder
        from tfllm.export.seq2seq_serving import Seq2SeqServing

        return Seq2SeqServing(model, tokenizer, settings)
    if hasattr(model, "embed_texts"):
        max_length = (cfg.get("embedding") or {}).get("max_length")
        return EmbeddingServing(model, tokenizer, max_length)
    if isinstance(model, SequenceClassifier) and not isinstance(model, TokenClassifier):
        from tfllm.export.classifier_serving import ClassifierServing

        return ClassifierServing(
            model,
            tokenizer,
            int(length),
            pairs=bool(data.get("pair_column")),
            text_feature=settings.text_feature,
            pair_feature=settings.pair_feature,
        )
    if isinstance(model, TokenClassifier):
        from tfllm.export.tagger_serving import TaggerServing

        return TaggerServing(model, tokenizer, int(length))
    if isinstance(model, RewardModel):
        from tfllm.data.chat import DEFAULT_TEMPLATE
        from tfllm.export.reward_serving import RewardServing

        template = data.get("template") or (cfg.get("chat") or {}).get("template")
        return RewardServing(
            model,
            tokenizer,
            template or DEFAULT_TEMPLATE,
            int(length),
            prompt_feature=settings.prompt_feature,
            reply_feature=settings.reply_feature,
        )
    if isinstance(model, SpanExtractor):
        from tfllm.export.qa_serving import QAServing
        from tfllm.tasks.qa_reading import ReadingRule

        rule = ReadingRule.of_data(data)
        if settings.sequence_length:
            rule = ReadingRule(settings.sequence_length, rule.max_question_length, rule.stride)
        return QAServing(model, tokenizer, rule, settings.qa_max_windows)
    if isinstance(model, MaskedLM):
        from tfllm.export.fill_mask_serving import FillMaskServing

        return FillMaskServing(model, tokenizer, settings.fill_mask_top_k, int(length))
    raise ValueError(f"task '{task}' has no serving signatures yet")


def set_method_names(path: str, method_names: dict[str, str]) -> None:
    """Give signatures TF Serving's Classify/Regress method names (`tf.saved_model.save` writes
    every signature as Predict's); the Classify and Regress APIs accept only those."""
    if not method_names:
        return
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        proto.ParseFromString(f.read())
    for name, method in method_names.items():
        proto.meta_graphs[0].signature_def[name].method_name = method
    with open(pb, "wb") as f:
        f.write(proto.SerializeToString())


def write_warmup(
    path: str, model_name: str, requests: list[tuple[str, dict[str, tuple[Any, str]]]]
) -> None:
    """`assets.extra/tf_serving_warmup_requests`: PredictionLogs TF Serving replays at load, so
    the first real request does not pay for graph initialization. `requests` are
    `(signature, {input: (value, dtype)})`, dtype `bytes` for binary strings given as latin-1
    text (a module's `warmup_requests`)."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, (value, dtype) in inputs.items():
                if dtype == "bytes":
                    value, dtype = [v.encode("latin-1") for v in value], "string"
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
            log_entry = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_entry.SerializeToString())


def export_model(
    model,
    tokenizer,
    cfg: dict[str, Any],
    base_path: str,
    name: str,
    version: int | None = None,
    settings: ExportSettings | None = None,
    validate: bool = True,
) -> ExportResult:
    """Export to `<base_path>/<name>/<version>/`, atomically, then validate it.

    A model trained with an adapter (LoRA) is exported with the adapter merged into its base
    weights. The SavedModel is written into a temporary folder beside the version folders and
    renamed into place only when complete (TF Serving polls the model folder and must never see
    half a version). Validation reloads it in a fresh process that imports only TensorFlow and
    tensorflow-text, compares greedy completions with this process, and lists every op.

    Raises:
        ValueError: the settings are out of range.
        FileExistsError: the version folder exists.
        ExportValidationError: the reloaded export disagrees or uses ops outside TF and tf-text
            (the version folder never appears).
    """
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    from tfllm.runs import save_run_config, tokenizer_dir

    settings = settings or ExportSettings()
    settings.validate()
    if cfg.get("adapter"):  # serve the base weights with the adapter folded in
        from tfllm.adapters.lora import merge_adapter

        model, cfg = merge_adapter(model, cfg, tokenizer)
    model_dir = os.path.join(os.path.abspath(base_path), name)
    os.makedirs(model_dir, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"export.version must be a positive integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"export: {final} already exists; choose another export.version")
    steps = 4 if validate else 3  # trace the signatures, save, write assets, validate
    options = tf.saved_model.SaveOptions()
    fresh = None
    if validate:  # started now, it imports TensorFlow while the export is traced and saved
        from tfllm.export.validate import FreshProcess

        fresh = FreshProcess(cwd=model_dir)
    try:
        with progress.task(f"export {name}/{version}", total=steps, unit="step") as advance:
            module = build_serving_module(model, tokenizer, cfg, settings)
            # Traced in the context `tf.saved_model.save` traces in: a tf.function's trace cache is
            # keyed on it, so signatures traced outside it are all traced again while saving (twice
            # the time, and both copies written into the SavedModel).
            with save_context.save_context(options):
                signatures = module.signatures()
            advance(1)
            staging = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir)
            try:
                target = os.path.join(staging, "model")
                tf.saved_model.save(module, target, signatures=signatures, options=options)
                set_method_names(target, module.method_names())
                advance(1)
                extra = os.path.join(target, ASSETS_EXTRA)
                os.makedirs(extra, exist_ok=True)
                export_cfg = dict(cfg)
                export_cfg["export"] = {
                    "name": name,
                    "version": version,
                    "signatures": sorted(signatures),
                    "prompt_context": module.prompt_context(),
                    **settings.__dict__,
                }
                save_run_config(export_cfg, extra)
                tokenizer.save_to_directory(tokenizer_dir(extra))
                warmup = module.warmup_requests(list(WARMUP_PROMPTS))
                write_warmup(os.path.join(extra, WARMUP_FILE), name, warmup)
                result = ExportResult(final, version, sorted(signatures))
                advance(1)
                if validate:
                    from tfllm.export.validate import validate_export

                    result.validation = validate_export(target, module, fresh)
                    advance(1)
                os.replace(target, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if fresh is not None:  # ended unused if the export stopped before validation
            fresh.close()
    return result
