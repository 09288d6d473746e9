"""Every plugin component through tfllm's shared harness and decoder properties, exactly as the
built-in components are tested."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm import plugins, registry
from tfllm.components.matrices import FusedMatrices, fused_matrices_of
from tfllm.testing import check_decoder_properties, run_layer_test

rng = np.random.default_rng(0)
X = rng.normal(size=(2, 6, 16)).astype("float32")

CASES = {
    "attention/linear": ({"hidden_dim": 16, "num_heads": 4}, X),
    "attention/linear:chunked": ({"hidden_dim": 16, "num_heads": 4, "chunk_size": 4}, X),
    "attention/linear:bidirectional": ({"hidden_dim": 16, "num_heads": 4, "causal": False}, X),
    "positional/xpos": ({"head_dim": 8, "scale_base": 64.0}, X),
    "norm/scalenorm": ({}, X),
    "head/softcap_lm": ({"vocabulary_size": 11, "softcap": 5.0, "tie_embeddings": False}, X),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_harness(case):
    kind, name = case.split(":")[0].split("/")
    init, data = CASES[case]
    shape = (2, 6, init.get("vocabulary_size", 16))
    run_layer_test(registry.get(kind, name), init, data, expected_output_shape=shape)


def test_the_plugin_loaded_with_its_package_and_api_version():
    found = {s.distribution: s for s in plugins.autoload()}
    assert "tfllm-plugin-example" in found, (
        "tfllm did not discover the plugin: pip install ./plugins/tfllm-plugin-example"
    )
    status = found["tfllm-plugin-example"]
    assert status.loaded and status.api_version == 1, status.error
    assert status.components == [
        "attention/linear",
        "head/softcap_lm",
        "norm/scalenorm",
        "positional/xpos",
    ]
    for component in status.components:
        assert registry.get_entry(*component.split("/")).package == "tfllm-plugin-example"


@pytest.mark.parametrize(
    "specs",
    [
        {"attention": {"name": "linear", "chunk_size": 4}, "positional": {"name": "xpos"}},
        {"attention": {"name": "linear"}, "positional": {"name": "learned"}},
        {"positional": {"name": "xpos", "scale_base": 8.0}},
        {"norm": {"name": "scalenorm"}, "head": {"name": "softcap_lm", "softcap": 2.0}},
    ],
    ids=["linear+xpos", "linear+learned", "mha+xpos", "scalenorm+softcap"],
)
def test_decoder_properties(specs):
    check_decoder_properties(**specs)


def test_linear_attention_equals_the_masked_quadratic_form():
    from tfllm_plugin_example import LinearAttention

    layer = LinearAttention(hidden_dim=16, num_heads=4, chunk_size=4)
    x = rng.normal(size=(2, 11, 16)).astype("float32")  # 11 tokens: a ragged last chunk
    out = layer(x).numpy()
    q, k, v = np.split(layer.qkv_proj(x).numpy(), 3, axis=-1)

    def heads(a):
        return a.reshape(2, 11, 4, 4).transpose(0, 2, 1, 3)

    phi = lambda a: np.where(a > 0, a + 1.0, np.exp(a))  # noqa: E731 (elu + 1)
    w = np.einsum("bhtd,bhsd->bhts", phi(heads(q)), phi(heads(k))) * np.tril(np.ones((11, 11)))
    ref = np.einsum("bhts,bhsd->bhtd", w, heads(v)) / (w.sum(-1, keepdims=True) + 1e-6)
    ref = layer.out_proj(ref.transpose(0, 2, 1, 3).reshape(2, 11, 16).astype("float32"))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)
    # Chunking does not change the result.
    layer.chunk_size = 64
    np.testing.assert_allclose(layer(x).numpy(), out, rtol=1e-5, atol=1e-6)
    # q, k and v are declared as separate matrices for Muon (tfllm.components.matrices).
    declared = fused_matrices_of(layer)
    assert declared == {layer.qkv_proj.kernel.path: FusedMatrices((16, 16, 16), head_width=4)}


def test_linear_attention_refuses_an_attention_bias():
    from tfllm.models.decoder import DecoderBackbone

    backbone = DecoderBackbone(
        vocabulary_size=20,
        num_layers=1,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=8,
        attention={"name": "linear"},
        positional={"name": "none"},
    )
    assert backbone(np.zeros((1, 4), "int32")).shape == (1, 4, 16)
    with_alibi = DecoderBackbone(
        vocabulary_size=20,
        num_layers=1,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=8,
        attention={"name": "linear"},
        positional={"name": "alibi"},
    )
    with pytest.raises(ValueError, match="cannot apply the additive attention bias"):
        with_alibi(np.zeros((1, 4), "int32"))


def test_xpos_scores_depend_only_on_distance_and_decay():
    xpos = registry.get("positional", "xpos")(head_dim=8, scale_base=4.0)
    q = np.ones((1, 1, 1, 8), "float32")

    def score(n, m):
        qn = xpos.rotate_query(q, tf.constant([n]))
        km = xpos.rotate_key(q, tf.constant([m]))
        return float(tf.reduce_sum(qn * km))

    assert score(10, 7) == pytest.approx(score(3, 0), rel=1e-5)
    assert score(20, 0) < score(5, 0) < score(0, 0)


def test_scalenorm_output_norm_is_the_learned_scale():
    norm = registry.get("norm", "scalenorm")()
    out = norm(X).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 4.0, rtol=1e-5)  # sqrt(16)
    with pytest.raises(ValueError, match="epsilon must be positive"):
        registry.get("norm", "scalenorm")(epsilon=0.0)


def test_softcap_bounds_logits_and_keeps_their_order():
    head = registry.get("head", "softcap_lm")(vocabulary_size=11, softcap=2.0, tie_embeddings=False)
    x = 50 * rng.normal(size=(1, 3, 8)).astype("float32")
    capped = head(x).numpy()
    plain = x @ head.kernel.numpy()
    assert np.abs(capped).max() < 2.0
    np.testing.assert_array_equal(np.argsort(capped, -1), np.argsort(plain, -1))
