"""Diagnostics of a model: how tight is the bound (U, S_K, E_K), is the posterior
collapsed, and why is the reparameterized estimator better (the article asks; this makes
it a number). Train uses them every epoch, evaluate on the final model; encode scores
every row with RowSurprisal."""

import hashlib
import math

import numpy as np

from pipeline.model import subo

# Burda et al. (2016, "Importance Weighted Autoencoders"): unit j is active when
# Var_x(E_q[z_j | x]) > 0.01. It is the metric's definition, not a knob.
ACTIVITY_THRESHOLD = 0.01
# The most decoder outputs one scoring batch holds (floats): 128 MiB.
PARAMS_PER_BATCH = 2**25


class Moments:
    """Per-dimension mean and variance of rows seen a block at a time (Chan et al.'s merge),
    NaN cells left out (each dimension counts its own rows): active units over a split of any
    size, a table's feature spread with missing cells, one block in memory."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, np.float64)
        n = (~np.isnan(block)).sum(axis=0)
        mean = np.nansum(block, axis=0) / np.maximum(n, 1)
        m2, delta, total = np.nansum((block - mean) ** 2, axis=0), mean - self.mean, self.n + n
        self.mean = self.mean + delta * n / np.maximum(total, 1)
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / np.maximum(total, 1)
        self.n = total

    @property
    def variance(self) -> np.ndarray:
        """0 where a dimension has no rows yet."""
        return self.m2 / np.maximum(self.n, 1)


def active_units(variance: np.ndarray) -> dict:
    """Active units from Var_x E_q[z_j | x], (d,): of many examples' z_mean (n, d), np.var(z_mean, axis=0)."""
    return {
        "count": int((variance > ACTIVITY_THRESHOLD).sum()),
        "of": int(len(variance)),
        "threshold": ACTIVITY_THRESHOLD,
        "variance_of_mean": [round(float(v), 4) for v in variance],
    }


def collapse_warning(active: dict) -> str | None:
    """A warning naming the knobs when fewer than two units, or under a quarter of them, are active."""
    count, total = active["count"], active["of"]
    if count >= min(2, total) and 4 * count >= total:
        return None
    return (
        f"posterior collapse: only {count} of {total} latent units are active (Var_x E_q[z_j] > "
        f"{active['threshold']}); the latents carry little about x. Try loss.kl_warmup_epochs, "
        "loss.free_bits or a lower loss.beta, or a smaller model.latent_dim"
    )


def phi_gradient_variance(vae, x: np.ndarray, repeats: int) -> dict:
    """Variance of the φ-gradient (encoder weights) of the training objective, per estimator.

    On the fixed batch x, draw the gradient `repeats` times with fresh samples z ~ q(z|x)
    under each estimator, take each parameter's variance across the draws, and average
    over parameters. The model is not updated. Returns both means and their ratio
    score_function / reparameterized (> 1 when the reparameterized estimator is the
    lower-variance one).

    The score-function estimator subtracts its baseline b as training does: there b is a
    running mean of the reconstruction surprisal (pipeline.training.trainer), here that mean
    on x, from draws of their own (the draws of the figures stay those of the model's stream).
    """
    import keras
    import tensorflow as tf

    own = keras.random.SeedGenerator(0)
    baseline = float(keras.ops.mean(vae.sample_posterior(x, seed_generator=own)["reconstruction"]))
    out = {}
    for estimator in ("reparameterized", "score_function"):

        @tf.function
        def gradient(x, estimator=estimator):
            with tf.GradientTape() as tape:
                objective = vae.objective(x, estimator=estimator, baseline=baseline).loss
            return tape.gradient(objective, vae.phi_weights)

        draws = np.stack([np.concatenate([g.numpy().ravel() for g in gradient(x)]) for _ in range(repeats)])
        out[estimator] = float(draws.var(axis=0, ddof=1).mean())  # draws: (R, parameters)
    out["ratio"] = out["score_function"] / out["reparameterized"]
    return {**out, "repeats": repeats, "batch_size": len(x)}


def sample_counts(k: int) -> list[int]:
    """1, 10, 100, ... up to k, and k itself: the K values S_K is reported for."""
    counts = [10**i for i in range(int(np.log10(k)) + 1) if 10**i <= k]
    return counts if counts[-1] == k else [*counts, k]


def rows_per_batch(vae, samples: int, decodes_per_batch: int = 4096) -> int:
    """Examples per scoring batch: about decodes_per_batch decoded samples (`samples` per
    example), fewer when a decode has many outputs (L logits per pixel), so that one batch's
    likelihood parameters stay within PARAMS_PER_BATCH floats."""
    outputs = math.prod(vae.decoder.outputs[0].shape[1:])
    return max(1, min(decodes_per_batch, PARAMS_PER_BATCH // outputs) // samples)


class BoundEstimator:
    """Mean U, D, reconstruction, S_K and E_K = U − S_K (nats per example) of a model on x.

    U uses D (closed form, or where it has none the Monte Carlo mean of log q − log p over
    the K samples; "D_estimate" says which) and the mean reconstruction surprisal over the
    same K samples z_k ~ q(z|x) that the importance-weighted S_K uses (S_k takes the first k).
    Batches follow `rows_per_batch`; the graph is traced once per estimator, so train can
    score every epoch with one.
    """

    def __init__(self, vae, importance_samples: int, decodes_per_batch: int = 4096, seed: int | None = 0):
        import keras
        import tensorflow as tf

        self.ks = sample_counts(importance_samples)
        self.batch_size = rows_per_batch(vae, importance_samples, decodes_per_batch)
        # Its own seed stream: scoring during training leaves training's draws as they were.
        seed_generator = keras.random.SeedGenerator(seed)

        @tf.function(reduce_retracing=True)
        def per_example(xb):
            terms = vae.sample_posterior(xb, importance_samples, seed_generator=seed_generator)
            reconstruction = terms["reconstruction"]
            log_w = subo.log_importance_weights(reconstruction, terms["log_prior"], terms["log_q"])  # (K, B)
            s_k = [subo.importance_weighted_surprisal(log_w[:k]) for k in self.ks]
            return terms["kl"], tf.reduce_mean(reconstruction, axis=0), tf.stack(s_k)

        self.per_example = per_example
        self.d_estimate = (
            "closed form"
            if vae.closed_form_kl
            else f"Monte Carlo: mean of log q(z|x) − log p(z) over K = {importance_samples} samples"
        )

    def __call__(self, x: np.ndarray) -> dict:
        parts = [
            self.per_example(np.asarray(x[start : start + self.batch_size]))
            for start in range(0, len(x), self.batch_size)
        ]
        kl, reconstruction, s_k = (np.concatenate([p[i].numpy() for p in parts], axis=-1) for i in range(3))
        u = float(np.mean(kl + reconstruction))
        s_means = {str(k): float(v) for k, v in zip(self.ks, s_k.mean(axis=1))}
        return {
            "examples": len(x),
            "U": u,
            "D": float(kl.mean()),
            "D_estimate": self.d_estimate,
            "reconstruction": float(reconstruction.mean()),
            "S_K": s_means,
            "E_K": {k: u - v for k, v in s_means.items()},
        }


def subo_estimates(vae, x: np.ndarray, importance_samples: int, seed: int | None = 0) -> dict:
    """BoundEstimator(vae, importance_samples, seed=seed)(x): the figures once."""
    return BoundEstimator(vae, importance_samples, seed=seed)(x)


class RowSurprisal:
    """S_K of each example on its own (nats, float64): the score every latents row carries.

    BoundEstimator draws a batch's samples from one seed stream, so an example's estimate
    depends on the batch it sits in. Here the K draws ε_k of an example are keyed by its
    bytes and the seed (`row_noise`): the same example scores the same in any batch, order or
    process (the Ray engine's shards), a duplicate as its original, and distinct examples
    still get independent draws, so a mean over rows estimates E[S_K] as evaluate's does.
    """

    def __init__(self, vae, importance_samples: int, seed: int = 0, decodes_per_batch: int = 4096):
        import tensorflow as tf

        self.samples, self.seed, self.latent_dim = importance_samples, seed, vae.latent_dim
        self.batch_size = rows_per_batch(vae, importance_samples, decodes_per_batch)

        # Traced once whatever the batch: a second trace for the last, smaller batch costs
        # seconds on a table's per-column likelihood, more than scoring thousands of rows.
        @tf.function(
            input_signature=(
                tf.TensorSpec((None, *vae.input_example_shape), tf.float32),
                tf.TensorSpec((importance_samples, None, vae.latent_dim), tf.float32),
            )
        )
        def scores(xb, epsilon):
            terms = vae.sample_posterior(xb, importance_samples, epsilon=epsilon)
            log_w = subo.log_importance_weights(terms["reconstruction"], terms["log_prior"], terms["log_q"])
            return subo.importance_weighted_surprisal(log_w)

        self.scores = scores

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """S_K of each row of x (the model's inputs): (n,)."""
        parts = [np.zeros(0)]
        for start in range(0, len(x), self.batch_size):
            xb = np.asarray(x[start : start + self.batch_size])
            parts.append(
                self.scores(
                    xb.astype(np.float32, copy=False), row_noise(xb, self.samples, self.latent_dim, self.seed)
                ).numpy()
            )
        return np.concatenate(parts).astype(np.float64)


def row_noise(x: np.ndarray, samples: int, latent_dim: int, seed: int) -> np.ndarray:
    """(samples, n, latent_dim) standard-normal draws, row i's from a generator seeded by a
    hash of row i's bytes and `seed`: a function of the row alone."""
    key = str(seed).encode()
    draws = np.empty((len(x), samples, latent_dim), np.float32)
    for i, row in enumerate(np.ascontiguousarray(x)):
        digest = hashlib.blake2b(row.tobytes(), digest_size=16, key=key).digest()
        draws[i] = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(
            (samples, latent_dim), np.float32
        )
    return draws.transpose(1, 0, 2)
