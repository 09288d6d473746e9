"""The encoder backbone attends both ways, and padding never leaks into real tokens."""

import numpy as np
import pytest

from tfllm.models.encoder import EncoderBackbone


@pytest.fixture(scope="module")
def encoder():
    return EncoderBackbone(
        vocabulary_size=30,
        num_layers=2,
        hidden_dim=16,
        num_heads=4,
        max_sequence_length=16,
        type_vocabulary_size=2,
        embedding_norm=True,
    )


def test_every_position_sees_the_future(encoder):
    ids = np.random.default_rng(0).integers(0, 30, size=(1, 8)).astype("int32")
    base = encoder(ids).numpy()
    changed = ids.copy()
    changed[0, -1] = (changed[0, -1] + 1) % 30
    out = encoder(changed).numpy()
    assert np.all(np.max(np.abs(out - base), axis=-1)[0, :-1] > 1e-6)


def test_padding_does_not_change_real_tokens(encoder):
    ids = np.array([[3, 4, 5, 0, 0, 0]], "int32")
    mask = np.array([[1, 1, 1, 0, 0, 0]], bool)
    other = ids.copy()
    other[0, 3:] = [7, 8, 9]
    a = encoder(ids, padding_mask=mask).numpy()[0, :3]
    b = encoder(other, padding_mask=mask).numpy()[0, :3]
    alone = encoder(ids[:, :3]).numpy()[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, alone, atol=1e-5)


def test_segment_ids_change_the_embedding(encoder):
    ids = np.array([[3, 4, 5, 6]], "int32")
    first = encoder(ids).numpy()
    second = encoder(ids, segment_ids=np.array([[0, 0, 1, 1]], "int32")).numpy()
    assert np.max(np.abs(first - second)) > 1e-4


def test_an_encoder_has_no_decode_cache(encoder):
    with pytest.raises(NotImplementedError, match="both ways"):
        encoder.init_cache(1, 8)
