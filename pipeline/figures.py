"""Pictures of the model: scatter plots, reconstructions, prior samples, latent traversals."""

from pathlib import Path

import numpy as np

from pipeline import subo
from pipeline.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    _pyplot().close(fig)


def plot_scatter(coords: np.ndarray, labels: np.ndarray, label_names, title: str, path: Path) -> None:
    """2-D points coloured by label (one colour when there are no labels), with a legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for i, name in enumerate(label_names):
        mask = labels == i
        ax.scatter(coords[mask, 0], coords[mask, 1], s=4, color=cmap(i % cmap.N), label=name)
    if not label_names:
        ax.scatter(coords[:, 0], coords[:, 1], s=4, color=cmap(0))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if label_names:
        ax.legend(markerscale=3, fontsize=8, loc="best", title="label")
    fig.tight_layout()
    _save(fig, path)


def image_grid(rows: list[np.ndarray], row_titles: list[str], title: str, path: Path) -> None:
    """Rows of images, each (n, H, W, C) with C in {1, 3}; values shown on [0, 1]."""
    plt = _pyplot()
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95 + 0.4), dpi=110, squeeze=False)
    for r, (images, row_title) in enumerate(zip(rows, row_titles)):
        for c in range(n):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(images):
                image = np.clip(images[c], 0, 1)
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(row_title, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _decoded_means(vae, z: np.ndarray) -> np.ndarray:
    return np.asarray(vae.likelihood.mean(vae.decode(z[None]))[0])  # (n, *F)


def generative_figures(vae, x: np.ndarray, out_dir: Path, seed: int, title: str, n: int = 10) -> dict:
    """reconstructions.png, samples.png and traversals.png for image data; returns what was drawn.

    Reconstructions decode z = μ_φ(x); samples decode z ~ N(0, I); traversals move one
    latent dimension from −3 to 3 (others 0) along the dimensions with the largest mean D_j.
    """
    z_mean, z_log_var = (np.asarray(a) for a in vae.encoder.predict_on_batch(x))
    image_grid([x[:n], _decoded_means(vae, z_mean[:n])], ["inputs", "reconstructions (z = μ)"],
               f"{title}: inputs and reconstructions", out_dir / "reconstructions.png")
    prior = np.random.default_rng(seed).standard_normal((3 * n, vae.latent_dim)).astype(np.float32)
    samples = _decoded_means(vae, prior)
    image_grid([samples[i * n:(i + 1) * n] for i in range(3)], ["z ~ N(0, I)", "", ""],
               f"{title}: samples from the prior (decoder means)", out_dir / "samples.png")
    kl_per_dim = np.asarray(subo.kl_to_prior_per_dim(z_mean, z_log_var)).mean(axis=0)  # (d,)
    top = np.argsort(kl_per_dim)[::-1][:min(5, vae.latent_dim)]
    steps = np.linspace(-3, 3, n, dtype=np.float32)
    rows = []
    for j in top:
        z = np.zeros((n, vae.latent_dim), np.float32)
        z[:, j] = steps
        rows.append(_decoded_means(vae, z))
    image_grid(rows, [f"z[{j}], mean D_j = {kl_per_dim[j]:.2f} nats" for j in top],
               f"{title}: traversals from -3 to 3", out_dir / "traversals.png")
    return {"traversed_dims": [int(j) for j in top],
            "mean_kl_per_dim": [round(float(v), 4) for v in kl_per_dim]}
