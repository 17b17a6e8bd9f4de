"""The decoder's likelihood p_θ(x | z): one object per family, and one over column groups.

Training, evaluation, sampling and pictures all go through these objects, so the branch on
the likelihood family is written once. Every family keeps the surprisal S bounded below
(article, "Probability Density"):

- Bernoulli, Categorical, NegativeBinomial, Poisson and DiscretizedLogistic are
  probability masses: each factor is at most 1, so log 1/p(x | z) ≥ 0. Bernoulli is a
  mass only on binary values: on grey levels in [0, 1] it sums to more than 1 over them
  (Loaiza-Ganem & Cunningham 2019), so pixel levels get DiscretizedLogistic.
- Gaussian is a density: its σ is fixed, or learned per feature but never below a floor
  (model.sigma_floor, see layers.LearnedSigma), so log 1/p ≥ log σ_floor + ½ log 2π per
  feature; a σ that may shrink to 0 would leave S without a lower bound.

Tables and count matrices use `Columns`: p(x | z) = Π_c p_c(x_c | z), one family per
column group over its slice of the decoder's output. A missing cell (NaN in x) drops its
factor, so the surprisal is exactly that of the observed part, log 1/p(x_obs | z).
"""

import math

from keras import ops

from pipeline.model.subo import LOG_2PI


def _lgamma(x):
    """log Γ(x). keras.ops has none; the project runs on TensorFlow only (pipeline.training.train checks)."""
    import tensorflow as tf

    return tf.math.lgamma(x)



class Bernoulli:
    """p(x | z) = Π Bernoulli(x_i; sigmoid(logits_i)); x may be any value in [0, 1]."""

    name = "bernoulli"

    def per_feature(self, x, logits):
        """log 1/p(x_i | z) per feature: softplus(l) - x·l = -[x log σ(l) + (1 - x) log(1 - σ(l))]."""
        return ops.softplus(logits) - x * logits

    def surprisal(self, x, logits):
        """log 1/p(x | z), summed over the feature axes of x.

        x: (B, *F); logits: (..., B, *F) with any leading sample axes. Returns (..., B).
        """
        return ops.sum(self.per_feature(x, logits), axis=_feature_axes(x))

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
        squared = ops.sum(ops.square((x - mean) / sigma), axis=_feature_axes(x))
        return 0.5 * squared + log_sigma + math.prod(features) * 0.5 * LOG_2PI

    def _sigma(self):
        return self.sigma() if callable(self.sigma) else self.sigma

    def mean(self, params):
        return params

    def get_config(self) -> dict:
        return {"likelihood": self.name, "sigma": "learned" if callable(self.sigma) else self.sigma}


class DiscretizedLogistic:
    """A mass on the L levels 0, 1/(L−1), ..., 1 of every feature (pixel levels scaled to
    [0, 1]): P(x = k/(L−1)) = F(x + h) − F(x − h), h = 1/(2(L−1)), F the logistic CDF of
    location μ and scale s, the outer bins open to ±∞. The bins tile the line, so the L
    masses sum to exactly 1 and log 1/p(x | z) ≥ 0 (Salimans et al. 2017, PixelCNN++).

    The decoder gives two parameters per value, μ and the scale's raw value ρ (params of
    shape (..., *F, 2)): a scale that depends on z lets a pixel the latent determines put
    its whole mass on one level, which a scale shared by all examples cannot (on three
    fixed patterns it left S at 14 nats instead of near ln 3). log s = smooth max(ρ + log
    s₀, log s_min): s starts near s₀ = 0.1 of the range and never goes below s_min = 1e-4,
    far below a bin of 256 levels, which only keeps the bins' log-differences finite.
    """

    name = "discretized_logistic"
    params_per_value = 2
    LOG_INITIAL_SCALE, LOG_MIN_SCALE = math.log(0.1), math.log(1e-4)

    def __init__(self, levels: int):
        if not (isinstance(levels, int) and levels >= 2):
            raise ValueError(f"levels must be an integer >= 2. Got {levels!r} instead.")
        self.levels = levels
        self.half_bin = 0.5 / (levels - 1)

    def log_scale(self, raw):
        """log s from the decoder's ρ: log s_min + softplus(ρ + log s₀ − log s_min)."""
        return self.LOG_MIN_SCALE + ops.softplus(raw + (self.LOG_INITIAL_SCALE - self.LOG_MIN_SCALE))

    def log_mass(self, x, loc, log_scale):
        """log P(x_i | μ, s) per feature, in log space throughout (stable for any μ and s):
        log(σ(a) − σ(b)) = −softplus(−a) − softplus(b) + log(1 − e^(b−a)), a = (x + h − μ)/s,
        b = (x − h − μ)/s; the first level keeps only log σ(a), the last only log σ(−b)."""
        inverse_scale = ops.exp(-log_scale)
        upper, lower = (x + self.half_bin - loc) * inverse_scale, (x - self.half_bin - loc) * inverse_scale
        first, last = -ops.softplus(-upper), -ops.softplus(lower)  # log F(upper edge), log(1 − F(lower))
        inner = first + last + ops.log(-ops.expm1(lower - upper))
        return ops.where(x < self.half_bin, first, ops.where(x > 1 - self.half_bin, last, inner))

    def per_feature(self, x, params):
        """log 1/P(x_i | z) per feature; params (..., *F, 2) = (μ, ρ)."""
        return -self.log_mass(x, params[..., 0], self.log_scale(params[..., 1]))

    def surprisal(self, x, params):
        """log 1/p(x | z), summed over the feature axes of x: x (B, *F), params (..., B, *F, 2)."""
        return ops.sum(self.per_feature(x, params), axis=_feature_axes(x))

    def mean(self, params):
        """The location, within the levels' range (the picture of E[x | z])."""
        return ops.clip(params[..., 0], 0.0, 1.0)

    def get_config(self) -> dict:
        return {"likelihood": self.name, "levels": self.levels}


class LevelCategorical:
    """An L-way categorical on the levels 0, 1/(L−1), ..., 1 of every feature: P(x = k/(L−1)) =
    softmax(logits)_k, the decoder giving L logits per value (params (..., *F, L)). The most
    flexible mass on the levels, and the easiest to make certain: a level needs only a logit
    margin over the others, where a logistic needs its location within half a bin, which a
    decoder must hold over all of q(z|x) (on three fixed patterns, 256 levels: S_100 2.0
    nats against 91 for the discretized logistic, benchmarks/README.md). It costs L outputs
    per value, so `auto` picks it only while L·D stays small.
    """

    name = "level_categorical"

    def __init__(self, levels: int):
        if not (isinstance(levels, int) and levels >= 2):
            raise ValueError(f"levels must be an integer >= 2. Got {levels!r} instead.")
        self.levels = levels

    def per_feature(self, x, logits):
        """log 1/P(x_i | z) = logsumexp(l) − l_k, k the level of x_i; x (B, *F), logits (..., B, *F, L)."""
        level = ops.cast(ops.round(x * (self.levels - 1)), "int32")
        chosen = ops.sum(ops.one_hot(level, self.levels, dtype=logits.dtype) * logits, axis=-1)
        return ops.logsumexp(logits, axis=-1) - chosen

    def surprisal(self, x, logits):
        """log 1/p(x | z), summed over the feature axes of x: (..., B)."""
        return ops.sum(self.per_feature(x, logits), axis=_feature_axes(x))

    def mean(self, logits):
        """E[x | z] = Σ_k P(k) k/(L−1), within [0, 1]."""
        values = ops.cast(ops.arange(self.levels), logits.dtype) / (self.levels - 1)
        return ops.sum(ops.softmax(logits, axis=-1) * values, axis=-1)

    def get_config(self) -> dict:
        return {"likelihood": self.name, "levels": self.levels}


class Categorical:
    """p(x | z) = softmax(logits)[k] for the level k of one column, x its one-hot (B, levels)."""

    name = "categorical"

    def per_column(self, x, logits):
        """log 1/p = logsumexp(l) - Σ_j x_j l_j. x: (B, k); logits: (..., B, k). Returns (..., B)."""
        return ops.logsumexp(logits, axis=-1) - ops.sum(x * logits, axis=-1)

    def mean(self, logits):
        return ops.softmax(logits, axis=-1)


class NegativeBinomial:
    """p(x | z) = NB(x; μ, r) per feature: mean μ = exp(params), variance μ + μ²/r, with r > 0
    one learned dispersion per feature (as scvi-tools); r → ∞ is the Poisson."""

    name = "negative_binomial"

    def per_feature(self, x, log_mean, dispersion):
        """-log NB(x; μ, r) = -[lgamma(x + r) - lgamma(r) - lgamma(x + 1) + r log r/(r + μ) + x log μ/(r + μ)]."""
        log_r = ops.log(dispersion)
        log_total = ops.logaddexp(log_r, log_mean)  # log(r + μ), stable for large μ
        log_p = (_lgamma(x + dispersion) - _lgamma(dispersion) - _lgamma(x + 1.0)
                 + dispersion * (log_r - log_total) + x * (log_mean - log_total))
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

    def __init__(self, groups, sigma=1.0, dispersion=None):
        self.groups = [(str(family), int(start), int(width)) for family, start, width in groups]
        unknown = {family for family, _, _ in self.groups} - {"gaussian", *_COLUMN_FAMILIES}
        if unknown:
            raise ValueError(f"groups must be of the families gaussian, {', '.join(_COLUMN_FAMILIES)}. "
                             f"Got {sorted(unknown)} instead.")
        if any(family == "negative_binomial" for family, _, _ in self.groups) and dispersion is None:
            raise ValueError("a negative_binomial group needs a dispersion")
        families = {family for family, _, _ in self.groups}
        self.gaussian = Gaussian(sigma) if "gaussian" in families else None
        self.dispersion = dispersion

    def surprisal(self, x, params):
        """log 1/p(x_obs | z): x (B, F) with NaN where missing; params (..., B, F). Returns (..., B)."""
        observed = ops.isfinite(x)
        filled = ops.where(observed, x, ops.zeros_like(x))
        total = 0.0
        for family, start, width in self.groups:
            part, p = filled[:, start:start + width], params[..., start:start + width]
            seen = ops.cast(observed[:, start:start + width], p.dtype)
            if family == "categorical":  # one column: its levels are observed together
                total = total + _COLUMN_FAMILIES[family].per_column(part, p) * seen[:, 0]
            else:
                total = total + ops.sum(self._per_feature(family, part, p, slice(start, start + width)) * seen, -1)
        return total

    def _per_feature(self, family, x, params, features: slice):
        if family == "gaussian":
            sigma = self.gaussian.sigma
            return self.gaussian.per_feature(x, params, sigma()[features] if callable(sigma) else sigma)
        if family == "negative_binomial":
            return _COLUMN_FAMILIES[family].per_feature(x, params, self.dispersion()[features])
        return _COLUMN_FAMILIES[family].per_feature(x, params)

    def mean(self, params):
        """E[x | z] per feature: means, probabilities (a categorical's per level), expected counts."""
        parts = [params[..., start:start + width] if family == "gaussian"
                 else _COLUMN_FAMILIES[family].mean(params[..., start:start + width])
                 for family, start, width in self.groups]
        return ops.concatenate(parts, axis=-1)

    def get_config(self) -> dict:
        return {"likelihood": self.name, "groups": [list(g) for g in self.groups],
                **({"sigma": self.gaussian.get_config()["sigma"]} if self.gaussian else {})}


# The families other than the Gaussian (whose σ each Columns holds), by name.
_COLUMN_FAMILIES = {"bernoulli": Bernoulli(), "categorical": Categorical(), "negative_binomial": NegativeBinomial(),
                    "poisson": Poisson()}


def make_likelihood(likelihood: str, sigma=1.0, groups=None, dispersion=None, levels: int | None = None):
    """The likelihood object for `model.likelihood`.

    Args:
        likelihood: the family's name.
        sigma: gaussian's σ, a number or a callable.
        groups: columns' (family, first feature, width) groups.
        dispersion: columns' negative binomial dispersion, a callable.
        levels: the number of levels L (level_categorical, discretized_logistic).
    """
    if likelihood == Bernoulli.name:
        return Bernoulli()
    if likelihood == DiscretizedLogistic.name:
        return DiscretizedLogistic(levels)
    if likelihood == LevelCategorical.name:
        return LevelCategorical(levels)
    if likelihood == Gaussian.name:
        return Gaussian(sigma)
    if likelihood == Columns.name:
        return Columns(groups or [], sigma, dispersion)
    raise ValueError(f"likelihood must be 'bernoulli', 'level_categorical', 'discretized_logistic', 'gaussian' or "
                     f"'columns'. "
                     f"Got {likelihood!r} instead.")


def params_per_value(likelihood: str, levels: int | None = None) -> int:
    """How many decoder outputs each value of x gets: L logits for the level categorical,
    2 (μ, ρ) for the discretized logistic, else 1."""
    if likelihood == LevelCategorical.name:
        return levels
    return DiscretizedLogistic.params_per_value if likelihood == DiscretizedLogistic.name else 1


def _feature_axes(x) -> tuple[int, ...]:
    """The trailing axes of x after its batch axis, as negative indices."""
    return tuple(range(-(len(ops.shape(x)) - 1), 0))
