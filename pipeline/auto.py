"""`auto` knobs resolved from the data's properties, never from a dataset's name.

prepare resolves `data.scaling` from what the source reader says about the values; train
resolves the model and the epoch budget from the prepared manifest. Every resolution
returns the value and the rule that chose it: train logs them in one line and stores them
in the model bundle (choices.json), from where they reach the latents' metadata and the
report. An explicit value in params.yaml always wins.

The rules, and why:

- data.scaling: pixel levels (uint8 arrays, or images whose reader knows the top level,
  such as digits' 0..16) are divided by the top level into [0, 1], where a Bernoulli
  likelihood on grey levels is the usual model. Any other values are standardized per
  feature, because features of a table or vector come in unrelated units. An explicit
  model.likelihood decides instead: bernoulli needs [0, 1] (unit), gaussian standardize.
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
  when an epoch is shorter, 1 under multi_worker; an epoch is rounded up to whole calls.
- loss.kl_warmup_epochs: the first tenth of the epochs (at least one). With the weight
  on D rising from 0 the encoder first learns to carry information, which the decoder
  then uses; started at full weight, small real-valued datasets collapsed (D ≈ 0) in
  the benchmark.
"""

import dataclasses
import math

from pipeline.config import AUTO, LossConfig, ModelConfig, TrainConfig

EPOCH_BUDGET_UPDATES = 10_000
MIN_EPOCHS, MAX_EPOCHS = 10, 200
CONV_MIN_SIDE = 16
# Train steps per compiled call: the per-call overhead (~1 ms on a CPU) then costs a few
# percent of a step of the smallest models here instead of doubling it.
STEPS_PER_EXECUTION = 32
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# train.input auto: the fit rows are copied into memory up to this many bytes (stored dtype).
IN_MEMORY_BYTES = 1 << 30
GIVEN = "set in params.yaml"


def pixel_levels(dtype, declared: float | None) -> float | None:
    """The top of the pixel scale, or None for real-valued data.

    declared: what the source reader knows (e.g. 16 for scikit-learn's digits); otherwise
    any uint8 array counts as pixels on 0..255.
    """
    if declared is not None:
        return float(declared)
    return 255.0 if str(dtype) == "uint8" else None


def resolve_scaling(scaling: str, likelihood: str, levels: float | None) -> tuple[str, str]:
    """(data.scaling, why) for prepare."""
    if scaling != AUTO:
        return scaling, GIVEN
    if likelihood == "bernoulli":
        return "unit", "model.likelihood bernoulli needs values in [0, 1]"
    if likelihood == "gaussian":
        return "standardize", "model.likelihood gaussian models standardized features"
    if levels is not None:
        return "unit", f"pixel levels 0..{levels:g}: divided by {levels:g} into [0, 1]"
    return "standardize", "real-valued features: zero mean and unit variance per feature"


def resolve_model(model: ModelConfig, manifest: dict) -> tuple[ModelConfig, dict[str, dict]]:
    """The model config with every `auto` resolved from the manifest, and the choices made."""
    shape = manifest["example_shape"]
    lo, hi = manifest["value_range"]
    choices = {}

    def choose(key, given, value, why):
        resolved = given if given != AUTO else value
        choices[f"model.{key}"] = {"value": list(resolved) if isinstance(resolved, tuple) else resolved,
                                   "why": GIVEN if given != AUTO else why}
        return resolved

    likelihood = choose("likelihood", model.likelihood, *(
        ("bernoulli", "prepared values lie in [0, 1]") if 0 <= lo and hi <= 1
        else ("gaussian", f"prepared values span [{lo:.3g}, {hi:.3g}], beyond [0, 1]")))
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
    if likelihood == "gaussian":
        why = f"one σ per feature, trained with θ, at least model.sigma_floor {model.sigma_floor:g}"
        choices["model.sigma"] = {"value": model.sigma, "why": why if model.sigma == "learned" else GIVEN}
    resolved = dataclasses.replace(model, likelihood=likelihood, architecture=architecture,
                                   filters=tuple(filters), hidden=tuple(hidden))
    return resolved, choices


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


def resolve_steps_per_execution(training: TrainConfig, updates: int) -> tuple[TrainConfig, int, dict[str, dict]]:
    """(train config, updates per epoch rounded up to whole calls, the choice).

    Under multi_worker it is 1: Keras' multi-step loop fails there (an unfed placeholder
    inside the loop, TensorFlow 2.21 / Keras 3.15).
    """
    steps = training.steps_per_execution
    why = GIVEN
    if steps == AUTO and training.distribution == "multi_worker":
        steps, why = 1, "one step per call: Keras' multi-step loop fails under multi_worker"
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
