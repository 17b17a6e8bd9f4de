"""Diagnostics of a trained model: is the posterior collapsed, and why is the
reparameterized estimator better (the article asks; this makes it a number)."""

import numpy as np

# Burda et al. (2016, "Importance Weighted Autoencoders"): unit j is active when
# Var_x(E_q[z_j | x]) > 0.01. It is the metric's definition, not a knob.
ACTIVITY_THRESHOLD = 0.01


def active_units(z_mean: np.ndarray) -> dict:
    """Active latent units from μ_φ(x) = E_q[z | x] of many examples, z_mean (n, d)."""
    variance = np.var(np.asarray(z_mean, np.float64), axis=0)  # (d,)
    return {"count": int((variance > ACTIVITY_THRESHOLD).sum()), "of": int(len(variance)),
            "threshold": ACTIVITY_THRESHOLD, "variance_of_mean": [round(float(v), 4) for v in variance]}


def collapse_warning(active: dict) -> str | None:
    """A warning naming the knobs when fewer than two units, or under a quarter of them, are active."""
    count, total = active["count"], active["of"]
    if count >= min(2, total) and 4 * count >= total:
        return None
    return (f"posterior collapse: only {count} of {total} latent units are active (Var_x E_q[z_j] > "
            f"{active['threshold']}); the latents carry little about x. Try loss.kl_warmup_epochs, "
            "loss.free_bits or a lower loss.beta, or a smaller model.latent_dim")


def phi_gradient_variance(vae, x: np.ndarray, repeats: int) -> dict:
    """Variance of the φ-gradient (encoder weights) of the training objective, per estimator.

    On the fixed batch x, draw the gradient `repeats` times with fresh samples z ~ q(z|x)
    under each estimator, take each parameter's variance across the draws, and average
    over parameters. The model is not updated. Returns both means and their ratio
    score_function / reparameterized (> 1 when the reparameterized estimator is the
    lower-variance one).
    """
    import tensorflow as tf

    out = {}
    for estimator in ("reparameterized", "score_function"):

        @tf.function
        def gradient(x, estimator=estimator):
            with tf.GradientTape() as tape:
                objective, _ = vae.objective(x, estimator=estimator)
            return tape.gradient(objective, vae.encoder.trainable_weights)

        draws = np.stack([np.concatenate([g.numpy().ravel() for g in gradient(x)]) for _ in range(repeats)])
        out[estimator] = float(draws.var(axis=0, ddof=1).mean())  # draws: (R, parameters)
    out["ratio"] = out["score_function"] / out["reparameterized"]
    return {**out, "repeats": repeats, "batch_size": len(x)}
