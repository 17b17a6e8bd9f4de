"""Pictures of a trained model: its KL to the prior per latent dimension (where D has
that closed form), and for image data, reconstructions, samples from the prior and latent
traversals."""

from pathlib import Path

import numpy as np

from pipeline.evaluation.plotting import bar_chart, image_grid
from pipeline.latents.imputation import decoded_means
from pipeline.model import subo


def mean_kl_per_dim(vae, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Mean D_j over the rows of x, per latent dimension j: (d,). Near 0 means a collapsed unit."""
    parts = []
    for start in range(0, len(x), batch_size):
        z_mean, z_log_var = vae.predict_posterior(np.asarray(x[start : start + batch_size]))
        parts.append(np.asarray(subo.kl_to_prior_per_dim(z_mean, z_log_var)))  # (B, d)
    return np.concatenate(parts).mean(axis=0)


def generative_figures(
    vae, x: np.ndarray, use: tuple[str, np.ndarray], out_dir: Path, seed: int, title: str, n: int = 10
) -> list[int]:
    """reconstructions.png, samples.png and traversals.png; returns the traversed dimensions.

    Reconstructions decode z = μ_φ(x); samples decode z ~ p(z); traversals move one
    latent dimension from −3 to 3 (others 0) along the most used dimensions.

    Args:
        vae: the trained model.
        x: image examples, (n, H, W, C).
        use: (what it is, its value per latent dimension (d,)): mean D_j, or Var_x z_mean_j.
        out_dir: where the PNG files go.
        seed: seeds the prior samples.
        title: the figures' title.
        n: examples and samples per figure.

    Returns:
        The traversed latent dimensions.
    """
    _reconstructions(vae, x[:n], out_dir, title)
    _prior_samples(vae, n, out_dir, seed, title)
    return _traversals(vae, use, n, out_dir, title)


def _reconstructions(vae, x: np.ndarray, out_dir: Path, title: str) -> None:
    """reconstructions.png: the examples x above their reconstructions, decoded at z = μ_φ(x)."""
    z_mean = np.asarray(vae.predict_posterior(x)[0])
    image_grid(
        [x, decoded_means(vae, z_mean)],
        ["inputs", "reconstructions (z = μ)"],
        f"{title}: inputs and reconstructions",
        out_dir / "reconstructions.png",
    )


def _prior_samples(vae, n: int, out_dir: Path, seed: int, title: str) -> None:
    """samples.png: the decoder's means at 3 rows of n seeded draws z ~ p(z)."""
    samples = decoded_means(vae, vae.sample_prior(3 * n, seed))
    image_grid(
        [samples[i * n : (i + 1) * n] for i in range(3)],
        ["z ~ p(z)", "", ""],
        f"{title}: samples from the prior (decoder means)",
        out_dir / "samples.png",
    )


def _traversals(vae, use: tuple[str, np.ndarray], n: int, out_dir: Path, title: str) -> list[int]:
    """traversals.png: along each of the (at most 5) most used dimensions, n steps from −3 to 3
    with the others at 0; returns those dimensions."""
    measure, per_dim = use
    top = np.argsort(per_dim)[::-1][: min(5, vae.latent_dim)]
    steps = np.linspace(-3, 3, n, dtype=np.float32)
    rows = []
    for j in top:
        z = np.zeros((n, vae.latent_dim), np.float32)
        z[:, j] = steps
        rows.append(decoded_means(vae, z))
    image_grid(
        rows,
        [f"z[{j}], {measure} = {per_dim[j]:.2f}" for j in top],
        f"{title}: traversals from -3 to 3",
        out_dir / "traversals.png",
    )
    return [int(j) for j in top]


def draw_pictures(vae, x: np.ndarray, folder: Path, title: str, seed: int, images: bool) -> dict:
    """Into folder: kl_per_dim.png (mean D_j over the rows of x, any data, where D has its
    closed form), and for images reconstructions, prior samples and traversals. Returns
    what was drawn.

    Args:
        vae: the trained model.
        x: scored test examples.
        folder: where the PNG files go.
        title: the figures' title.
        seed: seeds the prior samples.
        images: whether x holds images (grey or RGB).

    Returns:
        What was drawn: {"images", "examples"}, "mean_kl_per_dim" (closed-form D) or
        "variance_of_mean_per_dim" (a flow or VampPrior: D_j does not exist), and for images
        "traversed_dims".
    """
    info = {"images": images, "examples": len(x)}
    if vae.closed_form_kl:
        use = ("mean D_j", mean_kl_per_dim(vae, x))
        bar_chart(
            use[1],
            "latent dimension j",
            "mean D_j (nats)",
            f"{title}: KL to the prior per dimension",
            folder / "kl_per_dim.png",
        )
        info["mean_kl_per_dim"] = [round(float(v), 4) for v in use[1]]
    else:  # D = E_q[log q − log p] does not split by dimension: rank the units by their use instead
        use = ("Var_x z_mean_j", np.var(np.asarray(vae.predict_posterior(np.asarray(x[:1024]))[0]), axis=0))
        info["variance_of_mean_per_dim"] = [round(float(v), 4) for v in use[1]]
    if images:
        info["traversed_dims"] = generative_figures(vae, x, use, folder, seed, title)
    return info
