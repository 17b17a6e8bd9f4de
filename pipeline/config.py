"""params.yaml as typed, validated, frozen config objects.

`load_params` reads the file once and checks every key before any work starts: an
unknown key, a wrong type or an out-of-range value raises ConfigError naming the dotted
key, what was expected and what was given. The rest of the code receives these objects,
never the raw dict.
"""

import dataclasses
import difflib
import logging
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
# The largest integer any knob takes: counts and seeds go to TensorFlow and numpy as int32.
INT_MAX = 2**31 - 1
DEFAULT_DATA_PATH = "data/raw"
# The value of a knob resolved from the data or the hardware (pipeline.auto says how).
AUTO = "auto"
Auto = Literal["auto"]


def bounded(default, *, lo=None, hi=None, lo_open=False, hi_open=False):
    """A dataclass field whose numeric value must lie in [lo, hi] (or the open ends)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open})


@dataclass(frozen=True)
class NpzConfig:
    x_key: str = "x"
    y_key: str | None = "y"  # null: no labels


@dataclass(frozen=True)
class TableConfig:
    label_column: str | None = "label"  # null: no labels
    # null: every column but the label
    feature_columns: tuple[str, ...] | None = field(default=None, metadata={"min_length": 1, "noun": "column names"})


@dataclass(frozen=True)
class ImagesConfig:
    size: tuple[int, ...] | None = field(default=None, metadata={"lo": 1, "length": 2})  # [H, W]
    color: Literal["grey", "rgb"] = "grey"


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "fashion_mnist", "mnist", "idx", "npz", "table", "image_folder"] = "digits"
    # The local file or directory a source reads; a DVC dependency of prepare.
    path: str = DEFAULT_DATA_PATH
    npz: NpzConfig = NpzConfig()
    table: TableConfig = TableConfig()
    images: ImagesConfig = ImagesConfig()
    # unit: to [0, 1] (pixels by their range, other features by train min/max);
    # standardize: zero mean, unit variance per feature on train (for a gaussian likelihood).
    scaling: Literal["auto", "unit", "standardize", "none"] = AUTO
    binarize: Literal["none", "static", "dynamic"] = "none"  # dynamic: resampled every epoch
    binarize_threshold: float = bounded(0.5, lo=0, hi=1, lo_open=True, hi_open=True)  # static only
    max_examples: int | None = bounded(None, lo=2)  # a seeded, stratified subsample
    test_fraction: float = bounded(0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    # Held out of train, seeded, for validation metrics and early diagnosis of overfitting.
    validation_fraction: float = bounded(0.1, lo=0, hi=1, hi_open=True)


@dataclass(frozen=True)
class ModelConfig:
    architecture: Literal["auto", "mlp", "conv"] = AUTO  # conv needs H×W×C images
    latent_dim: int = bounded(8, lo=1)
    hidden: tuple[int, ...] | Auto = bounded(AUTO, lo=1)  # Dense widths (after the convs for conv)
    filters: tuple[int, ...] | Auto = bounded(AUTO, lo=1)  # conv only: Conv2D filters per layer
    # bernoulli for data in [0, 1]; gaussian for real values. Both keep S bounded below.
    likelihood: Literal["auto", "bernoulli", "gaussian"] = AUTO
    # gaussian only: a fixed σ, or "learned": one trainable σ per feature, at least sigma_floor
    sigma: float | Literal["learned"] = bounded("learned", lo=0, lo_open=True)
    sigma_floor: float = bounded(0.05, lo=0, lo_open=True)
    activation: Literal["relu", "silu", "gelu"] = "relu"  # of every hidden and conv layer
    # conv only: residual blocks (two 3×3 convs and a skip) at each resolution, both networks
    residual_blocks: int = bounded(0, lo=0)
    # conv only: "strided": the last upsampling outputs the likelihood parameters (the
    # encoder's mirror); "full": a stride-1 layer at full resolution (filters[0] wide) before it
    decoder_top: Literal["strided", "full"] = "strided"


@dataclass(frozen=True)
class LossConfig:
    mc_samples: int = bounded(1, lo=1)  # m, samples of q(z|x) per example in Û
    beta: float = bounded(1.0, lo=0)  # weight on D in the training objective only
    # ramp the weight on D from 0 to beta; auto: the first tenth of the epochs (pipeline.auto)
    kl_warmup_epochs: int | Auto = bounded(AUTO, lo=0)
    # λ nats per latent dimension below which D_j is free: keeps units from collapsing
    free_bits: float = bounded(0.25, lo=0)
    gradient_estimator: Literal["reparameterized", "score_function"] = "reparameterized"
    # subo: minimise Û (the article's proxy); iwae: minimise S_K with K = mc_samples
    # (Burda et al.), a tighter bound; its D term has no warm-up or free bits
    objective: Literal["subo", "iwae"] = "subo"
    score_baseline: bool = True  # score_function only: subtract a running mean of the surprisal


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | Auto = bounded(AUTO, lo=1)  # auto: from the number of examples (pipeline.auto)
    batch_size: int = bounded(64, lo=1)  # global: split across replicas
    learning_rate: float = bounded(1e-3, lo=0, lo_open=True)
    # cosine decays to 0 over all epochs; warmup_cosine first ramps up over the first epoch
    lr_schedule: Literal["constant", "cosine", "warmup_cosine"] = "constant"
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    clipnorm: float | None = bounded(None, lo=0, lo_open=True)  # per-gradient norm clipping
    early_stopping_patience: int | None = bounded(10, lo=1)  # epochs without a better val U
    phi_steps: int = bounded(1, lo=1)  # encoder steps per decoder step; 1 = joint updates
    # auto: mixed_bfloat16 on native-bf16 CPUs and bf16 GPUs, mixed_float16 on older tensor-core GPUs
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = AUTO
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    deterministic: bool = False  # TensorFlow op determinism: identical runs, somewhat slower
    steps_per_execution: int | Auto = bounded(AUTO, lo=1)  # train steps per compiled call
    # Each epoch, U, S_K and E_K = U − S_K on this many fixed validation examples (0: off),
    # K = bound_samples: how tight the bound is during optimisation (dvclive bound/*).
    bound_examples: int = bounded(128, lo=0)
    bound_samples: int = bounded(100, lo=1)
    jit_compile: bool = False  # XLA-compile the train step
    # Where batches are read from: memory (the fit rows copied in once) or mmap (read by row
    # from the memory-mapped prepared file every time); auto: memory up to 1 GiB of them.
    input: Literal["auto", "memory", "mmap"] = AUTO


@dataclass(frozen=True)
class EncodeConfig:
    batch_size: int = bounded(1024, lo=1)
    workers: int = bounded(1, lo=1)  # processes, each writing part-<k>.parquet of every split


@dataclass(frozen=True)
class UmapConfig:
    split: Literal["train", "test"] = "test"
    n_neighbors: int = bounded(15, lo=2)
    min_dist: float = bounded(0.1, lo=0)
    max_points: int = bounded(10_000, lo=10)


@dataclass(frozen=True)
class GradientVarianceConfig:
    repeats: int = bounded(50, lo=2)  # R gradient draws per estimator on one fixed batch
    batch_size: int = bounded(64, lo=1)


@dataclass(frozen=True)
class ProbeConfig:
    c_grid: tuple[float, ...] = field(default=(0.01, 0.1, 1.0, 10.0),  # logistic regression C
                                      metadata={"lo": 0, "lo_open": True, "min_length": 1})
    validation_fraction: float = bounded(0.2, lo=0, hi=1, lo_open=True, hi_open=True)  # of train, to pick C
    # A seeded, stratified cap on the train rows every probe sees (raw 784-d inputs are slow).
    max_train_examples: int = bounded(20_000, lo=10)
    # The same on test rows: a probe's score is a mean over them, ±0.005 at 10,000.
    max_test_examples: int = bounded(10_000, lo=10)


@dataclass(frozen=True)
class EvaluateConfig:
    # K for S_K; S_1, S_10, ... up to K are reported from the same K samples.
    importance_samples: int = bounded(100, lo=1)
    surprisal_examples: int = bounded(1000, lo=1)  # validation and test examples for U, D, S_K
    gradient_variance: GradientVarianceConfig = GradientVarianceConfig()
    probe: ProbeConfig = ProbeConfig()
    knn_k: int = bounded(5, lo=1)
    umap: UmapConfig = UmapConfig()


@dataclass(frozen=True)
class Params:
    seed: int = bounded(0, lo=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    encode: EncodeConfig = EncodeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError naming the first bad key.

    Keys the file leaves out take the code's defaults (the shipped params.yaml lists the
    same values); the keys filled in are logged, so a lost block does not go unnoticed.
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (expected the pipeline's params.yaml)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(error)})") from None
    except ConfigError as error:  # a duplicate key
        raise ConfigError(f"{path}: {error}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; expected the pipeline's params "
                          "(restore the shipped file with `git checkout params.yaml`)")
    params = parse_params(raw, source=str(path))
    missing = missing_keys(raw)
    if missing:
        log.warning("%s does not set %s; using the defaults", path,
                    ", ".join(f"{key}={value!r}" for key, value in missing.items()))
    return params


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    params = _build(Params, raw, key="", source=source)
    _check_combinations(params, source)
    return params


def as_dict(params: Params) -> dict:
    """The params as plain nested dicts (for metadata and logs)."""
    return dataclasses.asdict(params)


def leaf_keys(cls=Params, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of every knob under a config class, in file order ("model.latent_dim", ...)."""
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            keys += leaf_keys(type(f.default), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return tuple(keys)


def lookup(params: Params, key: str) -> Any:
    """The value of a dotted key, e.g. lookup(params, "train.epochs")."""
    value = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set raw["a"]["b"] = value for key "a.b" in a params mapping, creating blocks as needed."""
    *blocks, last = key.split(".")
    for block in blocks:
        raw = raw.setdefault(block, {})
    raw[last] = value


def missing_keys(raw: dict) -> dict[str, Any]:
    """{dotted key: default} for every leaf key that `raw` leaves out."""
    defaults = Params()
    out = {}
    for key in leaf_keys():
        if not _given(raw, key):
            default = lookup(defaults, key)
            out[key] = list(default) if isinstance(default, tuple) else default
    return out


def _given(raw: dict, key: str) -> bool:
    """Whether raw sets the dotted key (to any value, null included)."""
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                                  f"(first on line {seen[key] + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_combinations(params: Params, source: str) -> None:
    """Values that are valid alone but not together."""
    if params.model.architecture == "conv" and not params.model.filters:
        raise ConfigError(f"{source}: model.filters must list at least one Conv2D width when "
                          "model.architecture is 'conv'. Got [] instead.")
    steps, distribution = params.train.steps_per_execution, params.train.distribution
    if distribution == "multi_worker" and steps not in (AUTO, 1):
        raise ConfigError(f"{source}: train.steps_per_execution must be 1 or 'auto' when train.distribution is "
                          f"'multi_worker' (Keras' multi-step loop fails there). Got {steps} instead.")
    if params.loss.objective == "iwae" and params.loss.gradient_estimator != "reparameterized":
        raise ConfigError(f"{source}: loss.objective 'iwae' needs loss.gradient_estimator 'reparameterized'. "
                          f"Got {params.loss.gradient_estimator!r} instead.")


def _build(cls, raw: Any, key: str, source: str):
    if not isinstance(raw, dict):
        raise _error(source, key or "the top level", "a mapping of keys to values", raw)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" (did you mean '{_dotted(key, close[0])}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{_dotted(key, name)}'{hint}; "
                              f"valid keys here: {', '.join(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _check(hints[name], raw[name], spec.metadata, _dotted(key, name), source)
    return cls(**values)


def _check(hint, value, bounds, key: str, source: str):
    """Return `value` converted to `hint`, or raise ConfigError."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f" (did you mean '{close[0]}'?)" if close else ""
            raise _error(source, key, "one of " + ", ".join(map(repr, choices)), value, hint_text)
        return value
    if origin in (Union, types.UnionType):  # X | None, X | Literal["auto"], X | Literal["learned"]
        args = get_args(hint)
        words = tuple(v for a in args if get_origin(a) is Literal for v in get_args(a))
        if (value is None and type(None) in args) or (isinstance(value, str) and value in words):
            return value
        inner = next(a for a in args if a is not type(None) and get_origin(a) is not Literal)
        try:
            return _check(inner, value, bounds, key, source)
        except ConfigError as error:  # name the words too, when the message is about this key
            if not words:
                raise
            own = f"{source}: {key} must be "
            raise ConfigError(str(error).replace(own, own + " or ".join(map(repr, words)) + " or ", 1)) from None
    if origin is tuple:
        item = get_args(hint)[0]
        length, min_length = bounds.get("length"), bounds.get("min_length", 0)
        if (not isinstance(value, (list, tuple)) or (length is not None and len(value) != length)
                or len(value) < min_length):
            count = f"{length} " if length else ""
            size = "a non-empty list" if min_length else "a list"
            raise _error(source, key, f"{size} of {count}{_describe(item, bounds, plural=True)}", value)
        return tuple(_check(item, v, bounds, f"{key}[{i}]", source) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise _error(source, key, "true or false", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _error(source, key, "a string", value)
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:  # pragma: no cover - a new field type needs a branch above
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    if not ok or not _in_bounds(value, bounds):
        raise _error(source, key, _describe(hint, bounds), value)
    if hint is int and abs(value) > INT_MAX:
        raise _error(source, key, f"{_describe(hint, bounds)} and at most {INT_MAX}", value)
    return hint(value)


def _in_bounds(value, bounds) -> bool:
    lo, hi = bounds.get("lo"), bounds.get("hi")
    if lo is not None and (value <= lo if bounds.get("lo_open") else value < lo):
        return False
    if hi is not None and (value >= hi if bounds.get("hi_open") else value > hi):
        return False
    return True


def _describe(hint, bounds, plural: bool = False) -> str:
    if hint is str:
        return bounds.get("noun", "strings" if plural else "a string")
    noun = ("integers" if plural else "an integer") if hint is int else ("numbers" if plural else "a number")
    lo, hi = bounds.get("lo"), bounds.get("hi")
    lo_open, hi_open = bounds.get("lo_open", False), bounds.get("hi_open", False)
    if lo is not None and hi is not None:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return f"{noun} in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{noun} {'<' if hi_open else '<='} {hi}"
    return noun


def _error(source: str, key: str, expected: str, value, hint: str = "") -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}. Got {value!r} instead.{hint}")


def _dotted(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
