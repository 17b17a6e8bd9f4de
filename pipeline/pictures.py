"""The pictures stage: what the model draws, for image data."""

from pathlib import Path

import numpy as np

from pipeline import subo
from pipeline.bundle import load_vae
from pipeline.console import timed
from pipeline.data import fixed_inputs, load_split, read_manifest, seeded_rows
from pipeline.figures import bar_chart, image_grid
from pipeline.io import staged_outputs, write_json


def _decoded_means(vae, z: np.ndarray) -> np.ndarray:
    return np.asarray(vae.likelihood.mean(vae.decode(z[None]))[0])  # (n, *F)


def mean_kl_per_dim(vae, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Mean D_j over the rows of x, per latent dimension j: (d,). Near 0 means a collapsed unit."""
    parts = []
    for start in range(0, len(x), batch_size):
        z_mean, z_log_var = vae.encoder.predict_on_batch(np.asarray(x[start:start + batch_size]))
        parts.append(np.asarray(subo.kl_to_prior_per_dim(z_mean, z_log_var)))  # (B, d)
    return np.concatenate(parts).mean(axis=0)


def generative_figures(vae, x: np.ndarray, kl_per_dim: np.ndarray, out_dir: Path, seed: int, title: str,
                       n: int = 10) -> list[int]:
    """reconstructions.png, samples.png and traversals.png; returns the traversed dimensions.

    Reconstructions decode z = μ_φ(x); samples decode z ~ N(0, I); traversals move one
    latent dimension from −3 to 3 (others 0) along the dimensions with the largest mean D_j.
    """
    z_mean = np.asarray(vae.encoder.predict_on_batch(x[:n])[0])
    image_grid([x[:n], _decoded_means(vae, z_mean)], ["inputs", "reconstructions (z = μ)"],
               f"{title}: inputs and reconstructions", out_dir / "reconstructions.png")
    prior = np.random.default_rng(seed).standard_normal((3 * n, vae.latent_dim)).astype(np.float32)
    samples = _decoded_means(vae, prior)
    image_grid([samples[i * n:(i + 1) * n] for i in range(3)], ["z ~ N(0, I)", "", ""],
               f"{title}: samples from the prior (decoder means)", out_dir / "samples.png")
    top = np.argsort(kl_per_dim)[::-1][:min(5, vae.latent_dim)]
    steps = np.linspace(-3, 3, n, dtype=np.float32)
    rows = []
    for j in top:
        z = np.zeros((n, vae.latent_dim), np.float32)
        z[:, j] = steps
        rows.append(_decoded_means(vae, z))
    image_grid(rows, [f"z[{j}], mean D_j = {kl_per_dim[j]:.2f} nats" for j in top],
               f"{title}: traversals from -3 to 3", out_dir / "traversals.png")
    return [int(j) for j in top]


def pictures(*, prepared_dir, model_path, out_dir, binarize: str, seed: int, examples: int = 1000) -> dict:
    """pictures/: mean D_j per latent dimension (any data), and for images reconstructions,
    prior samples and traversals; pictures.json. D_j is averaged over `examples` test rows."""
    manifest = read_manifest(prepared_dir)
    shape = manifest["example_shape"]
    vae = load_vae(model_path)
    test = load_split(prepared_dir, "test")
    x = fixed_inputs(test.x, seeded_rows(len(test), examples, seed), binarize, seed)
    title = f"{manifest['source']}, latent_dim={vae.latent_dim}"
    info: dict = {"images": len(shape) == 3 and shape[-1] in (1, 3), "examples": len(x)}
    with staged_outputs(out_dir) as staging:
        folder = staging / "pictures"
        folder.mkdir()
        kl = mean_kl_per_dim(vae, x)
        info["mean_kl_per_dim"] = [round(float(v), 4) for v in kl]
        bar_chart(kl, "latent dimension j", "mean D_j (nats)", f"{title}: KL to the prior per dimension",
                  folder / "kl_per_dim.png")
        if info["images"]:
            with timed("reconstructions, samples and traversals"):
                info["traversed_dims"] = generative_figures(vae, x, kl, folder, seed, title)
        write_json(staging / "pictures.json", info)
    return info
