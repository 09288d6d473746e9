"""TF Serving's API protos without TensorFlow's start-up, and numpy <-> `TensorProto`.

`tensorflow_serving.apis` imports the generated protos under `tensorflow.core...`, and importing
any of them first runs `tensorflow/__init__.py`: five seconds of loading TensorFlow for a client
that only builds messages. `apis()` imports the proto modules with a stand-in for that one
`__init__`, then removes the stand-in (and the packages imported under it), so a later
`import tensorflow` starts as if nothing happened and finds the same proto modules.

Example:

>>> import numpy as np
>>> proto = tensor_proto(np.asarray([[1, 2], [3, 4]], np.int32))
>>> ndarray(proto).tolist()
[[1, 2], [3, 4]]
>>> ndarray(tensor_proto(np.asarray(["añb", "c"], dtype=object))).tolist()
[b'a\\xc3\\xb1b', b'c']
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

import numpy as np

_lock = threading.Lock()

# tensorflow.DataType numbers (tensorflow/core/framework/types.proto) of the dtypes requests use.
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    7: object,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}
_NUMBERS = {np.dtype(t): n for n, t in DTYPES.items() if t is not object}
# Where each dtype's values go when they are not packed in `tensor_content`.
_FIELDS = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    9: "int64_val",
    10: "bool_val",
    19: "half_val",
}


def apis(*names: str) -> list[types.ModuleType]:
    """The modules `names` (e.g. `tensorflow_serving.apis.predict_pb2`), imported without
    running `tensorflow/__init__.py` unless TensorFlow is already loaded."""
    with _lock:
        if "tensorflow" in sys.modules or all(n in sys.modules for n in names):
            return [importlib.import_module(n) for n in names]
        spec = importlib.util.find_spec("tensorflow")
        if spec is None or spec.origin is None:
            return [importlib.import_module(n) for n in names]  # the import error says why
        stand_in = types.ModuleType("tensorflow")
        stand_in.__path__ = [os.path.dirname(spec.origin)]
        before = set(sys.modules)
        sys.modules["tensorflow"] = stand_in
        try:
            return [importlib.import_module(n) for n in names]
        finally:
            # Keep the generated proto modules; drop the stand-in and the packages imported
            # under it, which a real `import tensorflow` must import itself.
            for name in set(sys.modules) - before:
                if name == "tensorflow" or (
                    name.startswith("tensorflow.") and not name.endswith("_pb2")
                ):
                    del sys.modules[name]


def tensor_proto(value: Any) -> Any:
    """A `tensorflow.TensorProto` of `value` (strings as UTF-8 bytes, numbers packed)."""
    (tensor_pb2,) = apis("tensorflow.core.framework.tensor_pb2")
    array = np.asarray(value)
    proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    if array.dtype.kind in ("O", "U", "S"):
        proto.dtype = 7
        flat = array.reshape(-1).tolist()
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
        return proto
    if array.dtype not in _NUMBERS:
        raise TypeError(f"tensor_proto: unsupported dtype {array.dtype}")
    proto.dtype = _NUMBERS[array.dtype]
    proto.tensor_content = (
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    )
    return proto


def ndarray(proto: Any) -> np.ndarray:
    """The numpy array a `TensorProto` holds (strings as bytes), from packed content or from
    its typed value fields (a short value list repeats its last value, as TensorFlow reads it)."""
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    size = int(np.prod(shape)) if shape else 1
    kind = DTYPES.get(int(proto.dtype))
    if kind is None:
        raise TypeError(f"ndarray: unsupported TensorProto dtype {proto.dtype}")
    if kind is object:
        values = list(proto.string_val)
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif proto.tensor_content:
        array = np.frombuffer(proto.tensor_content, dtype=np.dtype(kind).newbyteorder("<"))
        array = array.astype(kind)
    else:
        raw = getattr(proto, _FIELDS[int(proto.dtype)])
        if int(proto.dtype) == 19:  # half_val holds the float16 bits as integers
            array = np.asarray(list(raw), np.uint16).view(np.float16)
        else:
            array = np.asarray(list(raw), dtype=kind)
    if array.size != size:
        if array.size == 0 or array.size > size:
            raise ValueError(f"ndarray: {array.size} values for shape {shape}")
        array = np.concatenate([array, np.repeat(array[-1:], size - array.size)])
    return array.reshape(shape)
