"""The model's `auto` knobs, resolved from the prepared data's manifest, never from a
dataset's name; and the check that explicit ones fit the data.

The rules, and why:

- model.likelihood: on pixel levels scaled to [0, 1], a mass on the data's own L levels:
  bernoulli when the pixels are binary (data.binarize), the one case where a Bernoulli is a
  mass on them; level_categorical (a logistic's log-masses plus L residual logits per
  value) while L·D ≤ 65,536 outputs, as it fits deterministic structure far better (three
  fixed 8×8 patterns of 256 levels: S_100 near 2 nats against 91 for the logistic alone,
  benchmarks/RESULTS.md); discretized_logistic (two outputs per value) beyond, where L
  logits per value would dominate the model's cost; `columns` (one family per column) for typed
  tables and count matrices; else bernoulli when every prepared value lies in [0, 1],
  gaussian otherwise. A Bernoulli forced on grey levels is allowed, with a warning: S is
  then not the surprisal of anything (Loaiza-Ganem & Cunningham 2019).
- model.sigma "learned" (the default) gives the gaussian one σ per feature, floored.
- model.architecture: conv for H×W×C examples with both sides at least 16 pixels; conv1d
  for rows of at least 16 values, (L,) or (L, C), that prepare found to be an ordered
  series (data.sequence: neighbouring values far more alike than random pairs); mlp
  otherwise. A convolution's locality prior pays once an example has more values than a
  Dense layer can cheaply pair up and neighbours are related; at 8×8 (64 values) one
  stride-2 layer leaves 4×4 and the mlp measured better (benchmarks/RESULTS.md,
  "Defaults"), and on unordered features (a shuffled series) locality means nothing.
- model.filters (conv, conv1d): one stride-2 convolution per halving of the shorter side
  (the length) while it is even and at least 8: three, and more while the side stays above
  8, so depth follows the size; widths doubling from FIRST_WIDTH to at most MAX_WIDTH:
  28 → 14 → 7 gives [32, 64], 64 → 8 [32, 64, 128], 128 → 8 [16, 32, 64, 128], 256 → 8
  [8, 16, 32, 64, 128]. A series starts at SERIES_FIRST_WIDTH (40 → 5: [64, 128, 256]):
  its layers have few positions, so width is cheap, and on MNIST-1D the wider layers'
  latents beat PCA's linear probe where [32, 64, 128]'s tied it (benchmarks/RESULTS.md,
  "signals.py"). Images wider than WIDTH_BUDGET_SIDE
  start narrower in proportion (a power of two, at least MIN_FIRST_WIDTH), so that each
  layer costs what one of a 64-pixel image does and the time per example grows with the
  depth, not with the pixels. At 64×64×3 a fourth layer (down to 4×4, [32, 64, 128, 256])
  measured worse in the same training time (linear 0.72 against 0.85, benchmarks/RESULTS.md).
- model.hidden: for conv and conv1d none (the heads read the flattened conv features); for
  mlp two Dense layers, the first 4× the input width as a power of two in [64, 512], the
  second half as wide; on fewer than SMALL_DATA_ROWS training rows only the second: two
  overfit them (breast cancer's 455: test S_100 2-4 nats lower with one; benchmarks/RESULTS.md).
"""

import dataclasses
import logging
import math

from pipeline.data.manifest import Manifest, plain_table
from pipeline.model.resolved import checks, flops
from pipeline.model.vae_config import ResolvedModel
from pipeline.platform.choices import GIVEN, Choice
from pipeline.platform.families import FAMILIES, LEVEL_FAMILIES
from pipeline.platform.params.config import ModelConfig

log = logging.getLogger(__name__)
CONV_MIN_SIDE = 16
# model.filters auto: the first layer's width (a series' twice that: its layers have few
# positions), the widest, and the side beyond which images start narrower so that each layer
# costs what one of a 64-pixel image does.
FIRST_WIDTH = 32
SERIES_FIRST_WIDTH = 64
MIN_FIRST_WIDTH = 8
MAX_WIDTH = 256
WIDTH_BUDGET_SIDE = 64
# level_categorical while its L logits per value stay within this many outputs per example.
LEVEL_CATEGORICAL_MAX_OUTPUTS = 2**16
SMALL_DATA_ROWS = 1_000  # model.hidden auto: an mlp on fewer training rows gets one layer
FAMILY_OF_TYPE = {"real": "gaussian", "binary": "bernoulli", "categorical": "categorical"}


def levels_of(manifest: Manifest) -> int | None:
    """L, the levels a prepared pixel takes: 2 when binarized, the pixel scale's top + 1 when
    the levels were divided into [0, 1] (data.scaling unit), else None (not levels)."""
    if manifest.value_type != "pixels" or manifest.pixel_levels is None:
        return None
    if manifest.preprocessing.get("binarize", "none") != "none":
        return 2
    return int(round(manifest.pixel_levels)) + 1 if manifest.scaling == "unit" else None


def is_series(manifest: Manifest) -> bool:
    """Whether prepare found the examples to be ordered series (its data.sequence choice)."""
    return manifest.choices.get("data.sequence", {}).get("value") == "series"


def resolve_model(
    model: ModelConfig,
    example_shape,
    value_range,
    value_type: str = "real",
    columns=None,
    levels: int | None = None,
    series: bool = False,
    covariates: int = 0,
    train_rows: int | None = None,
) -> tuple[ResolvedModel, dict[str, Choice]]:
    """Every `auto` of the model config, from what manifest.json says of the prepared data.

    Args:
        model: the model's params.
        example_shape: one example of x as the model reads it (the manifest's feature_shape).
        value_range: (lowest, highest) prepared value.
        value_type: pixels, real, count or columns (a table).
        columns: a table's columns (manifest.columns), else None.
        levels: L, the levels of a pixel (`levels_of`), else None.
        series: prepare found the examples to be ordered series (`is_series`).
        covariates: the inputs after x's that are covariates (the manifest's covariate_width).
        train_rows: the train split's rows (None: as many as a large dataset's).

    Returns the resolved model and the choices made, keyed "model.<knob>".
    """
    shape = list(example_shape)
    likelihood = _likelihood_choice(model, shape, value_range, value_type, columns, levels)
    architecture = Choice.of(model.architecture, *_architecture_rule(model, shape, series))
    choices = {
        "model.likelihood": likelihood,
        "model.architecture": architecture,
        "model.filters": Choice.of(model.filters, *_filters_rule(shape, architecture.value)),
        "model.hidden": Choice.of(model.hidden, *_hidden_rule(shape, architecture.value, train_rows)),
    }
    layout = column_layout(value_type, columns, math.prod(shape), model.count_likelihood)
    if likelihood.value == "gaussian" or any(family == "gaussian" for family, _, _ in layout["groups"]):
        why = f"one σ per feature, trained with θ, at least model.sigma_floor {model.sigma_floor:g}"
        choices["model.sigma"] = Choice(model.sigma, why if model.sigma == "learned" else GIVEN)
    return _resolved(model, choices, layout, levels, covariates), choices


def _likelihood_choice(
    model: ModelConfig, shape: list[int], value_range, value_type: str, columns, levels
) -> Choice:
    """model.likelihood, given or by `_likelihood_rule`; a Bernoulli on grey levels is allowed
    with a warning (S is then not the surprisal of anything)."""
    likelihood = Choice.of(
        model.likelihood, *_likelihood_rule(model, math.prod(shape), value_range, value_type, columns, levels)
    )
    if likelihood.value == "bernoulli" and levels and levels > 2:
        log.warning(
            "model.likelihood bernoulli on pixels of %d levels: a Bernoulli on grey levels is not a "
            "distribution over them, so S, S_K and E_K are not surprisals; leave model.likelihood at auto "
            "for a mass on the levels",
            levels,
        )
    return likelihood


def _filters_rule(shape: list[int], architecture: str) -> tuple[tuple[int, ...], str]:
    """model.filters auto: `conv_filters` of the shorter side (an image's) or the length (a
    series'); none in an mlp."""
    if architecture not in ("conv", "conv1d"):
        return (), "no conv layers in an mlp"
    image = architecture == "conv"
    side = min(shape[:2]) if image else shape[0]
    return (
        conv_filters(side, image),
        "one stride-2 layer per halving of the "
        f"{'shorter side' if image else 'length'} "
        f"{side} while even and >= 8: three, then more while above 8; widths doubling to at most "
        f"{MAX_WIDTH}"
        + (
            f", starting at {FIRST_WIDTH}·{WIDTH_BUDGET_SIDE}/{side} to keep each layer's cost"
            if image and side > WIDTH_BUDGET_SIDE
            else ""
        ),
    )


def _hidden_rule(shape: list[int], architecture: str, rows: int | None) -> tuple[tuple[int, ...], str]:
    """model.hidden auto: none after convolutions; in an mlp 4·features as a power of two in
    [64, 512], then half, and only the second on fewer than SMALL_DATA_ROWS training rows."""
    if architecture in ("conv", "conv1d"):
        return (), "the heads read the flattened conv features"
    first = min(512, max(64, 2 ** round(math.log2(4 * math.prod(shape)))))
    why = "4× the input width as a power of two in [64, 512], then half"
    if rows is not None and rows < SMALL_DATA_ROWS:
        return (first // 2,), f"{why}; only the second on {rows:,} training rows (two layers overfit)"
    return (first, first // 2), why


def _resolved(
    model: ModelConfig, choices: dict[str, Choice], layout: dict, levels, covariates: int
) -> ResolvedModel:
    """The ResolvedModel: the params with every choice's value, a table's column layout under
    likelihood columns, L for a mass on pixel levels, and the covariates."""
    likelihood = choices["model.likelihood"].value
    fields = {
        **dataclasses.asdict(model),
        **{key[6:]: c.value for key, c in choices.items()},
        "filters": tuple(choices["model.filters"].value),
        "hidden": tuple(choices["model.hidden"].value),
        **(layout if likelihood == "columns" else {}),
        "levels": levels if likelihood in LEVEL_FAMILIES else None,
        "covariates": covariates,
        "encode_covariates": model.encode_covariates and covariates > 0,
    }
    return ResolvedModel(**fields)


def _likelihood_rule(
    model: ModelConfig, values: int, value_range, value_type: str, columns, levels
) -> tuple[str, str]:
    lo, hi = value_range
    if levels == 2:
        return "bernoulli", "binary pixels (data.binarize): a Bernoulli is a mass on the two levels"
    if levels and levels * values <= LEVEL_CATEGORICAL_MAX_OUTPUTS:
        return "level_categorical", (
            f"pixel levels 0..{levels - 1} scaled to [0, 1]: a categorical on the {levels} "
            f"levels ({levels} × {values} logits, at most {LEVEL_CATEGORICAL_MAX_OUTPUTS})"
        )
    if levels:
        return "discretized_logistic", (
            f"pixel levels 0..{levels - 1} scaled to [0, 1]: a mass on the {levels} "
            f"levels ({levels} × {values} logits would exceed "
            f"{LEVEL_CATEGORICAL_MAX_OUTPUTS} outputs)"
        )
    if value_type == "columns" and plain_table(columns):  # as an array of real values: one Gaussian
        return "gaussian", "every column real, no cell missing: one gaussian over the standardized features"
    if value_type == "columns":
        return "columns", (
            "one family per column: gaussian (real), bernoulli (binary), categorical, "
            f"{model.count_likelihood} (count)"
        )
    if value_type == "count":
        return "columns", f"a count matrix: {model.count_likelihood} per feature"
    if 0 <= lo and hi <= 1:
        return "bernoulli", "prepared values lie in [0, 1]"
    return "gaussian", f"prepared values span [{lo:.3g}, {hi:.3g}], beyond [0, 1]"


def _architecture_rule(model: ModelConfig, shape: list[int], series: bool) -> tuple[str, str]:
    if len(shape) == 3 and min(shape[:2]) >= CONV_MIN_SIDE and model.filters != ():  # [] asks for no convs
        return "conv", f"H×W×C examples {shape}, both sides at least {CONV_MIN_SIDE}"
    if len(shape) == 3:
        return "mlp", f"images of {shape}: a side under {CONV_MIN_SIDE}, or model.filters []"
    if series and len(shape) in (1, 2) and shape[0] >= CONV_MIN_SIDE and model.filters != ():
        return "conv1d", f"ordered series of {shape[0]} values (data.sequence)"
    return "mlp", f"examples of shape {shape}: not H×W×C images, nor an ordered series (data.sequence)"


def column_layout(value_type: str, columns, features: int, count_family: str) -> dict:
    """The likelihood "columns" layout of a table or count matrix: groups (family, first
    feature, width), runs of one family merged, a categorical column one group; the count
    features (the encoder reads log1p); the first feature of every column, as mask
    features, when any cell of the training data was missing."""
    if value_type == "count":
        return {
            "groups": ((count_family, 0, features),),
            "log1p_features": tuple(range(features)),
            "mask_features": (),
        }
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
    return {
        "groups": tuple(groups),
        "log1p_features": tuple(log1p),
        "mask_features": tuple(starts) if missing else (),
    }


def conv_filters(side: int, image: bool = True) -> tuple[int, ...]:
    """Convolution widths: one stride-2 layer per halving while the side (length) is even and
    >= 8, three of them, and more while it stays above 8; widths doubling from FIRST_WIDTH
    (SERIES_FIRST_WIDTH for a series), at most MAX_WIDTH, an image wider than
    WIDTH_BUDGET_SIDE starting narrower in proportion."""
    first = FIRST_WIDTH if image else SERIES_FIRST_WIDTH
    if image and side > WIDTH_BUDGET_SIDE:  # a power of two: 128 px start at 16, 256 px at 8
        first = max(MIN_FIRST_WIDTH, FIRST_WIDTH // 2 ** math.ceil(math.log2(side / WIDTH_BUDGET_SIDE)))
    widths = []
    while side % 2 == 0 and side >= 8 and (len(widths) < 3 or side > 8):
        widths.append(min(MAX_WIDTH, first * 2 ** len(widths)))
        side //= 2
    return tuple(widths) or (first,)


def params_per_value(model: ResolvedModel) -> int:
    """The decoder's outputs per value of x for the model's likelihood (its object's
    `params_per_value`, known here without building it)."""
    return FAMILIES[model.likelihood].params_per_value(model.levels)


def forward_flops(shape, model: ResolvedModel, params_per_value: int) -> int:
    """The FLOPs (2 per multiply-add) of one example's forward pass through the encoder and
    decoder: every convolution and Dense layer (not a flow's steps nor VampPrior's inputs). A
    training step costs about 3× this (benchmarks/flops.py counts the ops TensorFlow runs)."""
    if model.architecture not in ("conv", "conv1d"):
        return flops.mlp_flops(shape, model, params_per_value)
    return flops.conv_flops(shape, model, params_per_value)


def check_model_fits_data(model: ResolvedModel, manifest: Manifest, where) -> None:
    """Raise PipelineError for an explicit model choice the prepared data (at `where`) cannot take."""
    checks.check_shape_fits(model, manifest, where)
    checks.check_likelihood_fits(model, manifest, where)
