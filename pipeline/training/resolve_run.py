"""Train's `auto` knobs, resolved once before training starts (`resolve_run`, with the
model's from `pipeline.model.resolve_model`), from the prepared data's manifest, the number
of fit rows and the hardware; never from a dataset's name. Below that step every value is
concrete (`TrainingRun`, `ResolvedModel`). `train.distribution` is resolved first, on its own
(`resolve_distribution`): the strategy must exist before any other TensorFlow work.

Every resolution returns the value and the rule that chose it: train logs them in one
line and stores them in the model bundle (choices.json), from where they reach the
latents' metadata and the report. An explicit value in params.yaml always wins.

The rules, and why:

- train.epochs: enough epochs for about EPOCH_BUDGET_UPDATES optimizer updates, within
  [MIN_EPOCHS, MAX_EPOCHS], and no more than TRAINING_FLOPS allow (at least one): the
  training FLOPs of an epoch are 3 × the model's forward FLOPs per example (its
  convolutions and Dense layers, counted from the resolved layout) × the examples an epoch
  reads. The budget is about 8 minutes at the ~40 GFLOP/s the shipped defaults reach on two
  AVX2 CPU cores (benchmarks/flops.py), so a first run on a few thousand 64×64 photos ends
  in minutes; it binds only for large examples (Fashion-MNIST's 12 epochs are 40% of it).
  Early stopping on the validation U ends the run sooner when the model stops improving
  (train.early_stopping_patience). The rule reads the data and the model, never the
  machine: a run trains the same epochs on every machine.
- train.precision: on GPUs, mixed_bfloat16 from compute capability 8.0, mixed_float16 on
  older GPUs with tensor cores (7.0 or more), float32 otherwise. On a CPU, mixed_bfloat16
  only where the CPU computes bf16 natively (AVX512_BF16 or AMX-BF16) *and* TensorFlow's
  oneDNN kernels are on (as TensorFlow resolved TF_ENABLE_ONEDNN_OPTS), float32 otherwise:
  bf16 is fast only through oneDNN (2048² matmul on AMX: 1,105 GFLOP/s bf16 vs 301
  float32; with oneDNN off 226 vs 265), and without native bf16 it is emulated, about 11×
  slower. The SUBO itself is always computed in float32.
- train.steps_per_execution: STEPS_PER_EXECUTION train steps per compiled call, fewer
  when an epoch is shorter, 1 when training is replicated (several GPUs, multi_worker: the
  config checker's rule);
  an epoch is rounded up to whole calls.
- loss.kl_warmup_epochs: the first tenth of the epochs (at least one). With the weight
  on D rising from 0 the encoder first learns to carry information, which the decoder
  then uses; started at full weight, small real-valued datasets collapsed (D ≈ 0) in
  the benchmark.
- train.distribution: multi_worker with several Ray Train workers (train.workers), mirrored
  over several local GPUs, else none (one device).
- train.input: memory when the fit rows' stored values take at most IN_MEMORY_BYTES,
  else mmap (read by row from the memory-mapped file: memory stays flat).
"""

import dataclasses
import math
from dataclasses import dataclass

from pipeline.data.manifest import Manifest
from pipeline.model.resolve_model import forward_flops, is_series, levels_of, params_per_value, resolve_model
from pipeline.model.vae_config import ResolvedModel
from pipeline.platform.choices import AUTO, GIVEN, Choice, from_records
from pipeline.platform.params.config import LossConfig, ModelConfig, TrainConfig
from pipeline.platform.params.rules import check_replicated_steps

EPOCH_BUDGET_UPDATES = 10_000
MIN_EPOCHS, MAX_EPOCHS = 10, 200
TRAINING_FLOPS = 2 * 10**13  # train.epochs auto: at most this many training FLOPs
# Train steps per compiled call: the per-call overhead (~1 ms on a CPU) then costs a few
# percent of a step of the smallest models here instead of doubling it.
STEPS_PER_EXECUTION = 32
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# train.input auto: the fit rows are copied into memory up to this many bytes (stored dtype).
IN_MEMORY_BYTES = 1 << 30
# An epoch is one pass over the fit examples, but at least this many updates: on a table of
# a hundred rows one pass is two updates, and per-epoch work (validation, backup, logging,
# early stopping's patience) would then dominate and stop training after a few dozen updates.
MIN_UPDATES_PER_EPOCH = 50


@dataclass(frozen=True)
class TrainingRun:
    """One training run with every `auto` resolved: what train builds, fits and fingerprints
    (a backup is resumed only by a run equal in every field, and on the same data)."""

    model: ResolvedModel
    loss: LossConfig
    train: TrainConfig  # precision, input, distribution... resolved too
    updates_per_epoch: int  # whole compiled calls of train.steps_per_execution steps
    validation_fraction: float
    binarize: str
    seed: int

    def as_params(self) -> dict:
        """The run's resolved params in params.yaml's shape (the bundle's run.json, which
        evaluate and the encode command read: the truth downstream)."""
        return {
            "seed": self.seed,
            "data": {"validation_fraction": self.validation_fraction, "binarize": self.binarize},
            "model": dataclasses.asdict(self.model),
            "loss": dataclasses.asdict(self.loss),
            "train": dataclasses.asdict(self.train),
        }


@dataclass(frozen=True)
class Machine:
    """What the hardware offers a run (pipeline.platform.hardware reads it)."""

    cpu_flags: frozenset[str] = frozenset()
    gpu_capabilities: tuple[tuple[int, int], ...] = ()
    replicas: int = 1  # the distribution strategy's replicas in sync
    onednn: bool = False  # TensorFlow runs its oneDNN CPU kernels (pipeline.platform.hardware.onednn_enabled)


def resolve_distribution(given: str, gpus: int, workers: int) -> Choice:
    """train.distribution: multi_worker for several Ray Train workers, mirrored over several
    GPUs, else none. Resolved before the rest: the strategy comes before other TensorFlow work."""
    if workers > 1:
        value, why = "multi_worker", f"{workers} Ray Train workers (train.workers), one replica each"
    elif gpus > 1:
        value, why = "mirrored", f"{gpus} GPUs on this machine, one replica each"
    else:
        value, why = "none", f"one device ({'one GPU' if gpus else 'the CPU'}): nothing to replicate"
    return Choice.of(given, value, why)


def resolve_run(
    model: ModelConfig,
    loss: LossConfig,
    training: TrainConfig,
    manifest: Manifest,
    *,
    fit_rows: int,
    machine: Machine,
    distribution: Choice,
    validation_fraction: float,
    binarize: str,
    seed: int,
) -> tuple[TrainingRun, dict[str, Choice]]:
    """Every `auto` knob of a run, once: the resolved run and every choice made, keyed by
    dotted params key (the manifest's first). model, loss, training: the params' blocks;
    fit_rows: the train split's rows training reads; machine: the hardware's facts;
    distribution: as `resolve_distribution` chose it; validation_fraction, binarize and seed:
    the data and seed params the run records."""
    resolved, model_choices = _resolve_model(model, manifest)
    updates, (epochs, warmup, steps) = _resolve_schedule(
        training, loss, manifest, resolved, fit_rows, machine, distribution
    )
    row_bytes = math.prod(manifest.example_shape) * (1 if manifest.dtypes["x"] == "uint8" else 4)
    choices = {  # in this order in choices.json
        **from_records(manifest.choices),
        **model_choices,
        "train.epochs": epochs,
        "loss.kl_warmup_epochs": warmup,
        "train.precision": resolve_precision(
            training.precision, machine.cpu_flags, machine.gpu_capabilities, machine.onednn
        ),
        "train.steps_per_execution": steps,
        "train.input": resolve_input(training.input, fit_rows * row_bytes),
        "train.distribution": distribution,
    }
    training = dataclasses.replace(training, **{k.split(".")[1]: choices[k].value for k in TRAIN_CHOICES})
    loss = dataclasses.replace(loss, kl_warmup_epochs=choices["loss.kl_warmup_epochs"].value)
    return TrainingRun(resolved, loss, training, updates, validation_fraction, binarize, seed), choices


def _resolve_model(model: ModelConfig, manifest: Manifest) -> tuple[ResolvedModel, dict[str, Choice]]:
    """The model block resolved for the prepared data the manifest describes."""
    return resolve_model(
        model,
        manifest.feature_shape,
        manifest.value_range,
        manifest.value_type,
        manifest.columns,
        levels_of(manifest),
        series=is_series(manifest),
        covariates=manifest.covariate_width,
        train_rows=manifest.counts.get("train"),
    )


# The train block's knobs resolve_run settles, as choices' keys.
TRAIN_CHOICES = (
    "train.epochs",
    "train.steps_per_execution",
    "train.precision",
    "train.input",
    "train.distribution",
)


def _resolve_schedule(
    training: TrainConfig,
    loss: LossConfig,
    manifest: Manifest,
    resolved: ResolvedModel,
    fit_rows: int,
    machine: Machine,
    distribution: Choice,
) -> tuple[int, tuple[Choice, Choice, Choice]]:
    """The updates per epoch (whole compiled calls) and the choices of the run's length:
    train.epochs, loss.kl_warmup_epochs and train.steps_per_execution."""
    updates = max(math.ceil(fit_rows / training.batch_size), MIN_UPDATES_PER_EPOCH)
    steps = resolve_steps_per_execution(
        training.steps_per_execution, updates, machine.replicas, distribution.value
    )
    calls = math.ceil(updates / steps.value) * steps.value  # Keras runs whole calls
    example_flops = 3 * forward_flops(manifest.feature_shape, resolved, params_per_value(resolved))
    epochs = resolve_epochs(training.epochs, updates, example_flops * calls * training.batch_size)
    warmup = resolve_warmup(loss.kl_warmup_epochs, epochs.value)
    return calls, (epochs, warmup, steps)


def resolve_epochs(given: int | str, updates: int, epoch_flops: float = 0.0) -> Choice:
    """train.epochs from the number of updates an epoch makes and the FLOPs it costs."""
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(EPOCH_BUDGET_UPDATES / updates)))
    why = f"about {EPOCH_BUDGET_UPDATES} updates of {updates} per epoch, within [{MIN_EPOCHS}, {MAX_EPOCHS}]"
    affordable = max(1, math.floor(TRAINING_FLOPS / epoch_flops)) if epoch_flops else epochs
    if affordable < epochs:
        epochs, why = (
            affordable,
            (
                f"{why}, cut to what {TRAINING_FLOPS:.0e} training FLOPs allow at "
                f"{epoch_flops:.2g} per epoch (about 8 min on 2 CPU cores)"
            ),
        )
    return Choice.of(given, epochs, f"{why}; early stopping may end sooner")


def resolve_warmup(given: int | str, epochs: int) -> Choice:
    """loss.kl_warmup_epochs: the first tenth of the (resolved) epochs."""
    return Choice.of(given, math.ceil(epochs / 10), f"the first tenth of {epochs} epochs")


def resolve_precision(given: str, cpu_flags, gpu_capabilities, onednn: bool = False) -> Choice:
    """train.precision from the hardware: GPUs' compute capabilities, else the CPU's flags
    and whether TensorFlow's oneDNN kernels are on (`onednn`)."""
    if given != AUTO:
        return Choice(given, GIVEN)
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        cc = f"GPUs of compute capability {oldest[0]}.{oldest[1]}"
        if oldest >= (8, 0):
            return Choice("mixed_bfloat16", f"{cc}+ compute bf16")
        if oldest >= (7, 0):
            return Choice("mixed_float16", f"{cc}: float16 tensor cores")
        return Choice("float32", f"{cc}: no tensor cores")
    native = sorted(set(NATIVE_BF16_CPU_FLAGS) & set(cpu_flags))
    kernels = f"TensorFlow's oneDNN kernels are {'on' if onednn else 'off'}"
    if native and onednn:
        return Choice("mixed_bfloat16", f"the CPU computes bf16 natively ({', '.join(native)}) and {kernels}")
    if native:
        return Choice(
            "float32",
            f"the CPU computes bf16 natively ({', '.join(native)}) but {kernels} "
            f"(TF_ENABLE_ONEDNN_OPTS): bf16 would run slower than float32",
        )
    return Choice(
        "float32", f"the CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag: emulated, slow); {kernels}"
    )


def resolve_steps_per_execution(
    given: int | str, updates: int, replicas: int = 1, distribution: str = "none"
) -> Choice:
    """train.steps_per_execution: one step per call when training is replicated (Keras'
    multi-step loop fails there: the config checker's rule), else up to STEPS_PER_EXECUTION.

    Args:
        given: the params' value.
        updates: updates per epoch.
        replicas: the strategy's replicas in sync.
        distribution: train.distribution, resolved.
    """
    replicated = replicas > 1 or distribution == "multi_worker"
    check_replicated_steps(given, f"{replicas} replicas in sync" if replicated else None, "")
    if replicated:
        return Choice.of(
            given,
            1,
            f"one step per call: Keras' multi-step loop fails under replicated "
            f"training ({replicas} replicas)",
        )
    return Choice.of(
        given,
        min(STEPS_PER_EXECUTION, updates),
        f"{STEPS_PER_EXECUTION} steps per call (fewer when an epoch is shorter)",
    )


def resolve_input(given: str, stored_bytes: int) -> Choice:
    """memory when the rows' stored values take at most IN_MEMORY_BYTES, else mmap.

    Both read a batch by row and preprocess it the same way; memory saves the page-cache
    lookups, mmap keeps memory flat whatever the size of the data.
    """
    value = "memory" if stored_bytes <= IN_MEMORY_BYTES else "mmap"
    return Choice.of(
        given,
        value,
        f"the fit rows take {stored_bytes / 2**20:,.0f} MiB: "
        f"{'at most' if value == 'memory' else 'over'} {IN_MEMORY_BYTES / 2**30:g} GiB",
    )
