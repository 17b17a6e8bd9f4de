"""prepare's `auto` choices, resolved from what the source reader saw of the values, never
from a dataset's name. (Train's knobs are resolved in `pipeline.training.resolve_run`.)

Every resolution returns the value and the rule that chose it: prepare logs them and
records them in the manifest's `choices`, from where they reach the model bundle, the
latents' metadata and the report. An explicit value in params.yaml always wins.

The rules, and why:

- data.scaling: pixel levels (uint8 arrays, or images whose reader knows the top level,
  such as digits' 0..16) are divided by the top level into [0, 1], where the model's
  discretized logistic puts a mass on each of the L levels. Any other values are standardized per
  feature, because features of a table or vector come in unrelated units. An explicit
  model.likelihood decides instead: bernoulli and the level masses need [0, 1]
  (unit), gaussian standardize.
  Counts and table codes are not scaled (a table's real columns are, as above).
- the value type of an array (npz, IDX): pixels as above; count when every value is a
  whole number ≥ 0, with a zero among them and some above 1, in a 2-D array (rows of
  counts, such as a gene expression or word count matrix: negative binomial); else real.
- a table's column types: pipeline.data.resolve_columns.
- data.sequence, for examples that are a row of values (L,) or (L, C) with L ≥ SEQUENCE_MIN_LENGTH
  (arrays of reals or pixels, tables whose columns are all real and complete): `series`
  when neighbouring values are far more alike than values picked at random, so the order
  of the features carries information a 1-D convolution can use (model.architecture conv1d):
  on up to SEQUENCE_SAMPLE_ROWS train rows, each position standardized, the mean correlation
  of neighbours r₁ is at least SERIES_MIN_CORRELATION and exceeds the mean |correlation|
  of random pairs of positions by SERIES_MIN_MARGIN. Otherwise `features`: an unordered
  vector (shuffling its columns would change nothing), which an MLP models.
- data.images.size (image folders): as read when the images the reader sampled (at most
  AUTO_SIZE_SAMPLE, evenly spread) share one size; else a square of their median shorter
  side, rounded down to a multiple of 8 (three stride-2 layers then halve it exactly) and at
  most AUTO_MAX_SIDE, a side that keeps a first run on two cores to minutes.
- data.images.color: rgb when any pixel of any image has colour (channels that differ),
  else grey.
"""

import numpy as np

from pipeline.platform.choices import Choice
from pipeline.platform.families import FAMILIES

# data.images.size auto: the reader samples the sizes of at most this many files, and the
# side it resizes to is at most AUTO_MAX_SIDE.
AUTO_SIZE_SAMPLE = 2000
AUTO_MAX_SIDE = 128


def resolve_image_size(sizes: list[tuple[int, int]]) -> Choice:
    """data.images.size auto from the (height, width) of the images sampled: "as read", or
    [side, side] by the rule above."""
    distinct = sorted(set(sizes))
    if len(distinct) == 1:
        return Choice("as read", f"every image read has size {distinct[0][0]} × {distinct[0][1]}")
    median = int(np.median([min(h, w) for h, w in sizes]))
    side = max(8, min(AUTO_MAX_SIDE, median // 8 * 8))
    return Choice(
        [side, side],
        f"{len(distinct)} sizes among {len(sizes)} images read (from {distinct[0][0]} × "
        f"{distinct[0][1]} to {distinct[-1][0]} × {distinct[-1][1]}); a square of their "
        f"median shorter side {median}, a multiple of 8, at most {AUTO_MAX_SIDE}",
    )


def resolve_color(first_coloured: int | None) -> Choice:
    """data.images.color auto, given the first image (in file order) with colour, or None."""
    if first_coloured is None:
        return Choice("grey", "every pixel of every image has R = G = B")
    return Choice("rgb", f"image {first_coloured} (in file order) has colour")


def pixel_levels(dtype, declared: float | None) -> float | None:
    """The top of the pixel scale, or None for real-valued data.

    declared: what the source reader knows (e.g. 16 for scikit-learn's digits); otherwise
    any uint8 array counts as pixels on 0..255.
    """
    if declared is not None:
        return float(declared)
    return 255.0 if str(dtype) == "uint8" else None


def value_type(
    ndim: int, levels: float | None, low: float, high: float, integral: bool, table: bool
) -> tuple[str, str]:
    """(value type, why) of the examples: pixels, count, real, or columns for a table."""
    if table:
        return "columns", "a table: one likelihood per column, by its type"
    if levels is not None:
        return "pixels", f"pixel levels 0..{levels:g}"
    if ndim == 2 and integral and low == 0 and high > 1:
        return "count", f"rows of whole numbers from 0 to {high:g}: counts"
    return "real", "real values"


def resolve_scaling(scaling: str, likelihood: str, levels: float | None, kind: str = "real") -> Choice:
    """data.scaling for prepare; kind: the value type."""
    return Choice.of(scaling, *_scaling(likelihood, levels, kind))


def _scaling(likelihood: str, levels: float | None, kind: str) -> tuple[str, str]:
    if kind == "count":
        return "none", "counts are modelled as they are (the encoder reads log1p)"
    family = FAMILIES.get(likelihood)
    if family and family.scaling:
        return family.scaling, family.scaling_why.format(name=likelihood)
    if levels is not None:
        return "unit", f"pixel levels 0..{levels:g}: divided by {levels:g} into [0, 1]"
    if kind == "columns":
        return "standardize", "a table's real columns: zero mean and unit variance each"
    return "standardize", "real-valued features: zero mean and unit variance per feature"


SEQUENCE_MIN_LENGTH = 16
SEQUENCE_SAMPLE_ROWS = 2000
SERIES_MIN_CORRELATION = 0.5
SERIES_MIN_MARGIN = 0.2


def sequence_rule(x: np.ndarray) -> tuple[str, str] | None:
    """(data.sequence, why) from stored examples x of shape (n, L) or (n, L, C), or None
    when they are not rows of values (images, short rows): the rule in the docstring."""
    if x.ndim not in (2, 3) or x.shape[1] < SEQUENCE_MIN_LENGTH or len(x) < 3:
        return None
    rows = np.linspace(0, len(x) - 1, min(len(x), SEQUENCE_SAMPLE_ROWS)).astype(int)
    z = np.asarray(x[rows], np.float64).reshape(len(rows), x.shape[1], -1)
    spread = z.std(axis=0)
    # a constant position correlates with nothing
    z = (z - z.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    length = z.shape[1]
    neighbours = float((z[:, 1:] * z[:, :-1]).mean())
    pairs = np.random.default_rng(0).integers(0, length, (2, 4 * length))
    pairs = pairs[:, pairs[0] != pairs[1]]
    random = float(np.abs((z[:, pairs[0]] * z[:, pairs[1]]).mean(axis=(0, 2))).mean())
    why = (
        f"neighbouring values correlate {neighbours:.2f}, random pairs of the {length} positions {random:.2f}"
    )
    series = neighbours >= SERIES_MIN_CORRELATION and neighbours >= random + SERIES_MIN_MARGIN
    return ("series", f"{why}: an ordered series") if series else ("features", f"{why}: unordered features")
