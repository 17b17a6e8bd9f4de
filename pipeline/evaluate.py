"""Are the latents any good? Linear probes against a PCA baseline, UMAP, and the SUBO figures."""

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from pipeline import subo
from pipeline.config import Params
from pipeline.data import load_split, read_manifest, validation_rows
from pipeline.diagnostics import phi_gradient_variance
from pipeline.errors import DataError
from pipeline.io import atomic_path, write_json
from pipeline.latents import latents_to_numpy, load_latents, read_metadata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(part: str):
    start = time.perf_counter()
    log.info("%s ...", part)
    yield
    log.info("%s done in %.1f s", part, time.perf_counter() - start)


def linear_probe(train_x, train_y, test_x, test_y, seed: int) -> float:
    """Test accuracy of standardised logistic regression fitted on train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def probe_scores(z_train, y_train, z_test, y_test, x_train, x_test, seed: int) -> dict:
    """The same probe on the latents, on the raw inputs, and on a PCA of the inputs of equal size."""
    from sklearn.decomposition import PCA

    d = z_train.shape[1]
    pca = PCA(n_components=min(d, x_train.shape[1]), random_state=seed).fit(x_train)
    scores = {
        "latent": linear_probe(z_train, y_train, z_test, y_test, seed),
        "pca": linear_probe(pca.transform(x_train), y_train, pca.transform(x_test), y_test, seed),
        "raw": linear_probe(x_train, y_train, x_test, y_test, seed),
    }
    chance = float(np.bincount(y_test).max() / len(y_test))
    return {"accuracy": scores, "dim": {"latent": d, "pca": pca.n_components_, "raw": x_train.shape[1]},
            "majority_class_accuracy": chance}


def sample_counts(k: int) -> list[int]:
    """1, 10, 100, ... up to k, and k itself: the K values S_K is reported for."""
    counts = [10**i for i in range(int(np.log10(k)) + 1) if 10**i <= k]
    return counts if counts[-1] == k else [*counts, k]


def subo_estimates(vae, x: np.ndarray, samples: int, batch_size: int = 100) -> dict:
    """Mean U, D, reconstruction, S_K and E_K = U − S_K (nats per example) over x.

    U uses the closed-form D and the mean reconstruction surprisal over the same K
    samples z_k ~ q(z|x) that the importance-weighted S_K uses (S_k takes the first k).
    """
    from keras import ops

    ks = sample_counts(samples)
    sums = {"U": 0.0, "D": 0.0, "reconstruction": 0.0, **{k: 0.0 for k in ks}}
    for start in range(0, len(x), batch_size):
        xb = np.asarray(x[start:start + batch_size])
        z, reconstruction, z_mean, z_log_var = vae.sample_posterior(xb, samples)
        kl = subo.kl_to_prior(z_mean, z_log_var)
        log_w = subo.log_importance_weights(reconstruction, z, z_mean, z_log_var)  # (K, B)
        sums["U"] += float(ops.sum(subo.subo(kl, reconstruction)))
        sums["D"] += float(ops.sum(kl))
        sums["reconstruction"] += float(ops.sum(reconstruction)) / samples
        for k in ks:
            sums[k] += float(ops.sum(subo.importance_weighted_surprisal(log_w[:k])))
    means = {key: value / len(x) for key, value in sums.items()}
    return {
        "examples": len(x),
        "U": means["U"], "D": means["D"], "reconstruction": means["reconstruction"],
        "S_K": {str(k): means[k] for k in ks},
        "E_K": {str(k): means["U"] - means[k] for k in ks},
    }


def umap_embedding(z: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    import umap

    # A random_state makes UMAP reproducible and single-threaded (n_jobs=1 says so).
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(z) - 1), min_dist=min_dist,
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(z)


def plot_scatter(coords: np.ndarray, labels: np.ndarray, label_names, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for i, name in enumerate(label_names):
        mask = labels == i
        ax.scatter(coords[mask, 0], coords[mask, 1], s=4, color=cmap(i % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best", title="label")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    plt.close(fig)


def evaluate(params: Params, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """Write metrics.json, umap.png and umap.csv under out_dir; return the metrics."""
    from pipeline.encode import load_vae

    out_dir = Path(out_dir)
    manifest = read_manifest(prepared_dir)
    vae = load_vae(model_path)
    train, test = (load_latents(latents_dir, split, latent_dim=vae.latent_dim) for split in ("train", "test"))
    _check_provenance(latents_dir, manifest)
    z_train, z_test = latents_to_numpy(train), latents_to_numpy(test)
    y_train, y_test = (t.column("label").to_numpy(zero_copy_only=False) for t in (train, test))
    raw_train, raw_test = (load_split(prepared_dir, s) for s in ("train", "test"))
    flat = lambda split: np.asarray(split.x).reshape(len(split), -1)  # noqa: E731

    with timed("linear probes"):
        probe = probe_scores(z_train, y_train, z_test, y_test, flat(raw_train), flat(raw_test), params.seed)
    with timed("SUBO and importance-weighted surprisal"):
        _, val_rows = validation_rows(raw_train.y, params.data.validation_fraction, params.seed)
        figures = {split: subo_estimates(vae, _subset(x, params.evaluate.surprisal_examples, params.seed),
                                         params.evaluate.importance_samples)
                   for split, x in (("validation", np.asarray(raw_train.x)[val_rows]), ("test", raw_test.x))
                   if len(x)}
    with timed("gradient variance"):
        cfg = params.evaluate.gradient_variance
        batch = _subset(raw_test.x, cfg.batch_size, params.seed)
        variance = phi_gradient_variance(vae, batch, cfg.repeats)
    with timed("UMAP"):
        umap_metrics = _umap_outputs(params, z_test, y_test, manifest, out_dir)

    metrics = {"probe": probe, "subo": figures, "gradient_variance": variance, "umap": umap_metrics}
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def seeded_rows(length: int, n: int, seed: int) -> np.ndarray:
    """At most n distinct row indices out of `length`, chosen with a seed, sorted."""
    return np.sort(np.random.default_rng(seed).choice(length, size=min(n, length), replace=False))


def _subset(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.asarray(x[seeded_rows(len(x), n, seed)])


def _umap_outputs(params: Params, z: np.ndarray, labels: np.ndarray, manifest: dict, out_dir: Path) -> dict:
    cfg = params.evaluate.umap
    rows = seeded_rows(len(z), cfg.max_points, params.seed)
    coords = umap_embedding(z[rows], cfg.n_neighbors, cfg.min_dist, params.seed)
    title = f"UMAP of test z_mean: {manifest['source']}, latent_dim={z.shape[1]}"
    plot_scatter(coords, labels[rows], manifest["label_names"], title, out_dir / "umap.png")
    table = np.column_stack([coords, labels[rows]])
    with atomic_path(out_dir / "umap.csv") as tmp:
        np.savetxt(tmp, table, fmt=["%.5f", "%.5f", "%d"], delimiter=",", header="x,y,label", comments="")
    return {"points": len(rows), "n_neighbors": cfg.n_neighbors, "min_dist": cfg.min_dist}


def _check_provenance(latents_dir, manifest: dict) -> None:
    for file in sorted(Path(latents_dir).glob("split=*/*.parquet")):
        fingerprint = read_metadata(file).get("dataset_fingerprint")
        if fingerprint != manifest["fingerprint"]:
            raise DataError(f"{file}: latents were encoded from another dataset "
                            f"(fingerprint {fingerprint}, prepared data has {manifest['fingerprint']}); "
                            "re-run encode")
