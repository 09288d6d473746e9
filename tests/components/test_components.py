"""Every registered layer component through the shared harness (tfllm.testing)."""

import numpy as np
import pytest

from tfllm import registry
from tfllm.testing import run_layer_test

rng = np.random.default_rng(0)
X = rng.normal(size=(2, 6, 16)).astype("float32")
IDS = rng.integers(0, 40, size=(2, 6)).astype("int32")

CASES = {
    "positional/none": ({}, X, (2, 6, 16)),
    "positional/sinusoidal": ({"hidden_dim": 16}, X, (2, 6, 16)),
    "positional/learned": ({"hidden_dim": 16, "max_sequence_length": 12}, X, (2, 6, 16)),
    "positional/rope": ({"head_dim": 8, "scaling_factor": 2.0}, X, (2, 6, 16)),
    "positional/alibi": ({"num_heads": 4}, X, (2, 6, 16)),
    "attention/mha": ({"hidden_dim": 16, "num_heads": 4}, X, (2, 6, 16)),
    "head/classification": ({"num_classes": 3, "pooling": "mean", "pooler": True}, X, (2, 3)),
    "head/token_classification": ({"num_classes": 5, "dropout": 0.2}, X, (2, 6, 5)),
    "head/span": ({"dropout": 0.0}, X, (2, 6, 2)),
    "head/scalar": ({"pooling": "last_token", "dropout": 0.1}, X, (2,)),
    "head/scalar:per-token": ({"pooling": "none"}, X, (2, 6)),
    "attention/mha:gqa": ({"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 2}, X, (2, 6, 16)),
    "attention/mha:qk_norm": (
        {"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 2, "qk_norm": True},
        X,
        (2, 6, 16),
    ),
    "attention/mha:mqa-window": (
        {"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 1, "window": 3, "dropout": 0.1},
        X,
        (2, 6, 16),
    ),
    "attention/mha:bidirectional": (
        {"hidden_dim": 16, "num_heads": 2, "causal": False, "use_bias": False},
        X,
        (2, 6, 16),
    ),
    "ffn/mlp": ({"hidden_dim": 16, "intermediate_dim": 32, "activation": "relu"}, X, (2, 6, 16)),
    "ffn/mlp:gelu": ({"hidden_dim": 16, "intermediate_dim": 32}, X, (2, 6, 16)),
    "ffn/mlp:relu2": (
        {"hidden_dim": 16, "intermediate_dim": 32, "activation": "relu2", "use_bias": False},
        X,
        (2, 6, 16),
    ),
    "ffn/swiglu": ({"hidden_dim": 16, "intermediate_dim": 24}, X, (2, 6, 16)),
    "ffn/moe": (
        {
            "hidden_dim": 16,
            "intermediate_dim": 8,
            "num_experts": 4,
            "top_k": 2,
            "capacity_factor": 1.0,
            "router_z_loss_weight": 1e-3,
        },
        X,
        (2, 6, 16),
    ),
    "ffn/moe:mlp-top1": (
        {
            "hidden_dim": 16,
            "intermediate_dim": 8,
            "num_experts": 3,
            "top_k": 1,
            "expert": "mlp",
            "use_bias": True,
            "eval_capacity_factor": 2.0,
        },
        X,
        (2, 6, 16),
    ),
    "attention/block_sparse": (
        {"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 2, "block_size": 4, "window": 4},
        X,
        (2, 6, 16),
    ),
    "attention/block_sparse:global-bidirectional": (
        {
            "hidden_dim": 16,
            "num_heads": 2,
            "block_size": 2,
            "global_blocks": 1,
            "causal": False,
            "dropout": 0.1,
        },
        X,
        (2, 6, 16),
    ),
    "norm/layernorm": ({"epsilon": 1e-5}, X, (2, 6, 16)),
    "norm/layernorm:nobias": ({"use_bias": False}, X, (2, 6, 16)),
    "norm/rmsnorm": ({}, X, (2, 6, 16)),
    "head/lm": ({"vocabulary_size": 40, "tie_embeddings": False, "use_bias": True}, X, (2, 6, 40)),
    "head/lm:softcap": (
        {"vocabulary_size": 40, "tie_embeddings": False, "softcap": 15.0},
        X,
        (2, 6, 40),
    ),
    "model/decoder": (
        {
            "vocabulary_size": 40,
            "num_layers": 2,
            "hidden_dim": 16,
            "num_heads": 4,
            "max_sequence_length": 12,
            "positional": {"name": "rope"},
            "attention": {"name": "mha", "num_kv_heads": 2},
            "ffn": {"name": "swiglu"},
            "norm": {"name": "rmsnorm"},
        },
        IDS,
        (2, 6, 16),
    ),
    "model/decoder:zero-residual-moe-value-embeddings": (
        {
            "vocabulary_size": 40,
            "num_layers": 2,
            "hidden_dim": 16,
            "num_heads": 4,
            "max_sequence_length": 12,
            "ffn": {"name": "moe", "num_experts": 2, "top_k": 1},
            "zero_residual_init": True,
            "value_embeddings": 1,
        },
        IDS,
        (2, 6, 16),
    ),
    "model/decoder:unet": (
        {
            "vocabulary_size": 40,
            "num_layers": 3,
            "hidden_dim": 16,
            "num_heads": 4,
            "max_sequence_length": 12,
            "unet_skips": True,
        },
        IDS,
        (2, 6, 16),
    ),
    "model/decoder:post-norm": (
        {
            "vocabulary_size": 40,
            "num_layers": 1,
            "hidden_dim": 16,
            "num_heads": 2,
            "max_sequence_length": 12,
            "norm_placement": "post",
            "dropout": 0.1,
        },
        IDS,
        (2, 6, 16),
    ),
    "model/encoder": (
        {
            "vocabulary_size": 40,
            "num_layers": 2,
            "hidden_dim": 16,
            "num_heads": 4,
            "max_sequence_length": 12,
            "type_vocabulary_size": 2,
            "embedding_norm": True,
            "ffn": {"name": "mlp", "activation": "gelu"},
            "unet_skips": True,
        },
        IDS,
        (2, 6, 16),
    ),
    "model/encoder:pre-norm-rope": (
        {
            "vocabulary_size": 40,
            "num_layers": 1,
            "hidden_dim": 16,
            "num_heads": 2,
            "max_sequence_length": 12,
            "norm_placement": "pre",
            "positional": {"name": "rope"},
            "dropout": 0.1,
        },
        IDS,
        (2, 6, 16),
    ),
    # The table only matters inside attention (its own tests train it there).
    "positional/relative": (
        {"num_heads": 4, "num_buckets": 8, "max_distance": 16, "causal": True},
        X,
        (2, 6, 16),
        {"run_training": False},
    ),
    "attention/mha:cross": (
        {"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 2, "cross": True},
        X,
        (2, 3, 16),
        {"call": lambda layer, x: layer(x[:, :3], context=x)},
    ),
    "model/encoder_decoder": (
        {
            "vocabulary_size": 40,
            "num_layers": 1,
            "num_decoder_layers": 2,
            "hidden_dim": 16,
            "num_heads": 4,
            "max_sequence_length": 12,
            "positional": {"name": "relative", "num_buckets": 8},
            "attention": {"name": "mha", "num_kv_heads": 2},
            "ffn": {"name": "swiglu"},
            "norm": {"name": "rmsnorm"},
        },
        IDS,
        (2, 4, 16),
        {"call": lambda model, x: model(x, x[:, :4])},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_component_harness(case):
    kind_name = case.split(":")[0]
    kind, name = kind_name.split("/")
    init, data, shape, *options = CASES[case]
    run_layer_test(
        registry.get(kind, name), init, data, expected_output_shape=shape, **(options or [{}])[0]
    )


def test_causal_lm_task_harness():
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    backbone = DecoderBackbone(
        vocabulary_size=40, num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=12
    )
    config = {"backbone": backbone.get_config() | {}, "head": {"name": "lm"}}
    config["backbone"] = __import__("keras").saving.serialize_keras_object(backbone)
    run_layer_test(
        CausalLM, config, IDS, expected_output_shape=(2, 6, 40), run_mixed_precision=False
    )


@pytest.mark.parametrize("pooling", ["mean", "cls", "last_token"])
def test_sentence_embedding_task_harness(pooling):
    import keras

    from tfllm.models.encoder import EncoderBackbone
    from tfllm.tasks.sentence_embedding import SentenceEmbedder

    backbone = EncoderBackbone(
        vocabulary_size=40, num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=12
    )
    config = {"backbone": keras.saving.serialize_keras_object(backbone), "pooling": pooling}
    out = run_layer_test(
        SentenceEmbedder, config, IDS, expected_output_shape=(2, 16), run_mixed_precision=False
    )
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


# Every task built on `TaskModel`: its backbone kind, its own arguments, its head's default.
TASKS = {
    "causal_lm": ("decoder", {}, "lm"),
    "sft": ("decoder", {}, "lm"),
    "masked_lm": ("encoder", {"special_tokens": {"mask": 4, "pad": 0}}, "lm"),
    "classify": ("encoder", {"labels": ["neg", "pos"]}, "classification"),
    "token_classify": ("encoder", {"labels": ["O", "B", "I"]}, "token_classification"),
    "reward": ("decoder", {}, "scalar"),
    "extractive_qa": ("encoder", {"max_answer_length": 4}, "span"),
    "seq2seq": ("encoder_decoder", {"special_tokens": {"eos": 1}}, "lm"),
    "span_corruption": ("encoder_decoder", {"sentinel_ids": [38, 39], "seed": 3}, "lm"),
    "dpo": ("decoder", {"beta": 0.2, "label_smoothing": 0.1}, "lm"),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_take_their_default_head_and_round_trip(name, tmp_path):
    import keras

    kind, kwargs, default_head = TASKS[name]
    backbone = registry.build(
        "model",
        {"name": kind, "num_layers": 1, "hidden_dim": 16, "num_heads": 2},
        {"vocabulary_size": 40, "max_sequence_length": 12},
    )
    # The config's default head group names the LM head; a task with its own head replaces it.
    task = registry.get("task", name)(backbone, head={"name": "lm"}, **kwargs)
    assert task.head_spec == {"name": default_head}
    assert (task.vocabulary_size, task.max_sequence_length) == (40, 12)
    inputs = (IDS, IDS[:, :4]) if kind == "encoder_decoder" else (IDS,)
    out = keras.ops.convert_to_numpy(task(*inputs))
    path = str(tmp_path / f"{name}.keras")
    task.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(task)
    assert loaded.get_config() == task.get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(*inputs)), out)


LAYER_KINDS = ("positional", "attention", "ffn", "norm", "head", "model")


def test_every_registered_layer_has_a_harness_case():
    covered = {c.split(":")[0] for c in CASES}
    missing = [
        f"{e.kind}/{e.name}"
        for e in registry.list_entries()
        if e.kind in LAYER_KINDS and e.package == "tfllm" and f"{e.kind}/{e.name}" not in covered
    ]
    assert not missing, f"components outside the shared harness: {missing}"


@pytest.mark.parametrize("ffn", ["mlp", "swiglu", "moe"])
def test_zero_residual_init_starts_every_block_as_the_identity(ffn):
    import keras
    import tensorflow as tf

    from tfllm.models.decoder import DecoderBackbone

    args = dict(vocabulary_size=40, num_layers=2, hidden_dim=16, num_heads=4)
    model = DecoderBackbone(**args, ffn={"name": ffn}, zero_residual_init=True)
    names = ("out_proj", "down", "expert_out")
    outputs = [w for w in model.weights if any(n in w.path for n in names)]
    assert len(outputs) >= 4 and all(not np.any(w.numpy()) for w in outputs), outputs
    embedded = model.embed_tokens(IDS, np.arange(6, dtype="int32"))
    np.testing.assert_allclose(model(IDS), model.final_norm(embedded), rtol=1e-6, atol=1e-6)
    # The zeros learn: every output projection gets a gradient that is not zero.
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(model(IDS) * X)
    grads = tape.gradient(loss, [w.value for w in outputs])
    assert all(np.any(g.numpy()) for g in grads if g is not None)
    assert sum(g is not None for g in grads) == len(outputs)
    scaled = DecoderBackbone(**args, scaled_residual_init=True)
    kernels = [w for w in scaled.weights if "kernel" in w.path and any(n in w.path for n in names)]
    assert len(kernels) == 4 and all(np.any(w.numpy()) for w in kernels)
    with pytest.raises(ValueError, match="scaled_residual_init and zero_residual_init"):
        DecoderBackbone(**args, scaled_residual_init=True, zero_residual_init=True)


def test_tied_head_uses_the_embedding():
    import keras

    from tfllm.components.heads.lm import LMHead

    emb = keras.layers.Embedding(40, 16)
    emb.build((None, None))
    head = LMHead(vocabulary_size=40)
    logits = head(X, token_embedding=emb).numpy()
    np.testing.assert_allclose(logits, X @ emb.embeddings.numpy().T, rtol=1e-5, atol=1e-5)
    assert not head.trainable_weights
    with pytest.raises(ValueError, match="token_embedding"):
        head(X)


@pytest.mark.parametrize(
    "kind,name,kwargs,match",
    [
        ("attention", "mha", {"hidden_dim": 16, "num_heads": 4, "num_kv_heads": 3}, "num_kv_heads"),
        ("attention", "mha", {"hidden_dim": 10, "num_heads": 4}, "hidden_dim"),
        ("attention", "mha", {"hidden_dim": 16, "num_heads": 4, "window": 0}, "window"),
        (
            "attention",
            "block_sparse",
            {"hidden_dim": 16, "num_heads": 4, "block_size": 0},
            "block_size",
        ),
        (
            "attention",
            "block_sparse",
            {"hidden_dim": 16, "num_heads": 4, "block_size": 4, "window": 9},
            "window=9",
        ),
        ("ffn", "moe", {"hidden_dim": 16, "intermediate_dim": 8, "top_k": 9}, "top_k"),
        ("ffn", "moe", {"hidden_dim": 16, "intermediate_dim": 8, "expert": "relu"}, "expert"),
        (
            "ffn",
            "moe",
            {"hidden_dim": 16, "intermediate_dim": 8, "capacity_factor": 0},
            "capacity_factor",
        ),
        ("positional", "rope", {"head_dim": 7}, "head_dim"),
        ("positional", "rope", {"head_dim": 8, "scaling_factor": 0.5}, "scaling_factor"),
        (
            "ffn",
            "mlp",
            {"hidden_dim": 8, "intermediate_dim": 8, "activation": "tanhh"},
            "activation",
        ),
        ("norm", "rmsnorm", {"epsilon": 0.0}, "epsilon"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kind, name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        registry.get(kind, name)(**kwargs)


def test_alibi_slopes_match_the_paper():
    from tfllm.components.positional.alibi import alibi_slopes

    np.testing.assert_allclose(alibi_slopes(8), [2 ** -(i + 1) for i in range(8)])
    assert len(alibi_slopes(6)) == 6 and alibi_slopes(6)[:4] == alibi_slopes(4)


def test_rope_rotation_preserves_norms_and_relative_angles():
    from tfllm.components.positional.rope import RotaryPositionalEncoding

    rope = RotaryPositionalEncoding(head_dim=8)
    q = rng.normal(size=(1, 1, 1, 8)).astype("float32")
    k = rng.normal(size=(1, 1, 1, 8)).astype("float32")

    def score(i, j):
        qi = rope.rotate_query(q, np.array([i], "int32")).numpy()
        kj = rope.rotate_key(k, np.array([j], "int32")).numpy()
        return float((qi * kj).sum())

    rotated = rope.rotate_query(q, np.array([5], "int32")).numpy()
    np.testing.assert_allclose(np.linalg.norm(rotated), np.linalg.norm(q), rtol=1e-5)
    assert abs(score(3, 1) - score(10, 8)) < 1e-4  # depends only on i - j


def test_silu_equals_keras_silu_and_avoids_the_fused_swish_pattern():
    import keras
    import tensorflow as tf

    from tfllm.components.ffn.mlp import activate

    x = tf.constant(np.linspace(-30, 30, 2001, dtype="float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = activate(x, "silu"), keras.ops.silu(x)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=3e-6)
    np.testing.assert_allclose(
        tape.gradient(ours, x).numpy(), tape.gradient(theirs, x).numpy(), rtol=1e-5, atol=3e-6
    )
    # Grappler's oneDNN remapper fuses Sigmoid feeding Mul into _MklSwish; the graph holds Tanh.
    graph = tf.function(lambda h: activate(h, "silu")).get_concrete_function(x).graph
    types = {op.type for op in graph.get_operations()}
    assert "Tanh" in types and "Sigmoid" not in types


def test_small_softmax_equals_tf_softmax_masked_rows_included():
    import tensorflow as tf

    from tfllm.components.attention.mha import _MASKED, small_softmax

    scores = rng.normal(size=(2, 9, 1, 40)).astype("float32") * 8
    scores[0, :, :, 30:] = _MASKED  # keys past the cache's filled part
    scores[1, 4] = _MASKED  # a row with every key masked: uniform, as tf.nn.softmax gives
    ours = small_softmax(tf.constant(scores)).numpy()
    np.testing.assert_allclose(ours, tf.nn.softmax(scores, axis=-1).numpy(), atol=1e-7)
    np.testing.assert_allclose(ours[1, 4, 0], np.full(40, 1 / 40), rtol=1e-6)
    assert (ours[0, :, :, 30:] == 0).all()


def test_small_matmul_equals_tf_matmul_and_builds_batch_matmul_v3_for_float32():
    import tensorflow as tf

    from tfllm.components.attention.mha import small_matmul

    q = tf.constant(rng.normal(size=(2, 3, 3, 1, 16)).astype("float32"))
    k = tf.constant(rng.normal(size=(2, 3, 1, 40, 16)).astype("float32"))  # broadcast over 3
    np.testing.assert_allclose(
        small_matmul(q, k, adj_y=True).numpy(),
        tf.matmul(q, k, transpose_b=True).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    probs = tf.constant(rng.random(size=(2, 3, 3, 1, 40)).astype("float32"))
    np.testing.assert_allclose(
        small_matmul(probs, k).numpy(), tf.matmul(probs, k).numpy(), rtol=1e-5, atol=1e-6
    )

    def graph_ops(dtype):
        fn = tf.function(lambda a, b: small_matmul(a, b, adj_y=True))
        graph = fn.get_concrete_function(tf.cast(q, dtype), tf.cast(k, dtype)).graph
        return {op.type for op in graph.get_operations()}

    assert "BatchMatMulV3" in graph_ops(tf.float32)  # Eigen's kernel, not oneDNN's rewrite
    assert "BatchMatMulV3" not in graph_ops(tf.bfloat16)  # other dtypes keep tf.matmul
