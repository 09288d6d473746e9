"""Choosing a tf.distribute strategy from the config."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from tfllm.registry import ConfigError
from tfllm.training.strategy_names import check_strategy_name

log = logging.getLogger(__name__)


def configure_logical_cpus(count: int) -> None:
    """Split the CPU into `count` logical devices (must run before TensorFlow initializes)."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != count:
            raise ConfigError(
                f"trainer.logical_cpus={count}: TensorFlow is already initialized with "
                f"{existing} CPU devices ({e})"
            ) from None


def build_strategy(name: str, logical_cpus: int = 1) -> tf.distribute.Strategy:
    """Build the strategy named by `trainer.strategy`.

    - `default`: one device.
    - `mirrored`: all local GPUs, or the logical CPUs made by `trainer.logical_cpus`.
    - `multi_worker_mirrored`: workers from `TF_CONFIG` (ring all-reduce on CPU).
    - `tpu`: a TPU found by the cluster resolver.
    - `auto`: TPU if one resolves, else mirrored over several GPUs, else default.
    """
    check_strategy_name(name)
    if name in ("mirrored", "default", "auto"):
        configure_logical_cpus(logical_cpus)
    if name == "auto":
        name = _auto()
        log.info("trainer.strategy=auto chose %s", name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices=devices,
            cross_device_ops=tf.distribute.ReductionToOneDevice() if not gpus else None,
        )
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "trainer.strategy=multi_worker_mirrored needs TF_CONFIG describing the cluster "
                "(or use `tfllm launch workers=N -- train ...`)"
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as e:
        raise ConfigError(
            f"trainer.strategy=tpu: no TPU found ({str(e).splitlines()[0]}); set TPU_NAME or run "
            "on a TPU VM, or pick another strategy"
        ) from None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _auto() -> str:
    try:
        tf.distribute.cluster_resolver.TPUClusterResolver()
        return "tpu"
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        pass
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, logs and samples."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many worker processes take part (1 unless MultiWorkerMirroredStrategy)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker")) or 1
