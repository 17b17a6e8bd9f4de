"""The VAE's own Keras layers, registered serialisable (package "vae_pipeline"): the
sampler of q(z|x), a learned positive per-feature parameter (σ, dispersion), and the
encoder's view of a table row."""

import math

import keras
import numpy as np
from keras import layers, ops

from pipeline.model import subo

PACKAGE = "vae_pipeline"
# The negative binomial's dispersion r stays above this: lgamma(r) is finite, S bounded.
DISPERSION_FLOOR = 1e-3


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampler(layers.Layer):
    """Draws m samples z = μ + σ ε of q(z|x) = N(μ, diag σ²), seeded.

    Call with [z_mean, z_log_var], each (B, d); returns (m, B, d).
    """

    def __init__(self, samples: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(samples, int) and samples >= 1):
            raise ValueError(f"samples must be an integer >= 1. Got {samples!r} instead.")
        self.samples = samples
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, samples: int | None = None, seed_generator=None, epsilon=None):
        """seed_generator: draw from another seed stream than training's (diagnostics);
        epsilon: the standard-normal draws themselves, (m, B, d) (a row's own, RowSurprisal)."""
        z_mean, z_log_var = inputs
        if epsilon is None:
            shape = (samples or self.samples, *ops.shape(z_mean))
            epsilon = keras.random.normal(
                shape, dtype=z_mean.dtype, seed=seed_generator or self.seed_generator
            )
        return subo.reparameterize(z_mean, z_log_var, ops.cast(epsilon, z_mean.dtype))

    def compute_output_shape(self, input_shape):
        return (self.samples, *input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "samples": self.samples, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LearnedSigma(layers.Layer):
    """The Gaussian likelihood's σ, one per feature: σ_i = floor + softplus(ρ_i), ρ trainable.

    The floor keeps S bounded below (a density whose σ may shrink to 0 can make log 1/p(x|z)
    as negative as it likes on one well-predicted feature); softplus keeps the gradient
    smooth above it. Starts at σ = 1, the scale of standardized features. The negative
    binomial's dispersion r is the same kind of parameter (positive, per feature; its floor
    only keeps lgamma(r) finite).
    """

    def __init__(self, shape, floor: float, **kwargs):
        super().__init__(**kwargs)
        if not floor > 0:
            raise ValueError(f"sigma_floor must be > 0. Got {floor!r} instead.")
        self.shape, self.floor = tuple(shape), float(floor)
        start = max(1.0 - self.floor, 1e-3)
        self.rho = self.add_weight(
            shape=self.shape,
            name="rho",
            dtype="float32",
            initializer=keras.initializers.Constant(math.log(math.expm1(start))),
        )
        self.built = True

    def value(self):
        """σ for every feature, of one example's shape."""
        return self.floor + ops.softplus(self.rho)

    def get_config(self) -> dict:
        return {**super().get_config(), "shape": list(self.shape), "floor": self.floor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EncoderInput(layers.Layer):
    """What the encoder reads of a table's features x (B, F), NaN where a cell is missing:
    x with missing cells filled with 0, counts as log1p(x), and, when the training data had
    missing cells, one observed flag (1/0) per column (the features `mask_features`), so
    the encoder knows a 0 that was filled in from one that was seen. Returns (B, F + flags).
    """

    def __init__(self, log1p_features=(), mask_features=(), **kwargs):
        super().__init__(**kwargs)
        self.log1p_features = [int(i) for i in log1p_features]
        self.mask_features = [int(i) for i in mask_features]

    def call(self, x):
        observed = ops.isfinite(x)
        filled = ops.where(observed, x, ops.zeros_like(x))
        if self.log1p_features:
            counts = np.zeros(x.shape[-1], bool)
            counts[self.log1p_features] = True
            filled = ops.where(counts, ops.log1p(ops.maximum(filled, 0.0)), filled)
        if not self.mask_features:
            return filled
        flags = ops.cast(ops.take(observed, self.mask_features, axis=-1), filled.dtype)
        return ops.concatenate([filled, flags], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + len(self.mask_features))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "log1p_features": self.log1p_features,
            "mask_features": self.mask_features,
        }
