"""Model FLOPs utilization: the model's training FLOPs per token, and the machine's measured peak.

MFU = (training FLOPs per token × tokens/s) / peak FLOP/s. The peak is what `tfllm bench peak`
measures with a large matmul on this machine (not a datasheet number), saved under the tfllm cache
so every later run can report MFU against it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

PEAK_FILE = "peak_flops.json"


@dataclass
class PeakMeasurement:
    """A measured matmul throughput.

    Attributes:
        flops: the median FLOP/s over the repeats.
        dtype: the matmul dtype.
        size: the square matrix size.
        device: the TensorFlow device it ran on.
        machine: a short description of the host.
        samples: FLOP/s of every repeat.
    """

    flops: float
    dtype: str
    size: int
    device: str
    machine: str
    samples: list[float]


def _cache_dir() -> str:
    from tfllm.cache import cache_dir

    return str(cache_dir())


def measure_peak_flops(
    size: int = 4096, dtype: str = "float32", repeats: int = 10
) -> PeakMeasurement:
    """Time `repeats` XLA-compiled `size × size` matmuls (after a warm-up) and return the median.

    Raises:
        ValueError: a non-positive size or repeat count, or an unsupported dtype.
    """
    import tensorflow as tf

    if size <= 0 or repeats <= 0:
        raise ValueError(f"size and repeats must be positive, got size={size} repeats={repeats}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got '{dtype}'")
    gpus = tf.config.list_logical_devices("GPU")
    device = gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name
    with tf.device(device):
        a = tf.random.stateless_normal([size, size], seed=[0, 1], dtype=dtype)
        b = tf.random.stateless_normal([size, size], seed=[2, 3], dtype=dtype)

        @tf.function(jit_compile=True)
        def matmul(x, y):
            return tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32))

        matmul(a, b).numpy()  # compile and warm up
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            matmul(a, b).numpy()
            samples.append(2.0 * size**3 / (time.perf_counter() - t0))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs" + (", GPU" if gpus else "")
    return PeakMeasurement(
        statistics.median(samples), dtype, size, device, machine, [float(s) for s in samples]
    )


def save_peak(measurement: PeakMeasurement, directory: str | None = None) -> str:
    """Write the measurement to `<cache>/peak_flops.json` (one entry per dtype); return the path."""
    directory = directory or _cache_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PEAK_FILE)
    entries: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
        except (OSError, json.JSONDecodeError):
            entries = {}
    entries[measurement.dtype] = asdict(measurement)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)
    return path


def load_peak(dtype: str = "float32", directory: str | None = None) -> float | None:
    """The saved peak FLOP/s for `dtype`, or None if `tfllm bench peak` has not measured it."""
    path = os.path.join(directory or _cache_dir(), PEAK_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f).get(dtype)
    except (OSError, json.JSONDecodeError):
        return None
    return float(entry["flops"]) if entry and entry.get("flops") else None


def training_flops_per_token(model: Any, sequence_length: int) -> float:
    """Forward + backward FLOPs per token: `6 N + 12 L D T` (Kaplan et al. 2020; PaLM's MFU).

    `N` counts every trainable weight that takes part in a matmul: all of them except lookup
    tables (token and learned position embeddings), plus the token embedding again when the LM
    head is tied to it (the head's `D × V` matmul). `12 L D T` is the attention score and value
    products for a context of `T` tokens.
    """
    backbone = getattr(model, "backbone", model)
    embedding = getattr(backbone, "token_embedding", None)
    lookups = {id(w) for w in (embedding.weights if embedding is not None else [])}
    for name in ("positional", "encoder_positional", "decoder_positional"):
        positional = getattr(backbone, name, None)
        if positional is not None:
            lookups |= {id(w) for w in positional.weights}
    n = sum(math.prod(w.shape) for w in model.trainable_weights if id(w) not in lookups)
    head = getattr(model, "head", None)
    if embedding is not None and getattr(head, "tie_embeddings", False):
        n += math.prod(embedding.embeddings.shape)
    layers = int(getattr(backbone, "num_layers", 0))
    width = int(getattr(backbone, "hidden_dim", 0))
    return 6.0 * n + 12.0 * layers * width * sequence_length
