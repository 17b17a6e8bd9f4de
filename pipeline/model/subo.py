"""The article's quantities as pure keras.ops functions, in nats per example.

Names follow the article: S = log 1/p(x) (surprisal), U = SUBO (upper bound on S),
D = KL(q(z|x) ‖ p(z)), E = U − S (the gap, = KL(q(z|x) ‖ p(z|x)) ≥ 0).
Shapes: B examples, d latent dimensions, m or K samples per example. The objective a trainer
minimises is built from them here too (`training_objective`, its parts an `Objective`).
"""

import math
from typing import NamedTuple

from keras import ops

from pipeline.model import kernels

LOG_2PI = math.log(2 * math.pi)


def kl_to_prior_per_dim(z_mean, z_log_var):
    """D_j = ½ (μ_j² + σ_j² − 1 − log σ_j²), the KL of each latent dimension.

    z_mean, z_log_var: (..., d). Returns (..., d).
    """
    return 0.5 * (ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)


def kl_to_prior(z_mean, z_log_var):
    """D = KL(N(μ, diag σ²) ‖ N(0, I)) = Σ_j D_j in closed form. (..., d) -> (...,)."""
    return ops.sum(kl_to_prior_per_dim(z_mean, z_log_var), axis=-1)


def free_bits_kl(kl_per_dim, free_bits: float):
    """Σ_j max(λ, mean over the batch of D_j): the D term of the free-bits objective.

    kl_per_dim: (B, d), or (B, 1) holding the whole D where it has no per-dimension form
    (pass λ·d then: one budget for all units, as Kingma et al. 2016 did per group).
    Returns a scalar. Dimensions already below λ nats get no gradient pushing them further
    towards the prior, which keeps latent units from collapsing. With λ = 0 this is the
    batch mean of D.
    """
    return ops.sum(ops.maximum(ops.mean(kl_per_dim, axis=0), free_bits))


def gaussian_log_density(z, mean, log_var):
    """log N(z; mean, diag exp(log_var)), summed over the last axis.

    z: (..., d), mean and log_var broadcastable to z. Returns (...,).
    """
    return -0.5 * ops.sum(LOG_2PI + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1)


def standard_normal_log_density(z):
    """log N(z; 0, I) = log p(z), the prior. z: (..., d). Returns (...,)."""
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)


def reparameterize(z_mean, z_log_var, epsilon):
    """z = μ + σ ε: a sample of q(z|x) that gradients can pass through.

    z_mean, z_log_var: (B, d); epsilon: (m, B, d) standard normal. Returns (m, B, d).
    """
    return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def subo(kl, reconstruction):
    """Û = D + (1/m) Σ_k log 1/p(x | z_k).

    kl: (B,) closed-form D; reconstruction: (m, B) surprisal of x under each z_k.
    Returns (B,). An unbiased estimate of U for any m ≥ 1.
    """
    return kl + ops.mean(reconstruction, axis=0)


def mixture_log_density(z, means, log_vars):
    """log (1/C) Σ_c N(z; mean_c, diag exp(log_var_c)): a mixture of C equal Gaussians.

    z: (..., d); means, log_vars: (C, d). Returns (...,). The VampPrior's log p(z).
    """
    components = gaussian_log_density(z[..., None, :], means, log_vars)  # (..., C)
    return kernels.logsumexp(components) - math.log(means.shape[0])


def log_importance_weights(reconstruction, log_prior, log_q):
    """log w_k = log p(x, z_k) − log q(z_k | x) for z_k ~ q(z|x).

    reconstruction: (K, B) = log 1/p(x | z_k); log_prior: log p(z_k), (K, B); log_q:
    log q(z_k | x), (K, B). Returns (K, B).
    """
    return -reconstruction + log_prior - log_q


def monte_carlo_kl(log_q, log_prior):
    """D̂ = (1/m) Σ_k [log q(z_k|x) − log p(z_k)], z_k ~ q(z|x): unbiased for D where it has
    no closed form (a flow proxy, a learned prior). log_q, log_prior: (m, B). Returns (B,)."""
    return ops.mean(log_q - log_prior, axis=0)


def kl_terms(z_mean, z_log_var, log_q, log_prior, closed_form: bool):
    """(D, D_j): D per example and its per-dimension terms, in closed form where q is the
    diagonal Gaussian and p(z) = N(0, I); else D's Monte Carlo estimate over the same samples
    (`monte_carlo_kl`) and no per-dimension terms (None).

    z_mean, z_log_var: (B, d); log_q, log_prior: (m, B). Returns (B,) and (B, d) or None.
    """
    kl_per_dim = kl_to_prior_per_dim(z_mean, z_log_var) if closed_form else None
    kl = ops.sum(kl_per_dim, axis=-1) if closed_form else monte_carlo_kl(log_q, log_prior)
    return kl, kl_per_dim


def phi_surrogate(estimator: str, reconstruction_of, x, z, z_mean, z_log_var, baseline=0.0):
    """A per-sample surrogate whose gradient estimates ∇ E_q[log 1/p(x|z)].

    reconstruction_of(x, z) -> (m, B) is log 1/p(x|z); z: (m, B, d) = μ + σ ε.
    Returns (surrogate, reconstruction), each (m, B); reconstruction is the plain value.

    - reparameterized: gradients flow through z = μ + σ ε (the article's "reparametrization
      trick"); the surrogate is the reconstruction itself.
    - score_function: z is held fixed and the φ-gradient is (f(z) − b) ∇_φ log q(z|x)
      (the "log-derivative trick"), with f = log 1/p(x|z) and a baseline b that does not
      depend on z, so the estimate stays unbiased; θ still gets ∇_θ f(z).

    Args:
        estimator: reparameterized or score_function.
        reconstruction_of: (x, z) -> log 1/p(x|z), (m, B).
        x: the batch.
        z: (m, B, d) = μ + σ ε.
        z_mean, z_log_var: q's parameters, (B, d).
        baseline: b, subtracted from the score function's weight.
    """
    if estimator == "reparameterized":
        reconstruction = reconstruction_of(x, z)
        return reconstruction, reconstruction
    if estimator == "score_function":
        z = ops.stop_gradient(z)
        reconstruction = reconstruction_of(x, z)  # θ-gradient only
        log_q = gaussian_log_density(z, z_mean, z_log_var)  # φ-gradient only
        signal = ops.stop_gradient(reconstruction - baseline)
        return reconstruction + signal * log_q, reconstruction
    raise ValueError(f"estimator must be 'reparameterized' or 'score_function'. Got {estimator!r} instead.")


def importance_weighted_surprisal(log_weights):
    """S_K = −log (1/K) Σ_k w_k, computed with log-sum-exp.

    log_weights: (K, B). Returns (B,). E[S_K] ≥ S, decreasing towards S as K grows;
    S_1 is a single-sample estimate of U.
    """
    k = ops.shape(log_weights)[0]
    return math.log(k) - ops.logsumexp(log_weights, axis=0)


class Objective(NamedTuple):
    """One batch's training objective and its parts (as scvi-tools' LossOutput): `loss`, the
    scalar minimised; U, D and reconstruction, per example (B,)."""

    loss: object
    U: object
    D: object
    reconstruction: object

    @property
    def terms(self) -> dict:
        return {"U": self.U, "D": self.D, "reconstruction": self.reconstruction}


def training_objective(terms: dict, objective: str, kl_weight, free_bits: float, latent_dim: int):
    """The scalar a trainer minimises for one batch, from the samples' terms (those of
    `VAE.sample_posterior`: reconstruction, surrogate, log_q, log_prior, kl, kl_per_dim).

    subo: w·D' + the mean reconstruction surrogate, w = kl_weight; D' has free bits per
    dimension (`free_bits_kl`), or one budget of λ·d for the whole D where D has no closed
    form. iwae: the batch mean of S_K over the same m = K samples, reparameterized (Burda et al.).
    """
    if objective == "iwae":
        log_weights = log_importance_weights(terms["reconstruction"], terms["log_prior"], terms["log_q"])
        return ops.mean(importance_weighted_surprisal(log_weights))
    per_dim = terms["kl_per_dim"]
    free = (
        free_bits_kl(per_dim, free_bits)
        if per_dim is not None
        else free_bits_kl(terms["kl"][:, None], free_bits * latent_dim)
    )
    return kl_weight * free + ops.mean(terms["surrogate"])
