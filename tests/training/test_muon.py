"""Muon over fused and stacked weights: each matrix orthogonalized on its own."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.components.attention.mha import MultiHeadAttention
from tfllm.components.ffn.moe import MixtureOfExperts
from tfllm.components.ffn.swiglu import SwiGLU
from tfllm.components.matrices import FusedMatrices, fused_matrices_of
from tfllm.testing import run_layer_test
from tfllm.training.muon import Muon
from tfllm.training.optimizers import muon

RNG = np.random.default_rng(0)
GRADS = [RNG.normal(size=(8, 12)).astype("float32") for _ in range(3)]


def _steps(opt, variables, grads_per_step):
    for grads in grads_per_step:
        opt.apply(grads, variables)
    return [v.numpy() for v in variables]


@pytest.mark.parametrize(
    "layout,per_head",
    [
        (FusedMatrices((6, 3, 3)), False),  # unequal blocks (GQA): split and concatenated
        (FusedMatrices((4, 4, 4)), False),  # equal blocks (multi-head attention)
        (FusedMatrices((6, 3, 3), head_width=3), True),  # each head of q, k, v alone
    ],
    ids=["parts", "equal-parts", "per-head"],
)
def test_a_fused_weight_moves_as_its_blocks_would_each_on_keras_muon(layout, per_head):
    w0 = RNG.normal(size=(8, 12)).astype("float32")
    fused = keras.Variable(w0, name="qkv")
    opt = Muon(learning_rate=0.05, fused_matrices={fused.path: layout}, per_head=per_head)
    (got,) = _steps(opt, [fused], [[g] for g in GRADS])

    cuts = list(np.cumsum(layout.blocks(per_head))[:-1])
    parts = [keras.Variable(p) for p in np.split(w0, cuts, axis=1)]
    reference = keras.optimizers.Muon(learning_rate=0.05)
    want = _steps(reference, parts, [np.split(g, cuts, axis=1) for g in GRADS])
    np.testing.assert_allclose(got, np.concatenate(want, axis=1), atol=1e-5)

    whole = keras.Variable(w0)
    (unsplit,) = _steps(keras.optimizers.Muon(learning_rate=0.05), [whole], [[g] for g in GRADS])
    assert np.abs(unsplit - got).max() > 1e-2  # splitting is not a no-op


def test_undeclared_weights_move_exactly_as_on_keras_muon():
    w0 = RNG.normal(size=(8, 12)).astype("float32")
    ours, theirs = keras.Variable(w0), keras.Variable(w0)
    (a,) = _steps(Muon(learning_rate=0.05), [ours], [[g] for g in GRADS])
    (b,) = _steps(keras.optimizers.Muon(learning_rate=0.05), [theirs], [[g] for g in GRADS])
    np.testing.assert_array_equal(a, b)


def test_a_stacked_weight_is_on_muon_one_matrix_per_expert():
    w0 = RNG.normal(size=(3, 8, 4)).astype("float32")
    grads = [RNG.normal(size=w0.shape).astype("float32") for _ in range(2)]
    stacked = keras.Variable(w0, name="expert_in")
    layout = FusedMatrices((2, 2), stacked=True)  # each expert: gate and up
    opt = Muon(learning_rate=0.05, fused_matrices={stacked.path: layout})
    (got,) = _steps(opt, [stacked], [[g] for g in grads])
    assert opt.adam_velocities == [None]  # Keras's Muon would put a 3-D weight on AdamW
    for e in range(3):
        alone = [keras.Variable(p) for p in np.split(w0[e], 2, axis=1)]
        reference = keras.optimizers.Muon(learning_rate=0.05)
        want = _steps(reference, alone, [np.split(g[e], 2, axis=1) for g in grads])
        np.testing.assert_allclose(got[e], np.concatenate(want, axis=1), atol=1e-5)

    excluded = keras.Variable(w0, name="expert_in")
    opt = Muon(exclude_layers=["expert"], fused_matrices={excluded.path: layout})
    assert opt._should_use_adamw(excluded)  # adamw_for still wins


def test_layers_declare_their_fused_matrices_and_the_harness_checks_them():
    x = np.zeros((2, 5, 16), "float32")
    gqa = MultiHeadAttention(hidden_dim=16, num_heads=4, num_kv_heads=2)
    gqa(x)
    assert fused_matrices_of(gqa) == {
        gqa.qkv_proj.kernel.path: FusedMatrices((16, 8, 8), head_width=4)
    }
    cross = MultiHeadAttention(hidden_dim=16, num_heads=4, cross=True)
    cross(x, context=x)
    assert fused_matrices_of(cross) == {
        cross.kv_proj.kernel.path: FusedMatrices((16, 16), head_width=4)
    }
    ffn = SwiGLU(hidden_dim=16, intermediate_dim=24)
    ffn(x)
    assert fused_matrices_of(ffn) == {ffn.gate_up.kernel.path: FusedMatrices((24, 24))}
    moe = MixtureOfExperts(hidden_dim=16, intermediate_dim=24, num_experts=4, top_k=2)
    moe(x)
    assert fused_matrices_of(moe) == {
        moe.expert_in.path: FusedMatrices((24, 24), stacked=True),
        moe.expert_out.path: FusedMatrices((16,), stacked=True),
    }

    # A LoRA-adapted kernel is computed, not a variable: nothing of it is Muon's to split.
    ffn.gate_up.enable_lora(2)
    assert fused_matrices_of(ffn) == {}

    @keras.saving.register_keras_serializable(package="test_muon")
    class Misdeclared(SwiGLU):
        def fused_matrices(self):
            return [(self.gate_up.kernel, FusedMatrices((24, 23)))]

    with pytest.raises(AssertionError, match=r"gate_up/kernel: column blocks \(24, 23\)"):
        run_layer_test(Misdeclared, {"hidden_dim": 16, "intermediate_dim": 24}, x)
    with pytest.raises(ValueError, match="must be 3-D"):
        FusedMatrices((48,), stacked=True).check((16, 48), "w")
    with pytest.raises(ValueError, match="not whole heads of 5"):
        FusedMatrices((8, 8), head_width=5).check((16, 16), "w")


def test_split_fused_false_is_keras_muon_over_whole_kernels():
    layouts = {"block/qkv_proj/kernel": FusedMatrices((4, 4, 4))}
    assert muon(1e-3, fused_matrices=layouts).fused_matrices == layouts
    assert muon(1e-3, split_fused=False, fused_matrices=layouts).fused_matrices == {}
    with pytest.raises(ValueError, match="split_fused must be true or false"):
        muon(1e-3, split_fused="yes")
    with pytest.raises(ValueError, match="needs split_fused=true"):
        muon(1e-3, split_fused=False, per_head=True)
    assert muon(1e-3, per_head=True).per_head


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_momentum_warmup_ramps_linearly_then_holds_in_eager_and_graph(fused):
    w0 = RNG.normal(size=(8, 12)).astype("float32")
    grads = GRADS + GRADS[:1]
    layout = FusedMatrices((4, 4, 4))
    cuts = [4, 8] if fused else []

    def reference():  # Keras's Muon, its momentum set by hand before each step: 0.5, 0.7, 0.9, 0.9
        parts = [keras.Variable(p) for p in np.split(w0, cuts, axis=1)]
        opt = keras.optimizers.Muon(learning_rate=0.05, momentum=0.5)
        for mu, g in zip([0.5, 0.7, 0.9, 0.9], grads, strict=True):
            opt.momentum = mu
            opt.apply(np.split(g, cuts, axis=1), parts)
        return np.concatenate([p.numpy() for p in parts], axis=1)

    want = reference()

    def run(graph, **warmup):
        w = keras.Variable(w0, name="qkv")
        layouts = {w.path: layout} if fused else None
        opt = Muon(learning_rate=0.05, momentum=0.9, fused_matrices=layouts, **warmup)
        opt.build([w])

        def apply(g):
            opt.apply([g], [w])

        step = tf.function(apply) if graph else apply
        for g in grads:
            step(tf.constant(g))
        return w.numpy()

    for graph in (False, True):
        got = run(graph, momentum_warmup_steps=2, initial_momentum=0.5)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"graph={graph}")
    held = run(graph=False)
    assert np.abs(held - want).max() > 1e-3  # the warmup changes the trajectory
    with pytest.raises(ValueError, match="initial_momentum must be in"):
        muon(1e-3, initial_momentum=1.0)
    with pytest.raises(ValueError, match="momentum_warmup_steps must be >= 0"):
        muon(1e-3, momentum_warmup_steps=-1)


def test_the_config_round_trips_through_json_and_the_copy_moves_the_same():
    import json

    w0 = RNG.normal(size=(8, 12)).astype("float32")
    layout = FusedMatrices((6, 3, 3), head_width=3)
    opt = Muon(
        learning_rate=0.05,
        fused_matrices={"qkv": layout},
        per_head=True,
        momentum_warmup_steps=2,
        initial_momentum=0.6,
    )
    config = json.loads(json.dumps(keras.optimizers.serialize(opt)))
    copy = keras.optimizers.deserialize(config)
    assert type(copy) is Muon
    assert copy.fused_matrices == {"qkv": layout}
    assert (copy.per_head, copy.momentum_warmup_steps, copy.initial_momentum) == (True, 2, 0.6)
    moved = []
    for o in (opt, copy):
        w = keras.Variable(w0, name="qkv")
        o.fused_matrices = {w.path: o.fused_matrices["qkv"]}
        moved.append(_steps(o, [w], [[g] for g in GRADS])[0])
    np.testing.assert_array_equal(moved[0], moved[1])
    keras_muon = keras.optimizers.Muon(learning_rate=0.05)
    (whole,) = _steps(keras_muon, [keras.Variable(w0)], [[g] for g in GRADS])
    assert np.abs(whole - moved[0]).max() > 1e-2  # the layout and the warmup took effect


def _normuon_by_hand(w0, grads, blocks, lr=0.05, mu=0.95, beta=0.95, rms=0.2, eps=1e-8):
    """NorMuon written out with numpy around Keras's Newton–Schulz: Nesterov momentum, each
    block orthogonalized, each column divided by the root of its running mean square, each
    block back at its orthogonalized Frobenius norm, then Keras's RMS matching."""
    ns = keras.optimizers.Muon().zeropower_via_newtonschulz5
    cuts = list(np.cumsum(blocks)[:-1])
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros((1, w0.shape[1]), "float32")
    for g in grads:
        m = mu * m + g
        ortho = [np.asarray(ns(p, 5)) for p in np.split(g + mu * m, cuts, axis=1)]
        o = np.concatenate(ortho, axis=1)
        v = beta * v + (1 - beta) * np.mean(o**2, axis=0, keepdims=True)
        scaled = np.split(o / (np.sqrt(v) + eps), cuts, axis=1)
        update = [
            s * np.linalg.norm(p) / np.linalg.norm(s) * np.sqrt(max(p.shape)) * rms
            for p, s in zip(ortho, scaled, strict=True)
        ]
        w = w - lr * np.concatenate(update, axis=1)
    return w


@pytest.mark.parametrize(
    "blocks",
    [(12,), (4, 4, 4), (6, 3, 3)],
    ids=["plain", "equal-blocks-batched", "unequal-blocks-one-by-one"],
)
def test_neuron_norm_is_normuon_in_eager_and_graph(blocks):
    w0 = RNG.normal(size=(8, 12)).astype("float32")
    # columns of very different scales: NorMuon evens out what each neuron moves
    grads = [g * np.linspace(0.1, 3.0, 12, dtype="float32") for g in GRADS]
    want = _normuon_by_hand(w0, grads, blocks)

    def run(graph, neuron_norm=True):
        w = keras.Variable(w0, name="qkv")
        layouts = {w.path: FusedMatrices(blocks)} if len(blocks) > 1 else None
        opt = Muon(
            learning_rate=0.05, weight_decay=0.0, fused_matrices=layouts, neuron_norm=neuron_norm
        )
        opt.build([w])
        (moment,) = [x for x in opt.variables if "neuron_moment" in x.path]
        assert tuple(moment.shape) == (1, 12)

        def apply(g):
            opt.apply([g], [w])

        step = tf.function(apply) if graph else apply
        for g in grads:
            step(tf.constant(g))
        return w.numpy(), moment.numpy()

    for graph in (False, True):
        got, moment = run(graph)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"graph={graph}")
        assert (moment > 0).all()
    # One step: every column moves by the same RMS within a block, whatever its gradient's scale.
    w = keras.Variable(w0, name="qkv")
    Muon(learning_rate=0.05, weight_decay=0.0, neuron_norm=True).apply([grads[0]], [w])
    column_rms = np.sqrt(np.mean((w.numpy() - w0) ** 2, axis=0))
    np.testing.assert_allclose(column_rms, column_rms.mean(), rtol=1e-4)
    plain = keras.Variable(w0, name="qkv")
    Muon(learning_rate=0.05, weight_decay=0.0).apply([grads[0]], [plain])
    plain_rms = np.sqrt(np.mean((plain.numpy() - w0) ** 2, axis=0))
    assert plain_rms.max() / plain_rms.min() > 1.5  # Muon alone leaves them unequal
    # ... and the whole update keeps plain Muon's size (the RMS matching is untouched)
    np.testing.assert_allclose(
        np.linalg.norm(w.numpy() - w0), np.linalg.norm(plain.numpy() - w0), rtol=1e-4
    )


def test_neuron_norm_settings_are_checked_and_kept_in_the_config():
    with pytest.raises(ValueError, match="neuron_norm must be true or false"):
        muon(1e-3, neuron_norm="on")
    with pytest.raises(ValueError, match="neuron_beta_2 must be in"):
        muon(1e-3, neuron_norm=True, neuron_beta_2=1.0)
    opt = muon(1e-3, neuron_norm=True, neuron_beta_2=0.9)
    copy = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert (copy.neuron_norm, copy.neuron_beta_2) == (True, 0.9)
    # only Muon's matrices get a running mean square per neuron; AdamW's variables none
    variables = [keras.Variable(np.ones((4, 6), "float32")), keras.Variable(np.ones(6, "float32"))]
    opt.build(variables)
    moments = [x for x in opt.variables if "neuron_moment" in x.path]
    assert [tuple(x.shape) for x in moments] == [(1, 6)]


@pytest.mark.parametrize("neuron_norm", [False, True], ids=["muon", "normuon"])
def test_rms_rate_zero_keeps_the_raw_orthogonalized_update(neuron_norm):
    w0 = RNG.normal(size=(8, 12)).astype("float32")
    raw = keras.optimizers.Muon(learning_rate=0.05, weight_decay=0.0, rms_rate=None)
    (want,) = _steps(raw, [keras.Variable(w0)], [[GRADS[0]]])
    opt = muon(0.05, rms_rate=0.0, weight_decay=0.0, neuron_norm=neuron_norm)
    (got,) = _steps(opt, [keras.Variable(w0, name="qkv")], [[GRADS[0]]])
    assert np.abs(got - w0).max() > 1e-3  # the matrix moved
    if not neuron_norm:
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:  # the same size of step, spread evenly over the neurons
        np.testing.assert_allclose(np.linalg.norm(got - w0), np.linalg.norm(want - w0), rtol=1e-4)
    with pytest.raises(ValueError, match="rms_rate must be >= 0"):
        muon(1e-3, rms_rate=-0.2)
