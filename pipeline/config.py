"""params.yaml as typed, validated, frozen config objects.

`load_params` reads the file once and checks every key before any work starts: an
unknown key, a wrong type or an out-of-range value raises ConfigError naming the dotted
key, what was expected and what was given. The rest of the code receives these objects,
never the raw dict.
"""

import dataclasses
import difflib
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import ConfigError


def bounded(default, *, lo=None, hi=None, lo_open=False, hi_open=False):
    """A dataclass field whose numeric value must lie in [lo, hi] (or the open ends)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open})


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "fashion_mnist", "mnist"] = "digits"
    path: str | None = None  # a local directory of the source's files (IDX sources)
    test_fraction: float = bounded(0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    # Held out of train, seeded, for validation metrics and early diagnosis of overfitting.
    validation_fraction: float = bounded(0.1, lo=0, hi=1, hi_open=True)


@dataclass(frozen=True)
class ModelConfig:
    architecture: Literal["mlp", "conv"] = "mlp"  # conv needs H×W×C images
    latent_dim: int = bounded(8, lo=1)
    hidden: tuple[int, ...] = bounded((256, 128), lo=1)  # Dense widths (after the convs for conv)
    filters: tuple[int, ...] = bounded((32, 64), lo=1)  # conv only: Conv2D filters per layer
    # bernoulli for data in [0, 1]; gaussian with a fixed sigma keeps S bounded below.
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    sigma: float = bounded(1.0, lo=0, lo_open=True)


@dataclass(frozen=True)
class LossConfig:
    mc_samples: int = bounded(1, lo=1)  # m, samples of q(z|x) per example in Û
    beta: float = bounded(1.0, lo=0)  # weight on D in the training objective only
    kl_warmup_epochs: int = bounded(0, lo=0)  # ramp the weight on D from 0 to beta
    free_bits: float = bounded(0.0, lo=0)  # λ nats per latent dimension below which D_j is free
    gradient_estimator: Literal["reparameterized", "score_function"] = "reparameterized"
    score_baseline: bool = True  # score_function only: subtract a running mean of the surprisal


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = bounded(30, lo=1)
    batch_size: int = bounded(128, lo=1)
    learning_rate: float = bounded(1e-3, lo=0, lo_open=True)
    phi_steps: int = bounded(1, lo=1)  # encoder steps per decoder step; 1 = joint updates


@dataclass(frozen=True)
class EncodeConfig:
    batch_size: int = bounded(1024, lo=1)


@dataclass(frozen=True)
class UmapConfig:
    n_neighbors: int = bounded(15, lo=2)
    min_dist: float = bounded(0.1, lo=0)
    max_points: int = bounded(10_000, lo=10)


@dataclass(frozen=True)
class GradientVarianceConfig:
    repeats: int = bounded(50, lo=2)  # R gradient draws per estimator on one fixed batch
    batch_size: int = bounded(64, lo=1)


@dataclass(frozen=True)
class EvaluateConfig:
    # K for S_K; S_1, S_10, ... up to K are reported from the same K samples.
    importance_samples: int = bounded(100, lo=1)
    surprisal_examples: int = bounded(1000, lo=1)  # validation and test examples for U, D, S_K
    gradient_variance: GradientVarianceConfig = GradientVarianceConfig()
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
    """Read and validate params.yaml; raise ConfigError naming the first bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (expected the pipeline's params.yaml)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(error)})") from None
    return parse_params(raw or {}, source=str(path))


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    return _build(Params, raw, key="", source=source)


def as_dict(params: Params) -> dict:
    """The params as plain nested dicts (for metadata and logs)."""
    return dataclasses.asdict(params)


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
    if origin in (Union, types.UnionType) and type(None) in get_args(hint):
        inner = next(a for a in get_args(hint) if a is not type(None))
        return None if value is None else _check(inner, value, bounds, key, source)
    if origin is tuple:
        item = get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise _error(source, key, f"a list of {_describe(item, bounds, plural=True)}", value)
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
    return hint(value)


def _in_bounds(value, bounds) -> bool:
    lo, hi = bounds.get("lo"), bounds.get("hi")
    if lo is not None and (value <= lo if bounds["lo_open"] else value < lo):
        return False
    if hi is not None and (value >= hi if bounds["hi_open"] else value > hi):
        return False
    return True


def _describe(hint, bounds, plural: bool = False) -> str:
    noun = ("integers" if plural else "an integer") if hint is int else ("numbers" if plural else "a number")
    lo, hi = bounds.get("lo"), bounds.get("hi")
    if lo is not None and hi is not None:
        left, right = "(" if bounds["lo_open"] else "[", ")" if bounds["hi_open"] else "]"
        return f"{noun} in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{noun} {'>' if bounds['lo_open'] else '>='} {lo}"
    if hi is not None:
        return f"{noun} {'<' if bounds['hi_open'] else '<='} {hi}"
    return noun


def _error(source: str, key: str, expected: str, value, hint: str = "") -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}. Got {value!r} instead.{hint}")


def _dotted(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
