"""Mixture-of-experts FFN and block-sparse attention: exact against plain references, in every
family, in the decode cache and in the trainer."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm import registry
from tfllm.components.attention.block_sparse import BlockSparseAttention
from tfllm.components.attention.mha import MultiHeadAttention
from tfllm.components.ffn.moe import MixtureOfExperts

rng = np.random.default_rng(0)
MOE = {"name": "moe", "num_experts": 4, "top_k": 2}


def _silu(a):
    return a / (1 + np.exp(-a))


def test_moe_equals_a_token_by_token_loop():
    moe = MixtureOfExperts(hidden_dim=8, intermediate_dim=4, num_experts=4, top_k=2)
    x = rng.normal(size=(3, 5, 8)).astype("float32")
    out = moe(x).numpy().reshape(-1, 8)
    tokens = x.reshape(-1, 8)
    probs = tf.nn.softmax(tokens @ moe.router.numpy()).numpy()
    w_in, w_out = moe.expert_in.numpy(), moe.expert_out.numpy()
    for n, token in enumerate(tokens):
        chosen = np.argsort(-probs[n])[:2]
        gates = probs[n, chosen] / probs[n, chosen].sum()
        expected = np.zeros(8, "float32")
        for gate, e in zip(gates, chosen, strict=True):
            gate_h, up = np.split(token @ w_in[e], 2)
            expected += gate * (_silu(gate_h) * up) @ w_out[e]
        np.testing.assert_allclose(out[n], expected, atol=1e-5)


def test_moe_capacity_drops_tokens_only_in_training():
    moe = MixtureOfExperts(
        hidden_dim=8, intermediate_dim=4, num_experts=2, top_k=1, capacity_factor=0.5
    )
    keras.utils.set_random_seed(1)
    x = rng.normal(size=(1, 16, 8)).astype("float32")
    moe.build(x.shape)
    moe.router.assign(np.zeros((8, 2), "float32"))  # every token ties: all go to expert 0
    trained = moe(x, training=True).numpy()[0]
    # Load balancing: all choices on one expert with uniform probabilities -> E * 1 * 1/2 = 1.
    assert len(moe.losses) == 1
    np.testing.assert_allclose(float(moe.losses[0]), 0.01 * 1.0, rtol=1e-6)
    inferred = moe(x).numpy()[0]
    assert not moe.losses  # no auxiliary loss outside training
    # capacity = ceil(0.5 * 16 * 1 / 2) = 4 slots: tokens 0..3 served, the rest dropped (zero).
    assert np.abs(trained[:4]).min() > 0
    np.testing.assert_array_equal(trained[4:], 0.0)
    np.testing.assert_allclose(trained[:4], inferred[:4], atol=1e-6)
    assert np.abs(inferred[4:]).min() > 0  # no drops outside training


def _encoder_decoder(ffn):
    from tfllm.models.encoder_decoder import EncoderDecoderBackbone
    from tfllm.tasks.seq2seq import Seq2SeqLM

    keras.utils.set_random_seed(0)
    backbone = EncoderDecoderBackbone(
        vocabulary_size=30,
        num_layers=2,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=24,
        positional={"name": "relative", "num_buckets": 8},
        ffn=ffn,
    )
    return Seq2SeqLM(backbone, special_tokens={"pad": 0, "eos": 1})


def test_moe_in_an_encoder_decoder_decodes_with_the_cache_as_it_recomputes():
    model = _encoder_decoder(MOE)
    src = rng.integers(3, 30, size=(2, 7)).astype("int32")
    dec = rng.integers(3, 30, size=(2, 8)).astype("int32")
    full = model(src, dec).numpy()
    bound = model.bind(src, np.ones_like(src))
    cache = bound.init_cache(2, 10)
    logits, cache = bound.call_with_cache(dec[:, :3], cache, 0)
    steps = [logits.numpy()]
    for i in range(3, 8):
        logits, cache = bound.call_with_cache(dec[:, i : i + 1], cache, i)
        steps.append(logits.numpy())
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4


def test_moe_in_an_encoder_ignores_padding_neighbours():
    from tfllm.models.encoder import EncoderBackbone

    keras.utils.set_random_seed(0)
    encoder = EncoderBackbone(
        vocabulary_size=30,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=16,
        ffn=MOE,
    )
    ids = rng.integers(3, 30, size=(2, 8)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    base = encoder(ids, padding_mask=mask).numpy()
    noise = ids.copy()
    noise[1, 5:] = 7
    changed = encoder(noise, padding_mask=mask).numpy()
    np.testing.assert_allclose(changed[1, :5], base[1, :5], atol=1e-5)


def test_the_trainer_adds_the_load_balancing_loss(tiny_corpus, tmp_path):
    from train_configs import train_config

    from tfllm.training.trainer import Trainer

    routers = {}
    for weight in (0.0, 10.0):
        cfg = train_config(
            tiny_corpus,
            "ffn=moe",
            "ffn.num_experts=4",
            f"ffn.aux_loss_weight={weight}",
            "trainer.max_steps=3",
            "trainer.callbacks=[]",
            "trainer.eval_every=100",
        )
        trainer = Trainer(cfg, str(tmp_path / str(weight)))
        trainer.fit()
        routers[weight] = [w.numpy() for w in trainer.model.weights if "router" in w.path]
    # Same seed and batches: only the auxiliary loss can move the routers apart.
    assert len(routers[0.0]) == 2
    assert max(np.abs(a - b).max() for a, b in zip(*routers.values(), strict=True)) > 1e-4


POSITIONALS = ["none", "alibi", "relative", "rope"]


def _positional(name, causal):
    spec = {"name": name}
    if name == "relative":
        spec.update(num_buckets=8)
    layer = registry.build(
        "positional", spec, {"num_heads": 4, "head_dim": 4, "hidden_dim": 16, "causal": causal}
    )
    layer.build((None, None, 16))
    return layer


@pytest.mark.parametrize(
    "causal,global_blocks,window,positional",
    [
        (c, g, w, p)
        for (c, g, w), p in itertools.product(
            [(True, 0, None), (True, 1, 3), (False, 1, None), (False, 0, 3)], POSITIONALS
        )
    ],
)
def test_blocked_attention_equals_the_dense_masked_pattern(
    causal, global_blocks, window, positional
):
    keras.utils.set_random_seed(0)
    attn = BlockSparseAttention(
        hidden_dim=16,
        num_heads=4,
        num_kv_heads=2,
        block_size=3,
        local_blocks=1,
        global_blocks=global_blocks,
        window=window,
        causal=causal,
    )
    pos = _positional(positional, causal)
    x = rng.normal(size=(2, 10, 16)).astype("float32")  # 10 = 3 blocks of 3 + 1: padding too
    mask = np.ones((2, 10), bool)
    mask[1, 7:] = False
    blocked = attn(x, padding_mask=mask, positional=pos).numpy()
    # The reference: mha's dense (T, T) computation masked by the block pattern `allowed()`.
    dense = MultiHeadAttention.call(attn, x, padding_mask=mask, positional=pos).numpy()
    np.testing.assert_allclose(blocked[0], dense[0], atol=1e-5)
    np.testing.assert_allclose(blocked[1, :7], dense[1, :7], atol=1e-5)


def test_allowed_pattern_is_local_plus_global():
    attn = BlockSparseAttention(
        hidden_dim=16, num_heads=4, block_size=2, local_blocks=1, global_blocks=1
    )
    pattern = attn.allowed(tf.range(8), tf.range(8)).numpy()
    q, k = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    expected = (k <= q) & ((q // 2 - k // 2 <= 1) | (k // 2 < 1))
    np.testing.assert_array_equal(pattern, expected)


def test_local_attention_equals_mha_with_the_same_window():
    keras.utils.set_random_seed(0)
    local = BlockSparseAttention(hidden_dim=16, num_heads=4, block_size=5, window=5)
    dense = MultiHeadAttention(hidden_dim=16, num_heads=4, window=5)
    x = rng.normal(size=(2, 23, 16)).astype("float32")
    local.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(local.get_weights())
    np.testing.assert_allclose(local(x).numpy(), dense(x).numpy(), atol=1e-5)


def test_a_block_sparse_model_never_builds_a_t_by_t_score_matrix():
    from tfllm.models.decoder import DecoderBackbone
    from tfllm.tasks.causal_lm import CausalLM

    lm = CausalLM(
        DecoderBackbone(
            vocabulary_size=37,
            num_layers=1,
            hidden_dim=16,
            num_heads=2,
            max_sequence_length=512,
            positional={"name": "rope"},
            attention={"name": "block_sparse", "block_size": 16, "window": 16},
        )
    )
    graph = (
        tf.function(lambda x: lm(x)).get_concrete_function(tf.TensorSpec((1, 512), tf.int32)).graph
    )
    sizes = [
        int(np.prod(t.shape.as_list()))
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.is_fully_defined()
    ]
    assert max(sizes) < 512 * 512  # the largest is (1, 2, 32 blocks, 16, 32) scores


# ----- int8 quantization and magnitude pruning ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A small trained run (Llama-style: rope, rmsnorm, swiglu, tied head)."""
    from train_configs import train_config

    from tfllm.training.trainer import Trainer

    root = tmp_path_factory.mktemp("compression")
    corpus = root / "corpus.txt"
    corpus.write_text(
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
        "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n" * 20,
        encoding="utf-8",
    )
    cfg = train_config(
        str(corpus),
        "model=llama_tiny",
        "trainer.max_steps=60",
        "trainer.callbacks=[]",
        "trainer.eval_every=60",
        "schedule.peak_learning_rate=3e-3",
    )
    Trainer(cfg, str(root / "run")).fit()
    return root, root / "run"


def test_int8_quantization_keeps_logits_and_cuts_weight_bytes(tiny_run):
    from tfllm.compression.quantize import quantize_model, weight_bytes
    from tfllm.runs import load_run

    model, _, _ = load_run(str(tiny_run[1]))
    ids = rng.integers(0, model.vocabulary_size, (2, 16)).astype("int32")
    before, size = model(ids).numpy(), weight_bytes(model)
    layers = quantize_model(model)
    after = model(ids).numpy()
    assert any("token_embedding" in p for p in layers) and any("qkv_proj" in p for p in layers)
    assert size / weight_bytes(model) > 3.5  # every matrix is int8; norms stay float
    # The tied head reads the int8 embedding through its scales: logits stay close.
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
    np.testing.assert_array_equal(after.argmax(-1)[:, -4:], before.argmax(-1)[:, -4:])


# Out of the default run (its time budget): int8 logits and weight bytes are checked by
# test_int8_quantization_keeps_logits_and_cuts_weight_bytes.
@pytest.mark.slow
def test_quantized_run_reloads_exactly_and_refuses_a_second_pass(tiny_run):
    from tfllm.commands.compress import quantize_run
    from tfllm.compression.quantize import quantize_model
    from tfllm.registry import ConfigError
    from tfllm.runs import load_run

    root, run = tiny_run
    out = root / "int8"
    done = quantize_run(str(run), str(out), activations="dynamic")
    assert done["bytes_before"] / done["bytes_after"] > 3.5
    reloaded, _, cfg = load_run(str(out))
    assert cfg["quantization"] == {"mode": "int8", "activations": "dynamic"}
    assert {w.dtype for w in reloaded.weights if w.path.endswith("qkv_proj/kernel")} == {"int8"}
    fresh, _, _ = load_run(str(run))
    quantize_model(fresh, activations="dynamic")
    ids = rng.integers(0, fresh.vocabulary_size, (2, 10)).astype("int32")
    np.testing.assert_array_equal(reloaded(ids).numpy(), fresh(ids).numpy())
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_run(str(out), str(root / "again"))
    with pytest.raises(FileExistsError, match="overwrite=true"):
        quantize_run(str(run), str(out))
    with pytest.raises(ConfigError, match="quantization.activations"):
        quantize_run(str(run), str(root / "bad"), activations="int4")


def test_a_bf16_run_holds_half_the_bytes_and_decodes_like_fp32(tiny_run, tmp_path):
    import keras

    from tfllm.commands.compress import quantize_run
    from tfllm.compression.quantize import weight_bytes
    from tfllm.generation.decoder import GenerationConfig, Generator
    from tfllm.registry import ConfigError
    from tfllm.runs import load_run

    root, run = tiny_run
    done = quantize_run(str(run), str(tmp_path / "bf16"), mode="bf16")
    fp32, tokenizer, _ = load_run(str(run))
    bf16, _, cfg = load_run(str(tmp_path / "bf16"))
    assert cfg["quantization"] == {"mode": "bf16"}
    assert keras.config.dtype_policy().name == "float32"  # the build's policy did not leak
    assert {w.dtype for w in bf16.weights} == {"bfloat16"}
    assert done["mode"] == "bf16" and done["weights"] == len(bf16.weights)
    assert done["bytes_before"] == weight_bytes(fp32) == 2 * weight_bytes(bf16)
    for a, b in zip(fp32.weights, bf16.weights, strict=True):  # rounded, not retrained
        np.testing.assert_array_equal(tf.cast(tf.cast(a, "bfloat16"), "float32"), b.numpy())
    ids = rng.integers(0, fp32.vocabulary_size, (2, 16)).astype("int32")
    want, got = fp32(ids).numpy(), bf16(ids).numpy()
    assert got.dtype == np.float32  # logits come out float32 for the loss and for sampling
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    np.testing.assert_array_equal(got.argmax(-1)[:, -4:], want.argmax(-1)[:, -4:])
    # The KV-cached loop, in graph mode (what exports run) and under XLA, on bfloat16 weights.
    # fp32's greedy continuation by recomputation, against the bf16 loop's.
    reference = tokenizer.encode_one("BERNARDO:\nWho")
    for _ in range(8):
        reference.append(int(fp32(np.array([reference], "int32")).numpy()[0, -1].argmax()))
    config = GenerationConfig(max_new_tokens=8)
    for jit in (False, True):
        generator = Generator(bf16, tokenizer, jit_compile=jit)
        buf, plens, lens = generator.generate_ids([reference[:-8]], config)
        assert lens[0] - plens[0] >= 3  # (a stop token may end it before 8)
        np.testing.assert_array_equal(buf[0, : lens[0]], reference[: lens[0]])
    with pytest.raises(ConfigError, match="quantization.activations"):
        quantize_run(str(run), str(root / "bad"), activations="dynamic", mode="bf16")
    with pytest.raises(ConfigError, match="quantization.mode"):
        quantize_run(str(run), str(root / "bad"), mode="fp8")


def test_magnitude_masks_zero_exactly_the_smallest_globally_or_per_layer():
    from tfllm.compression.prune import magnitude_masks

    a = np.arange(1, 11, dtype="float32").reshape(2, 5)  # 1..10
    b = -np.arange(11, 15, dtype="float32").reshape(2, 2)  # -11..-14
    glob = magnitude_masks([a, b], 0.5, "global")  # 7 of 14: 1..7 go
    np.testing.assert_array_equal(glob[0].ravel(), [0] * 7 + [1] * 3)
    np.testing.assert_array_equal(glob[1], np.ones((2, 2)))
    per = magnitude_masks([a, b], 0.5, "layer")  # half of each
    np.testing.assert_array_equal(per[0].ravel(), [0] * 5 + [1] * 5)
    np.testing.assert_array_equal(per[1].ravel(), [0, 0, 1, 1])  # |-11|, |-12| go


def test_one_shot_pruning_zeroes_each_weight_to_the_sparsity(tiny_run):
    from tfllm.commands.compress import prune_run
    from tfllm.compression.prune import sparsity_of
    from tfllm.runs import load_run

    root, run = tiny_run
    one_shot = prune_run(str(run), str(root / "p70"), sparsity=0.7, scope="layer")
    assert one_shot["sparsity"] == pytest.approx(0.7, abs=1e-3)
    pruned, _, _ = load_run(str(root / "p70"))
    _, per_layer = sparsity_of(pruned)
    assert all(abs(s - 0.7) < 0.01 for s in per_layer.values())  # `layer`: each weight alone


# Out of the default run (its time budget): one-shot pruning is checked by
# test_one_shot_pruning_zeroes_each_weight_to_the_sparsity.
@pytest.mark.slow
def test_pruned_fine_tuning_keeps_the_zeros_and_recovers(tiny_run):
    from tfllm.commands.compress import prune_run
    from tfllm.compression.prune import sparsity_of
    from tfllm.runs import load_run
    from tfllm.training.trainer import Trainer

    root, run = tiny_run
    prune_run(str(run), str(root / "p70probe"), sparsity=0.7, scope="layer")
    _, _, cfg = load_run(str(root / "p70probe"))
    cfg = {k: v for k, v in cfg.items() if k != "pruning"}
    before = Trainer({**cfg, "init_from": str(root / "p70probe")}, str(root / "probe")).evaluate()

    tuned = prune_run(str(run), str(root / "p70ft"), 0.7, "layer", None, 30, 1e-3)
    model, _, _ = load_run(str(root / "p70ft"))
    total, per_layer = sparsity_of(model)
    assert total == pytest.approx(0.7, abs=1e-3)  # Adam and weight decay never revived a zero
    assert all(abs(s - 0.7) < 0.01 for s in per_layer.values())
    assert tuned["val_loss"] < before["val_loss"] - 0.05  # fine-tuning recovers

    # Muon's orthogonalized update is dense, masked gradient or not: the zeros still stay.
    overrides = {"optimizer": {"name": "muon"}}
    prune_run(str(run), str(root / "p70muon"), 0.7, "layer", None, 5, 1e-3, overrides=overrides)
    model, _, cfg = load_run(str(root / "p70muon"))
    assert cfg["optimizer"]["name"] == "muon"
    assert sparsity_of(model)[0] == pytest.approx(0.7, abs=1e-3)
