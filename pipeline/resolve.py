"""Train's `auto` knobs, resolved in one step (`resolve_run`) before training starts, from
the prepared data's manifest, the number of fit rows and the hardware; never from a
dataset's name. Below that step every value is concrete (`Run`, `ResolvedModel`).

Every resolution returns the value and the rule that chose it: train logs them in one
line and stores them in the model bundle (choices.json), from where they reach the
latents' metadata and the report. An explicit value in params.yaml always wins.

The rules, and why:

- model.likelihood: bernoulli when every prepared value lies in [0, 1], else gaussian.
- model.sigma "learned" (the default) gives the gaussian one σ per feature, floored.
- model.architecture: conv for H×W×C examples with both sides at least 16 pixels; mlp
  otherwise. A conv layer's locality prior pays once an image has more pixels than a
  Dense layer can cheaply pair up; at 8×8 (64 values) one stride-2 layer leaves 4×4 and
  the mlp measured better (benchmarks/README.md, "Defaults").
- model.filters (conv): one stride-2 Conv2D per halving of the shorter side while it is
  even and at least 8, at most three, widths 32, 64, 128: 28 → 14 → 7 gives [32, 64].
- model.hidden: for conv none (the heads read the flattened conv features, which are
  already wide); for mlp two Dense layers, the first four times the input width rounded
  to a power of two within [64, 512], the second half as wide.
- train.epochs: enough epochs for about EPOCH_BUDGET_UPDATES optimizer updates, within
  [MIN_EPOCHS, MAX_EPOCHS]; early stopping on the validation U ends the run sooner when
  the model stops improving (train.early_stopping_patience).
- train.precision: mixed_bfloat16 where the hardware computes bf16 natively (a CPU with
  AVX512_BF16 or AMX-BF16, GPUs of compute capability 8.0 or more), mixed_float16 on older
  GPUs with tensor cores (7.0 or more), float32 otherwise: on a CPU without native bf16
  it is emulated and about 11× slower. The SUBO itself is always computed in float32.
- train.steps_per_execution: STEPS_PER_EXECUTION train steps per compiled call, fewer
  when an epoch is shorter, 1 when training is replicated (several GPUs, multi_worker);
  an epoch is rounded up to whole calls.
- loss.kl_warmup_epochs: the first tenth of the epochs (at least one). With the weight
  on D rising from 0 the encoder first learns to carry information, which the decoder
  then uses; started at full weight, small real-valued datasets collapsed (D ≈ 0) in
  the benchmark.
- train.input: memory when the fit rows' stored values take at most IN_MEMORY_BYTES,
  else mmap (read by row from the memory-mapped file: memory stays flat).
"""

import dataclasses
import math
from dataclasses import dataclass

from pipeline.config import AUTO, GIVEN, LossConfig, ModelConfig, ResolvedModel, TrainConfig
from pipeline.errors import ConfigError, PipelineError
from pipeline.manifest import Manifest

EPOCH_BUDGET_UPDATES = 10_000
MIN_EPOCHS, MAX_EPOCHS = 10, 200
CONV_MIN_SIDE = 16
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
class Run:
    """One training run with every `auto` resolved: what train builds, fits and fingerprints
    (a backup is resumed only by a run equal in every field, and on the same data)."""

    model: ResolvedModel
    loss: LossConfig
    train: TrainConfig  # precision and input resolved too
    updates_per_epoch: int  # whole compiled calls of train.steps_per_execution steps
    validation_fraction: float
    binarize: str
    seed: int

    def as_params(self) -> dict:
        """The run's resolved params in params.yaml's shape (the bundle's run.json)."""
        return {"seed": self.seed,
                "data": {"validation_fraction": self.validation_fraction, "binarize": self.binarize},
                "model": dataclasses.asdict(self.model), "loss": dataclasses.asdict(self.loss),
                "train": dataclasses.asdict(self.train)}


def resolve_run(model: ModelConfig, loss: LossConfig, training: TrainConfig, manifest: Manifest, *,
                fit_rows: int, cpu_flags: set[str], gpu_capabilities: list[tuple[int, int]],
                validation_fraction: float, binarize: str, seed: int, replicas: int = 1
                ) -> tuple[Run, dict[str, dict]]:
    """Every auto knob of a run, and the choices made (the manifest's first, in one dict).

    fit_rows: rows of the prepared train split that training reads; replicas: the
    distribution strategy's replicas in sync.
    """
    resolved, model_choices = resolve_model(model, manifest.input_shape, manifest.value_range, manifest.value_type,
                                            manifest.columns)
    updates = max(math.ceil(fit_rows / training.batch_size), MIN_UPDATES_PER_EPOCH)
    training, epoch_choice = resolve_epochs(training, updates)
    training, updates, execution_choice = resolve_steps_per_execution(training, updates, replicas)
    loss, warmup_choice = resolve_warmup(loss, training.epochs)
    precision, precision_choice = resolve_precision(training.precision, cpu_flags, gpu_capabilities)
    row_bytes = math.prod(manifest.example_shape) * (1 if manifest.dtypes["x"] == "uint8" else 4)
    source, input_choice = resolve_input(training.input, fit_rows * row_bytes)
    choices = {**manifest.choices, **model_choices, **epoch_choice, **warmup_choice, **precision_choice,
               **execution_choice, **input_choice}
    run = Run(resolved, loss, dataclasses.replace(training, precision=precision, input=source), updates,
              validation_fraction, binarize, seed)
    return run, choices


def resolve_model(model: ModelConfig, example_shape, value_range, value_type: str = "real",
                  columns=None) -> tuple[ResolvedModel, dict[str, dict]]:
    """The model config with every `auto` resolved from the prepared data (manifest.json):
    the shape the model reads (input_shape), the value range and type, a table's columns;
    and the choices made."""
    shape, (lo, hi) = list(example_shape), value_range
    choices = {}

    def choose(key, given, value, why):
        resolved = given if given != AUTO else value
        choices[f"model.{key}"] = {"value": list(resolved) if isinstance(resolved, tuple) else resolved,
                                   "why": GIVEN if given != AUTO else why}
        return resolved

    if value_type == "columns" and plain_table(columns):  # as an array of real values: one Gaussian
        rule = ("gaussian", "every column real, no cell missing: one gaussian over the standardized features")
    elif value_type in ("columns", "count"):
        rule = ("columns", "one family per column: gaussian (real), bernoulli (binary), categorical, "
                           f"{model.count_likelihood} (count)" if value_type == "columns" else
                           f"a count matrix: {model.count_likelihood} per feature")
    elif 0 <= lo and hi <= 1:
        rule = ("bernoulli", "prepared values lie in [0, 1]")
    else:
        rule = ("gaussian", f"prepared values span [{lo:.3g}, {hi:.3g}], beyond [0, 1]")
    likelihood = choose("likelihood", model.likelihood, *rule)
    is_image = len(shape) == 3 and min(shape[:2]) >= CONV_MIN_SIDE
    if is_image and model.filters != ():  # an explicit [] asks for no conv layers
        arch = ("conv", f"H×W×C examples {shape}, both sides at least {CONV_MIN_SIDE}")
    elif len(shape) == 3:
        arch = ("mlp", f"images of {shape}: a side under {CONV_MIN_SIDE}, or model.filters []")
    else:
        arch = ("mlp", f"examples of shape {shape} are not H×W×C images")
    architecture = choose("architecture", model.architecture, *arch)
    filters = choose("filters", model.filters, *(
        (conv_filters(min(shape[:2])), "one stride-2 layer per halving of the shorter side, widths 32·2^i")
        if architecture == "conv" else ((), "no conv layers in an mlp")))
    hidden = choose("hidden", model.hidden, *(
        ((), "the heads read the flattened conv features") if architecture == "conv"
        else (mlp_hidden(math.prod(shape)), "4× the input width as a power of two in [64, 512], then half")))
    layout = column_layout(value_type, columns, math.prod(shape), model.count_likelihood)
    if likelihood == "gaussian" or any(family == "gaussian" for family, _, _ in layout["groups"]):
        why = f"one σ per feature, trained with θ, at least model.sigma_floor {model.sigma_floor:g}"
        choices["model.sigma"] = {"value": model.sigma, "why": why if model.sigma == "learned" else GIVEN}
    fields = {**dataclasses.asdict(model), "likelihood": likelihood, "architecture": architecture,
              "filters": tuple(filters), "hidden": tuple(hidden), **(layout if likelihood == "columns" else {})}
    return ResolvedModel(**fields), choices


FAMILY_OF_TYPE = {"real": "gaussian", "binary": "bernoulli", "categorical": "categorical"}


def plain_table(columns) -> bool:
    """Every column real and complete: the table is modelled as an array of real values."""
    return all(c.type == "real" and not c.missing for c in columns or ())


def column_layout(value_type: str, columns, features: int, count_family: str) -> dict:
    """The likelihood "columns" layout of a table or count matrix: groups (family, first
    feature, width), runs of one family merged, a categorical column one group; the count
    features (the encoder reads log1p); the first feature of every column, as mask
    features, when any cell of the training data was missing."""
    if value_type == "count":
        return {"groups": ((count_family, 0, features),), "log1p_features": tuple(range(features)),
                "mask_features": ()}
    groups, log1p, starts, at = [], [], [], 0
    for column in columns or ():
        family = FAMILY_OF_TYPE.get(column.type, count_family)
        if groups and family == groups[-1][0] != "categorical":
            groups[-1] = (family, groups[-1][1], groups[-1][2] + 1)
        else:
            groups.append((family, at, column.width))
        log1p += [at] if column.type == "count" else []
        starts.append(at)
        at += column.width
    missing = any(column.missing > 0 for column in columns or ())
    return {"groups": tuple(groups), "log1p_features": tuple(log1p), "mask_features": tuple(starts) if missing else ()}


def conv_filters(side: int) -> tuple[int, ...]:
    """Conv2D widths: one stride-2 layer per halving while the side is even and >= 8, at most 3."""
    widths = []
    while side % 2 == 0 and side >= 8 and len(widths) < 3:
        widths.append(32 * 2 ** len(widths))
        side //= 2
    return tuple(widths) or (32,)


def mlp_hidden(features: int) -> tuple[int, int]:
    """Two Dense widths sized from the input: 4·features as a power of two in [64, 512], then half."""
    first = min(512, max(64, 2 ** round(math.log2(4 * features))))
    return first, first // 2


def resolve_epochs(training: TrainConfig, updates: int) -> tuple[TrainConfig, dict[str, dict]]:
    """train.epochs from the number of updates an epoch makes; other train knobs as given."""
    if training.epochs != AUTO:
        return training, {"train.epochs": {"value": training.epochs, "why": GIVEN}}
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(EPOCH_BUDGET_UPDATES / updates)))
    why = (f"about {EPOCH_BUDGET_UPDATES} updates of {updates} per epoch, within "
           f"[{MIN_EPOCHS}, {MAX_EPOCHS}]; early stopping may end sooner")
    return dataclasses.replace(training, epochs=epochs), {"train.epochs": {"value": epochs, "why": why}}


def resolve_warmup(loss: LossConfig, epochs: int) -> tuple[LossConfig, dict[str, dict]]:
    """loss.kl_warmup_epochs: the first tenth of the (resolved) epochs."""
    if loss.kl_warmup_epochs != AUTO:
        return loss, {"loss.kl_warmup_epochs": {"value": loss.kl_warmup_epochs, "why": GIVEN}}
    warmup = math.ceil(epochs / 10)
    return (dataclasses.replace(loss, kl_warmup_epochs=warmup),
            {"loss.kl_warmup_epochs": {"value": warmup, "why": f"the first tenth of {epochs} epochs"}})


def resolve_precision(precision: str, cpu_flags: set[str], gpu_capabilities: list[tuple[int, int]]
                      ) -> tuple[str, dict[str, dict]]:
    """train.precision from the hardware: GPUs' compute capabilities, else the CPU's flags."""
    if precision != AUTO:
        return precision, {"train.precision": {"value": precision, "why": GIVEN}}
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        if oldest >= (8, 0):
            value, why = "mixed_bfloat16", f"GPUs of compute capability {oldest[0]}.{oldest[1]}+ compute bf16"
        elif oldest >= (7, 0):
            value, why = "mixed_float16", f"GPUs of compute capability {oldest[0]}.{oldest[1]}: float16 tensor cores"
        else:
            value, why = "float32", f"GPUs of compute capability {oldest[0]}.{oldest[1]}: no tensor cores"
    else:
        native = sorted(set(NATIVE_BF16_CPU_FLAGS) & set(cpu_flags))
        value, why = (("mixed_bfloat16", f"the CPU computes bf16 natively ({', '.join(native)})") if native
                      else ("float32", "the CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag): emulated, slow"))
    return value, {"train.precision": {"value": value, "why": why}}


def resolve_steps_per_execution(training: TrainConfig, updates: int, replicas: int = 1
                                ) -> tuple[TrainConfig, int, dict[str, dict]]:
    """(train config, updates per epoch rounded up to whole calls, the choice).

    Replicated training (MirroredStrategy over several devices, multi_worker) takes one
    step per call: Keras' multi-step loop fails there (an unfed placeholder inside the
    loop, TensorFlow 2.21 / Keras 3.15, keras-team/keras#19246).
    """
    steps = training.steps_per_execution
    why = GIVEN
    replicated = replicas > 1 or training.distribution == "multi_worker"
    if replicated and steps not in (AUTO, 1):
        raise ConfigError(f"train.steps_per_execution must be 1 or 'auto' when training is replicated ({replicas} "
                          f"replicas in sync; Keras' multi-step loop fails there). Got {steps} instead.")
    if steps == AUTO and replicated:
        steps, why = 1, f"one step per call: Keras' multi-step loop fails under replicated training ({replicas} replicas)"
    elif steps == AUTO:
        steps = min(STEPS_PER_EXECUTION, updates)
        why = f"{STEPS_PER_EXECUTION} steps per call (fewer when an epoch is shorter)"
    updates = math.ceil(updates / steps) * steps  # Keras runs whole calls
    return (dataclasses.replace(training, steps_per_execution=steps), updates,
            {"train.steps_per_execution": {"value": steps, "why": why}})


def resolve_input(choice: str, stored_bytes: int) -> tuple[str, dict[str, dict]]:
    """memory when the rows' stored values take at most IN_MEMORY_BYTES, else mmap.

    Both read a batch by row and preprocess it the same way; memory saves the page-cache
    lookups, mmap keeps memory flat whatever the size of the data.
    """
    why = GIVEN
    if choice == AUTO:
        choice = "memory" if stored_bytes <= IN_MEMORY_BYTES else "mmap"
        why = (f"the fit rows take {stored_bytes / 2**20:,.0f} MiB: "
               f"{'at most' if choice == 'memory' else 'over'} {IN_MEMORY_BYTES / 2**30:g} GiB")
    return choice, {"train.input": {"value": choice, "why": why}}


def summary(choices: dict[str, dict]) -> str:
    """One log line: key=value for every choice, auto ones marked."""
    return ", ".join(f"{key}={item['value']}" + ("" if item["why"] == GIVEN else " (auto)")
                     for key, item in choices.items())


def check_model_fits_data(model: ResolvedModel, manifest: Manifest, where) -> None:
    """Raise PipelineError for an explicit model choice the prepared data (at `where`) cannot take."""
    shape, (lo, hi) = manifest.input_shape, manifest.value_range
    values = math.prod(shape)
    if model.latent_dim > values:
        raise PipelineError(f"model.latent_dim must be at most the number of values per example "
                            f"({values} for {where}, shape {shape}). Got {model.latent_dim} instead.")
    if model.architecture == "conv" and len(shape) != 3:
        raise PipelineError(f"model.architecture 'conv' needs H×W×C images, but {where} holds "
                            f"examples of shape {shape}; use 'mlp'")
    typed = manifest.value_type == "count" or (manifest.value_type == "columns" and not plain_table(manifest.columns))
    if model.likelihood != "columns" and typed:
        raise PipelineError(f"model.likelihood {model.likelihood!r} models every feature alike, but {where} holds "
                            f"{'a table of typed columns' if manifest.value_type == 'columns' else 'counts'}; "
                            "leave model.likelihood at auto (one likelihood per column type)")
    if model.likelihood == "columns" and manifest.value_type not in ("columns", "count"):
        raise PipelineError(f"model.likelihood 'columns' needs a table or a count matrix; {where} holds "
                            f"{manifest.value_type} values")
    if model.likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise PipelineError(f"model.likelihood 'bernoulli' needs inputs in [0, 1], but {where} holds "
                            f"values in [{lo:.3g}, {hi:.3g}] (data.scaling {manifest.scaling!r}); "
                            "use model.likelihood: gaussian or data.scaling: unit")
