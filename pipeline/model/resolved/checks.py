"""The errors for an explicit model choice the prepared data cannot take (an `auto` one is
resolved to fit it): the latent size and the architecture against the examples' shape, the
likelihood against their values. pipeline.model.resolve_model.check_model_fits_data runs both
before train builds anything; each error names the knob, the data and what to use instead."""

import math

from pipeline.data.manifest import Manifest, plain_table
from pipeline.model.vae_config import ResolvedModel
from pipeline.platform.errors import PipelineError
from pipeline.platform.families import LEVEL_FAMILIES


def check_shape_fits(model: ResolvedModel, manifest: Manifest, where) -> None:
    """Raise PipelineError for a latent_dim above the values per example, a conv on examples
    that are not H×W×C images, or a conv1d on examples that are not rows of values."""
    shape = manifest.feature_shape
    values = math.prod(shape)
    if model.latent_dim > values:
        raise PipelineError(
            f"model.latent_dim must be at most the number of values per example "
            f"({values} for {where}, shape {shape}). Got {model.latent_dim} instead."
        )
    if model.architecture == "conv" and len(shape) != 3:
        raise PipelineError(
            f"model.architecture 'conv' needs H×W×C images, but {where} holds "
            f"examples of shape {shape}; use 'mlp'"
        )
    if model.architecture == "conv1d" and (len(shape) not in (1, 2) or model.mask_features):
        raise PipelineError(
            f"model.architecture 'conv1d' needs rows of values, (length,) or (length, channels), "
            f"without missing cells, but {where} holds examples of shape {shape}"
            f"{' with missing cells' if model.mask_features else ''}; use 'mlp'"
        )


def check_likelihood_fits(model: ResolvedModel, manifest: Manifest, where) -> None:
    """Raise PipelineError for a likelihood the values cannot have: one family for every feature
    of typed columns or counts, `columns` for anything else, a mass on pixel levels without
    levels, a Bernoulli on values outside [0, 1]."""
    lo, hi = manifest.value_range
    typed = manifest.value_type == "count" or (
        manifest.value_type == "columns" and not plain_table(manifest.columns)
    )
    if model.likelihood != "columns" and typed:
        raise PipelineError(
            f"model.likelihood {model.likelihood!r} models every feature alike, but {where} holds "
            f"{'a table of typed columns' if manifest.value_type == 'columns' else 'counts'}; "
            "leave model.likelihood at auto (one likelihood per column type)"
        )
    if model.likelihood == "columns" and manifest.value_type not in ("columns", "count"):
        raise PipelineError(
            f"model.likelihood 'columns' needs a table or a count matrix; {where} holds "
            f"{manifest.value_type} values"
        )
    if model.likelihood in LEVEL_FAMILIES and not model.levels:
        raise PipelineError(
            f"model.likelihood {model.likelihood!r} is a mass on pixel levels, but {where} holds "
            f"{manifest.value_type} values (data.scaling {manifest.scaling!r}); use pixel data "
            "scaled to [0, 1] (data.scaling: unit) or leave model.likelihood at auto"
        )
    if model.likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise PipelineError(
            f"model.likelihood 'bernoulli' needs inputs in [0, 1], but {where} holds "
            f"values in [{lo:.3g}, {hi:.3g}] (data.scaling {manifest.scaling!r}); "
            "use model.likelihood: gaussian or data.scaling: unit"
        )
