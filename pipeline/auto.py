"""prepare's `auto` knobs, resolved from what the source reader says of the values, never
from a dataset's name. (Train's knobs are resolved in `pipeline.resolve`.)

Every resolution returns the value and the rule that chose it: prepare logs them and
records them in the manifest's `choices`, from where they reach the model bundle, the
latents' metadata and the report. An explicit value in params.yaml always wins.

The rules, and why:

- data.scaling: pixel levels (uint8 arrays, or images whose reader knows the top level,
  such as digits' 0..16) are divided by the top level into [0, 1], where a Bernoulli
  likelihood on grey levels is the usual model. Any other values are standardized per
  feature, because features of a table or vector come in unrelated units. An explicit
  model.likelihood decides instead: bernoulli needs [0, 1] (unit), gaussian standardize.
"""

from pipeline.config import AUTO, GIVEN


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
