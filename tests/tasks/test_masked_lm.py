"""BERT's masked LM: the 80/10/10 corruption of 15%, protected tokens, and learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.config import compose
from tfllm.models.encoder import EncoderBackbone
from tfllm.tasks.masked_lm import MaskedLM, mask_tokens
from tfllm.testing import run_layer_test
from tfllm.training.trainer import Trainer


def test_corruption_rates_and_protected_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, size=(64, 512)).astype("int32")
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    seed = tf.constant([7, 11])
    inputs, labels, weights = (
        x.numpy() for x in mask_tokens(tf.constant(ids), seed, 4, 100, tf.constant([0, 2, 3, 4]))
    )
    picked = weights > 0
    assert abs(picked.mean() - 0.15 * 510 / 512) < 0.005
    assert not picked[:, 0].any() and not picked[:, -1].any()  # special tokens never picked
    np.testing.assert_array_equal(labels, ids)
    masked = picked & (inputs == 4)
    kept = picked & (inputs == ids)
    assert abs(masked.sum() / picked.sum() - 0.8) < 0.01
    # Kept: 10% on purpose plus random draws that hit the original token (1/100 of 10%).
    assert abs(kept.sum() / picked.sum() - 0.101) < 0.01
    np.testing.assert_array_equal(inputs[~picked], ids[~picked])  # nothing else changes
    again = mask_tokens(tf.constant(ids), seed, 4, 100, tf.constant([0, 2, 3, 4]))[0].numpy()
    np.testing.assert_array_equal(again, inputs)  # a pure function of ids and seed


def test_masked_lm_task_harness():
    backbone = EncoderBackbone(
        vocabulary_size=40, num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=12
    )
    config = {
        "backbone": keras.saving.serialize_keras_object(backbone),
        "special_tokens": {"pad": 0, "mask": 1},
    }
    ids = np.random.default_rng(0).integers(2, 40, size=(2, 6)).astype("int32")
    run_layer_test(
        MaskedLM, config, ids, expected_output_shape=(2, 6, 40), run_mixed_precision=False
    )


def test_a_decoder_or_a_missing_mask_token_is_a_clear_error():
    from tfllm.models.decoder import DecoderBackbone

    decoder = DecoderBackbone(
        vocabulary_size=40, num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=12
    )
    with pytest.raises(ValueError, match="bidirectional backbone"):
        MaskedLM(decoder)
    encoder = EncoderBackbone(
        vocabulary_size=40, num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=12
    )
    with pytest.raises(ValueError, match="'mask' special token"):
        MaskedLM(encoder, special_tokens={"pad": 0}).loss_terms({"token_ids": np.ones((1, 4))})


def test_bert_tiny_learns_masked_lm(tiny_corpus, tmp_path):
    cfg = compose(
        "config",
        [
            "model=bert_tiny",
            "task=masked_lm",
            "tokenizer=char_mlm",
            "debug=fast",
            f"data.path={tiny_corpus}",
            "trainer.max_steps=120",
            "trainer.eval_every=120",
            "task.mask_rate=0.3",  # twice BERT's share: more signal per step for a short test
            "data.batch_size=8",
            "data.train_fraction=0.8",
            "model.dropout=0.0",
            "trainer.jit_compile=false",
            "trainer.callbacks=[]",
            "schedule.peak_learning_rate=3e-3",
            "run_dir=x",
        ],
    )
    cfg.pop("run_dir")
    trainer = Trainer(cfg, str(tmp_path))
    first = trainer.evaluate()["val_loss"]
    logs = trainer.fit()
    assert logs["val_loss"] < first - 0.5, (first, logs)
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(str(tmp_path))
    assert model.special_tokens["mask"] == tokenizer.token_to_id("<mask>")
