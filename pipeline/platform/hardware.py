"""Hardware facts and the distribution strategy: devices, CPU flags, GPU capabilities, GPU sharing.

The one place that asks TensorFlow what the machine has; `pipeline.training.resolve_run` turns the
facts into choices (train.precision), train uses the strategy. Every stage that runs
TensorFlow calls `share_gpus` before its first op.
"""

import os

import tensorflow as tf

from pipeline.platform.errors import PipelineError

# TensorFlow reads it when it first sets up a GPU: allocate as used, not the whole device.
MEMORY_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"


def share_gpus() -> None:
    """Memory growth on every GPU, set before this process's first TensorFlow op.

    By default a TensorFlow process takes all of a GPU's memory, so a second process on
    that GPU (an encode worker, a test's stage beside the test run itself) fails to
    allocate. The environment variable also reaches every process this one starts.
    """
    os.environ.setdefault(MEMORY_GROWTH, "true")
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already set up in this process; the variable above applied then
            pass


def hide_gpus() -> None:
    """Compute on the CPU only in this process (before its first op): a parent whose workers use the GPUs."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already set up in this process (a test running stages in-process)
        pass


def limit_threads(cpus: int) -> None:
    """TensorFlow's op threads to this process's CPU share (before its first op): a Ray actor
    granted one CPU beside others on its node would otherwise use every core."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(cpus, 1))
        tf.config.threading.set_inter_op_parallelism_threads(max(cpus, 1))
    except RuntimeError:  # already set up in this process
        pass


def distribution_strategy(kind: str) -> tf.distribute.Strategy:
    """The strategy of a resolved train.distribution (pipeline.training.resolve_run):
    none: the default (one device); mirrored: every visible GPU, or on a machine without
    GPUs its logical CPU devices (one, unless configured: tests configure two to run the
    replicated path); multi_worker: the cluster TF_CONFIG describes.

    Created before any other TensorFlow work, as MultiWorkerMirroredStrategy requires.
    """
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise PipelineError(
                "train.distribution 'multi_worker' needs the TF_CONFIG environment variable "
                "(cluster and task of this worker); see docs/how-to/gpus.md"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(
            [device.name for device in tf.config.list_logical_devices("CPU")]
        )
    return tf.distribute.get_strategy()


def gpu_count() -> int:
    """The GPUs this process sees (listing them sets none up)."""
    return len(tf.config.list_physical_devices("GPU"))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


# TensorFlow's rule for its oneDNN kernels on Linux (tensorflow/core/util/util.cc, IsMKLEnabled):
# on by default where the CPU has one of these, TF_ENABLE_ONEDNN_OPTS overriding either way.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process, as TensorFlow resolved it
    (its own answer; the documented rule where this TensorFlow does not expose it)."""
    try:
        from tensorflow.python.util._pywrap_util_port import IsMklEnabled
    except ImportError:
        return onednn_by_rule(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), cpu_flags())
    return bool(IsMklEnabled())


def onednn_by_rule(switch: str | None, flags) -> bool:
    """TensorFlow's rule: TF_ENABLE_ONEDNN_OPTS when set (1/true, 0/false), else the CPU's flags."""
    if switch is not None and switch.strip().lower() in ("1", "true", "0", "false"):
        return switch.strip().lower() in ("1", "true")
    return bool(set(ONEDNN_DEFAULT_FLAGS) & set(flags))


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
    return (
        f"devices: {', '.join(devices)}; replicas in sync: {strategy.num_replicas_in_sync} "
        f"({type(strategy).__name__})"
    )


def step_outputs(results: dict) -> dict:
    """A train/test step's scalars in the shape the current strategy can reduce.

    Keras reduces step outputs across MultiWorkerMirroredStrategy workers with
    reduce(MEAN, axis=0), which needs an axis: give each scalar one, which that reduction
    then removes (one worker alone is not reduced, and would keep the axis).
    """
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.num_replicas_in_sync > 1:
        return {name: tf.reshape(value, (1,)) for name, value in results.items()}
    return results
