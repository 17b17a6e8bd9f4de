"""The decoder's likelihood p_θ(x | z): one object per family, used everywhere.

Training, evaluation and sampling all go through these objects, so the branch on the
likelihood family is written once. Both families keep the surprisal S bounded below
(article, "Probability Density"): Bernoulli is a probability mass; the Gaussian's σ is
fixed, or learned per feature but never below a floor (see model.LearnedSigma), since a
density whose σ may shrink to 0 has no lower bound on S.
"""

import math

from keras import ops

from pipeline.subo import LOG_2PI


class Bernoulli:
    """p(x | z) = Π Bernoulli(x_i; sigmoid(logits_i)); x may be any value in [0, 1]."""

    name = "bernoulli"

    def surprisal(self, x, logits):
        """log 1/p(x | z), summed over the feature axes of x.

        x: (B, *F); logits: (..., B, *F) with any leading sample axes. Returns (..., B).
        Uses the stable form softplus(l) - x·l = -[x log σ(l) + (1 - x) log(1 - σ(l))].
        """
        per_feature = ops.softplus(logits) - x * logits
        return ops.sum(per_feature, axis=_feature_axes(x))

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

    def mean(self, params):
        return params

    def get_config(self) -> dict:
        return {"likelihood": self.name, "sigma": "learned" if callable(self.sigma) else self.sigma}


def make_likelihood(likelihood: str, sigma=1.0):
    """The likelihood object for `model.likelihood` (and σ, a number or a callable, for gaussian)."""
    if likelihood == Bernoulli.name:
        return Bernoulli()
    if likelihood == Gaussian.name:
        return Gaussian(sigma)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'. Got {likelihood!r} instead.")


def _feature_axes(x) -> tuple[int, ...]:
    """The trailing axes of x after its batch axis, as negative indices."""
    return tuple(range(-(len(ops.shape(x)) - 1), 0))
