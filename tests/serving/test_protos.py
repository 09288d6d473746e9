"""The client's TensorProto conversion agrees with TensorFlow's, and building gRPC requests does
not load TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfllm.serving.protos import ndarray, tensor_proto

VALUES = [
    np.asarray([[1, 2], [3, 4]], np.int32),
    np.asarray([1.5, -2.25], np.float32),
    np.asarray([[True, False]]),
    np.asarray([2**40, -3], np.int64),
    np.float32(0.5),
    np.asarray([0.1, 0.2], np.float64),
    np.asarray(["añb", "", "c d"], dtype=object),
    np.asarray([b"\xff\x00"], dtype=object),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: str(np.asarray(v).dtype))
def test_tensor_protos_read_and_write_as_tensorflow_does(value):
    ours = tensor_proto(value)
    expected = tf.make_ndarray(tf.make_tensor_proto(value))
    np.testing.assert_array_equal(tf.make_ndarray(ours), expected)  # TF reads what we write
    theirs = tf.make_tensor_proto(value)
    np.testing.assert_array_equal(ndarray(theirs), expected)  # we read what TF writes


def test_typed_value_fields_and_their_repeat_rule():
    proto = tf.make_tensor_proto([7, 7, 7, 7], dtype=tf.int32)
    proto.ClearField("tensor_content")
    proto.int_val.extend([7])  # TensorFlow's short form: the last value repeats
    np.testing.assert_array_equal(ndarray(proto), [7, 7, 7, 7])
    half = tf.make_tensor_proto(np.asarray([1.5, -2.0], np.float16))
    np.testing.assert_array_equal(ndarray(half), np.asarray([1.5, -2.0], np.float16))


def test_a_grpc_request_is_built_without_loading_tensorflow():
    script = (
        "import sys\n"
        "from tfllm.serving.client import Client\n"
        "from tfllm.serving.protos import apis, tensor_proto\n"
        "(predict_pb2,) = apis('tensorflow_serving.apis.predict_pb2')\n"
        "request = predict_pb2.PredictRequest()\n"
        "request.inputs['prompts'].CopyFrom(tensor_proto(['hi']))\n"
        "Client('127.0.0.1', 1, 'm')._grpc()\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was loaded'\n"
        "import tensorflow as tf\n"
        "print(tf.make_ndarray(request.inputs['prompts']).tolist())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("[b'hi']")
