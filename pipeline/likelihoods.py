"""The decoder's likelihood p_θ(x | z): one object per family, used everywhere.

Training, evaluation and sampling all go through these objects, so the branch on the
likelihood family is written once. Both families keep the surprisal S bounded below
(article, "Probability Density"): Bernoulli is a probability mass; the Gaussian has a
fixed σ rather than a learned one.
"""

import math

from keras import ops


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
    """p(x | z) = N(x; mean, σ² I) with σ fixed (not learned)."""

    name = "gaussian"

    def __init__(self, sigma: float = 1.0):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0. Got {sigma!r} instead.")
        self.sigma = float(sigma)

    def surprisal(self, x, mean):
        """log 1/p(x | z) = Σ_i [(x_i - mean_i)² / 2σ² + log(σ √(2π))]; shapes as Bernoulli."""
        x_shape = ops.shape(x)
        n_features = math.prod(x_shape[1:])
        squared = ops.sum(ops.square(x - mean), axis=_feature_axes(x))
        constant = n_features * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return 0.5 * squared / self.sigma**2 + constant

    def mean(self, params):
        return params

    def get_config(self) -> dict:
        return {"likelihood": self.name, "sigma": self.sigma}


def make_likelihood(likelihood: str, sigma: float = 1.0):
    """The likelihood object for `model.likelihood` (and `model.sigma` for gaussian)."""
    if likelihood == Bernoulli.name:
        return Bernoulli()
    if likelihood == Gaussian.name:
        return Gaussian(sigma)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'. Got {likelihood!r} instead.")


def _feature_axes(x) -> tuple[int, ...]:
    """The trailing axes of x after its batch axis, as negative indices."""
    return tuple(range(-(len(ops.shape(x)) - 1), 0))
