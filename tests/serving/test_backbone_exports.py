"""Backbone options that change the decode path (U-net skips add earlier blocks' outputs, value
embeddings add token-indexed values before they are cached) go through `tfllm train`, export
and the graph-mode decode loop a server runs, and complete prompts exactly as Python does."""

from __future__ import annotations

import tensorflow as tf


def test_unet_skips_and_value_embeddings_export_and_complete_as_in_python(tmp_path, tiny_corpus):
    import tfllm
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.runs import load_run

    tfllm.train(
        "debug=fast",
        f"data.path={tiny_corpus}",
        "trainer.max_steps=4",
        "trainer.callbacks=[]",
        "model.unet_skips=true",
        "model.value_embeddings=1",
        run_dir=str(tmp_path / "run"),
    )
    model, tokenizer, cfg = load_run(str(tmp_path / "run"))
    backbone = model.backbone
    assert backbone.unet_skips and len(backbone.value_tables) == 1  # restored from the run
    # validate=False: the fresh-process validation is tested with the default backbone
    # (tests/serving/test_serving.py); here the loaded signature is checked against the Python
    # generator directly.
    settings = ExportSettings(max_new_tokens=6)
    result = export_model(
        model, tokenizer, cfg, str(tmp_path / "exports"), "lm", 1, settings, validate=False
    )
    prompts = ["BERNARDO:", "Who's"]
    out = tf.saved_model.load(result.path).signatures["serving_default"](
        prompts=tf.constant(prompts)
    )
    expected = Generator(model, tokenizer).complete(prompts, GenerationConfig(max_new_tokens=6))
    assert [c.decode() for c in out["completions"].numpy()] == [e[0].text for e in expected]
