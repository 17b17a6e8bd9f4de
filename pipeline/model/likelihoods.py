"""The decoder's likelihood p_θ(x | z): one object per family, and one over column groups.

Training, evaluation, sampling and pictures all go through these objects, so the branch on
the likelihood family is written once. Every family keeps the surprisal S bounded below
(article, "Probability Density"):

- Bernoulli, Categorical, NegativeBinomial, Poisson and the masses on pixel levels
  (LevelCategorical, DiscretizedLogistic: pipeline.model.pixel_levels) are probability
  masses: each factor is at most 1, so log 1/p(x | z) ≥ 0. Bernoulli is a mass only on
  binary values: on grey levels in [0, 1] it sums to more than 1 over them
  (Loaiza-Ganem & Cunningham 2019), so pixel levels get one of the level masses.
- Gaussian is a density: its σ is fixed, or learned per feature but never below a floor
  (model.sigma_floor, see layers.LearnedSigma), so log 1/p ≥ log σ_floor + ½ log 2π per
  feature; a σ that may shrink to 0 would leave S without a lower bound.

Tables and count matrices use `Columns`: p(x | z) = Π_c p_c(x_c | z), one family per
column group over its slice of the decoder's output. A missing cell (NaN in x) drops its
factor, so the surprisal is exactly that of the observed part, log 1/p(x_obs | z).
"""

import math

from keras import ops

from pipeline.model import kernels
from pipeline.model.layers import DISPERSION_FLOOR, LearnedSigma
from pipeline.model.pixel_levels import DiscretizedLogistic, LevelCategorical, feature_axes
from pipeline.model.subo import LOG_2PI
from pipeline.model.vae_config import ResolvedModel


def _lgamma(x):
    """log Γ(x). keras.ops has none; the project runs on TensorFlow only (pipeline.training.train checks)."""
    import tensorflow as tf

    return tf.math.lgamma(x)


class Bernoulli:
    """p(x | z) = Π Bernoulli(x_i; sigmoid(logits_i)); x may be any value in [0, 1]."""

    name = "bernoulli"
    params_per_value = 1  # decoder outputs per value of x

    @classmethod
    def of(cls, **options):
        """The family for the model's options (sigma, groups, dispersion, levels): make_likelihood."""
        return cls()

    def per_feature(self, x, logits):
        """log 1/p(x_i | z) per feature: softplus(l) - x·l = -[x log σ(l) + (1 - x) log(1 - σ(l))]."""
        return ops.softplus(logits) - x * logits

    def surprisal(self, x, logits):
        """log 1/p(x | z), summed over the feature axes of x.

        x: (B, *F); logits: (..., B, *F) with any leading sample axes. Returns (..., B).
        """
        return ops.sum(self.per_feature(x, logits), axis=feature_axes(x))

    def mean(self, logits):
        return ops.sigmoid(logits)

    def get_config(self) -> dict:
        return {"likelihood": self.name}


class Gaussian:
    """p(x | z) = N(x; mean, diag σ²), σ fixed or given per feature.

    sigma: a number > 0, or a callable returning σ for each feature (a tensor of one
    example's shape, e.g. a learned σ); `get_config` records the latter as "learned".
    """

    name = "gaussian"
    params_per_value = 1

    @classmethod
    def of(cls, sigma=1.0, **options):
        return cls(sigma)

    def __init__(self, sigma=1.0):
        if not callable(sigma) and not sigma > 0:
            raise ValueError(f"sigma must be > 0. Got {sigma!r} instead.")
        self.sigma = sigma if callable(sigma) else float(sigma)

    def per_feature(self, x, mean, sigma=None):
        """(x_i - mean_i)² / 2σ_i² + log σ_i + ½ log 2π per feature (σ: this slice's, if given)."""
        sigma = self._sigma() if sigma is None else sigma
        log_sigma = math.log(sigma) if isinstance(sigma, float) else ops.log(sigma)  # a number stays float64
        return 0.5 * ops.square((x - mean) / sigma) + log_sigma + 0.5 * LOG_2PI

    def surprisal(self, x, mean):
        """log 1/p(x | z) = Σ_i [(x_i - mean_i)² / 2σ_i² + log σ_i + ½ log 2π]; shapes as Bernoulli."""
        features = ops.shape(x)[1:]
        if callable(self.sigma):
            sigma = self.sigma()
            log_sigma = ops.sum(ops.broadcast_to(ops.log(sigma), features))
        else:  # in float64 arithmetic, as the squared term may be
            sigma = self.sigma
            log_sigma = math.prod(features) * math.log(sigma)
        squared = ops.sum(ops.square((x - mean) / sigma), axis=feature_axes(x))
        return 0.5 * squared + log_sigma + math.prod(features) * 0.5 * LOG_2PI

    def _sigma(self):
        return self.sigma() if callable(self.sigma) else self.sigma

    def mean(self, params):
        return params

    def get_config(self) -> dict:
        return {"likelihood": self.name, "sigma": "learned" if callable(self.sigma) else self.sigma}


class Categorical:
    """p(x | z) = softmax(logits)[k] for the level k of one column, x its one-hot (B, levels)."""

    name = "categorical"

    def per_column(self, x, logits):
        """log 1/p = logsumexp(l) - Σ_j x_j l_j. x: (B, k); logits: (..., B, k). Returns (..., B)."""
        return kernels.logsumexp(logits) - ops.sum(x * logits, axis=-1)

    def mean(self, logits):
        return kernels.softmax(logits)


class NegativeBinomial:
    """p(x | z) = NB(x; μ, r) per feature: mean μ = exp(params), variance μ + μ²/r, with r > 0
    one learned dispersion per feature (as scvi-tools); r → ∞ is the Poisson."""

    name = "negative_binomial"

    def per_feature(self, x, log_mean, dispersion):
        """-log NB(x; μ, r)
        = -[lgamma(x + r) - lgamma(r) - lgamma(x + 1) + r log r/(r + μ) + x log μ/(r + μ)]."""
        log_r = ops.log(dispersion)
        log_total = ops.logaddexp(log_r, log_mean)  # log(r + μ), stable for large μ
        log_p = (
            _lgamma(x + dispersion)
            - _lgamma(dispersion)
            - _lgamma(x + 1.0)
            + dispersion * (log_r - log_total)
            + x * (log_mean - log_total)
        )
        return -log_p

    def mean(self, log_mean):
        return ops.exp(log_mean)


class Poisson:
    """p(x | z) = Poisson(x; λ = exp(params)) per feature."""

    name = "poisson"

    def per_feature(self, x, log_rate):
        """-log Poisson(x; λ) = λ - x log λ + lgamma(x + 1)."""
        return ops.exp(log_rate) - x * log_rate + _lgamma(x + 1.0)

    def mean(self, log_rate):
        return ops.exp(log_rate)


class Columns:
    """p(x | z) = Π over column groups of the group's family on its slice of the features;
    a missing entry (NaN in x) drops its factor, so this is log 1/p(x_obs | z) exactly.

    groups: (family, start, width) each. Gaussian, Bernoulli, negative binomial and Poisson
    groups are runs of one-feature columns; a categorical group is one column, its `width`
    levels one-hot. sigma: the Gaussian's σ, a number or a callable giving σ for every
    feature (only the Gaussian features' entries are read); dispersion: a callable giving
    the negative binomial's r for every feature (likewise).
    """

    name = "columns"
    params_per_value = 1

    @classmethod
    def of(cls, sigma=1.0, groups=None, dispersion=None, **options):
        return cls(groups or [], sigma, dispersion)

    def __init__(self, groups, sigma=1.0, dispersion=None):
        self.groups = [(str(family), int(start), int(width)) for family, start, width in groups]
        unknown = {family for family, _, _ in self.groups} - {"gaussian", *_COLUMN_FAMILIES}
        if unknown:
            raise ValueError(
                f"groups must be of the families gaussian, {', '.join(_COLUMN_FAMILIES)}. "
                f"Got {sorted(unknown)} instead."
            )
        if any(family == "negative_binomial" for family, _, _ in self.groups) and dispersion is None:
            raise ValueError("a negative_binomial group needs a dispersion")
        families = {family for family, _, _ in self.groups}
        self.gaussian = Gaussian(sigma) if "gaussian" in families else None
        self.dispersion = dispersion

    def surprisal(self, x, params):
        """log 1/p(x_obs | z): x (B, F) with NaN where missing; params (..., B, F). Returns (..., B)."""
        return ops.sum(self.per_column(x, params), axis=-1)

    def per_column(self, x, params):
        """log 1/p(x_c | z) of each table column c, 0 where its cell is missing: x (B, F) with NaN
        where missing; params (..., B, F). Returns (..., B, columns), in the columns' order."""
        observed = ops.isfinite(x)
        filled = ops.where(observed, x, ops.zeros_like(x))
        terms = []
        for family, start, width in self.groups:
            part, p = filled[:, start : start + width], params[..., start : start + width]
            seen = ops.cast(observed[:, start : start + width], p.dtype)
            if family == "categorical":  # one column: its levels are observed together
                terms.append((_COLUMN_FAMILIES[family].per_column(part, p) * seen[:, 0])[..., None])
            else:
                terms.append(self._per_feature(family, part, p, slice(start, start + width)) * seen)
        return ops.concatenate(terms, axis=-1)

    def _per_feature(self, family, x, params, features: slice):
        if family == "gaussian":
            sigma = self.gaussian.sigma
            return self.gaussian.per_feature(x, params, sigma()[features] if callable(sigma) else sigma)
        if family == "negative_binomial":
            return _COLUMN_FAMILIES[family].per_feature(x, params, self.dispersion()[features])
        return _COLUMN_FAMILIES[family].per_feature(x, params)

    def mean(self, params):
        """E[x | z] per feature: means, probabilities (a categorical's per level), expected counts."""
        parts = [
            params[..., start : start + width]
            if family == "gaussian"
            else _COLUMN_FAMILIES[family].mean(params[..., start : start + width])
            for family, start, width in self.groups
        ]
        return ops.concatenate(parts, axis=-1)

    def get_config(self) -> dict:
        return {
            "likelihood": self.name,
            "groups": [list(g) for g in self.groups],
            **({"sigma": self.gaussian.get_config()["sigma"]} if self.gaussian else {}),
        }


# The families other than the Gaussian (whose σ each Columns holds), by name.
_COLUMN_FAMILIES = {
    "bernoulli": Bernoulli(),
    "categorical": Categorical(),
    "negative_binomial": NegativeBinomial(),
    "poisson": Poisson(),
}


# The families of model.likelihood: a new one is its class here (a `name`, `params_per_value`,
# `of`, `surprisal`, `mean`, `get_config`) and its facts in pipeline.platform.families.
FAMILY_CLASSES = {
    cls.name: cls for cls in (Bernoulli, LevelCategorical, DiscretizedLogistic, Gaussian, Columns)
}


def make_likelihood(likelihood: str, sigma=1.0, groups=None, dispersion=None, levels: int | None = None):
    """The likelihood object for `model.likelihood` (its name); sigma: gaussian's σ, a number or a
    callable; groups: columns' (family, first feature, width) groups; dispersion: columns'
    negative binomial dispersion, a callable; levels: L (level_categorical, discretized_logistic)."""
    if likelihood not in FAMILY_CLASSES:
        names = ", ".join(repr(name) for name in FAMILY_CLASSES)
        raise ValueError(f"likelihood must be one of {names}. Got {likelihood!r} instead.")
    return FAMILY_CLASSES[likelihood].of(sigma=sigma, groups=groups, dispersion=dispersion, levels=levels)


def learned_likelihood(model: ResolvedModel, shape: tuple):
    """The resolved model's likelihood object and the layers of its learned parameters, each
    of one example's decoder output `shape`: (likelihood, σ, dispersion). σ: a Gaussian's
    (or a table's Gaussian columns') LearnedSigma under sigma "learned"; dispersion: the
    negative binomial's r; each None where the likelihood has none. Their weights are θ's."""
    likelihood, sigma, groups = model.likelihood, model.sigma, [list(g) for g in model.groups] or None
    families = {family for family, _, _ in groups or ()} if likelihood == "columns" else {likelihood}
    learned_sigma = dispersion = None
    if "gaussian" in families and sigma == "learned":
        learned_sigma = LearnedSigma(shape, model.sigma_floor, name="sigma")
        sigma = learned_sigma.value
    if "negative_binomial" in families:
        dispersion = LearnedSigma(shape, DISPERSION_FLOOR, name="dispersion")
    made = make_likelihood(likelihood, sigma, groups, dispersion.value if dispersion else None, model.levels)
    return made, learned_sigma, dispersion
