"""Hardware facts and the distribution strategy: devices, CPU flags, GPU capabilities.

The one place that asks TensorFlow what the machine has; `pipeline.resolve` turns the
facts into choices (train.precision), train uses the strategy.
"""

import os

import tensorflow as tf

from pipeline.errors import PipelineError


def distribution_strategy(kind: str) -> tf.distribute.Strategy:
    """auto: every visible GPU (MirroredStrategy when there are several); multi_worker: TF_CONFIG.

    Created before any other TensorFlow work, as MultiWorkerMirroredStrategy requires.
    """
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise PipelineError("train.distribution 'multi_worker' needs the TF_CONFIG environment variable "
                                "(cluster and task of this worker); see README 'Several machines'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored" or (kind == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def gpu_capabilities() -> list[tuple[int, int]]:
    """The CUDA compute capability of every visible GPU."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found


def device_summary(strategy: tf.distribute.Strategy) -> str:
    """One log line: the visible devices and how many replicas train in sync."""
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")]
    return (f"devices: {', '.join(devices)}; replicas in sync: {strategy.num_replicas_in_sync} "
            f"({type(strategy).__name__})")
