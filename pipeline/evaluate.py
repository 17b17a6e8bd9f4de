"""Are the latents any good? Linear probes against a PCA baseline, UMAP, and the SUBO figures."""

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from pipeline import subo
from pipeline.config import Params
from pipeline.data import binarize_sample, load_split, read_manifest, validation_rows
from pipeline.diagnostics import phi_gradient_variance
from pipeline.figures import generative_figures, plot_scatter
from pipeline.probes import ProbeProtocol, probe_suite
from pipeline.report import write_report
from pipeline.errors import ConfigError, DataError
from pipeline.io import atomic_path, staged_outputs, write_json
from pipeline.latents import latents_to_numpy, load_latents, read_metadata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(part: str):
    start = time.perf_counter()
    log.info("%s ...", part)
    yield
    log.info("%s done in %.1f s", part, time.perf_counter() - start)


def sample_counts(k: int) -> list[int]:
    """1, 10, 100, ... up to k, and k itself: the K values S_K is reported for."""
    counts = [10**i for i in range(int(np.log10(k)) + 1) if 10**i <= k]
    return counts if counts[-1] == k else [*counts, k]


def subo_estimates(vae, x: np.ndarray, samples: int, decodes_per_batch: int = 4096) -> dict:
    """Mean U, D, reconstruction, S_K and E_K = U − S_K (nats per example) over x.

    U uses the closed-form D and the mean reconstruction surprisal over the same K
    samples z_k ~ q(z|x) that the importance-weighted S_K uses (S_k takes the first k).
    Batches hold about `decodes_per_batch` decoded samples (K per example), compiled once.
    """
    import tensorflow as tf

    ks = sample_counts(samples)

    @tf.function(reduce_retracing=True)
    def per_example(xb):
        z, reconstruction, z_mean, z_log_var = vae.sample_posterior(xb, samples)
        log_w = subo.log_importance_weights(reconstruction, z, z_mean, z_log_var)  # (K, B)
        s_k = [subo.importance_weighted_surprisal(log_w[:k]) for k in ks]
        return subo.kl_to_prior(z_mean, z_log_var), tf.reduce_mean(reconstruction, axis=0), tf.stack(s_k)

    batch_size = max(1, decodes_per_batch // samples)
    parts = [per_example(np.asarray(x[start:start + batch_size])) for start in range(0, len(x), batch_size)]
    kl, reconstruction, s_k = (np.concatenate([p[i].numpy() for p in parts], axis=-1) for i in range(3))
    u = float(np.mean(kl + reconstruction))
    s_means = {str(k): float(v) for k, v in zip(ks, s_k.mean(axis=1))}
    return {
        "examples": len(x),
        "U": u, "D": float(kl.mean()), "reconstruction": float(reconstruction.mean()),
        "S_K": s_means,
        "E_K": {k: u - v for k, v in s_means.items()},
    }


def umap_embedding(z: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    import umap

    # A random_state makes UMAP reproducible and single-threaded (n_jobs=1 says so).
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(z) - 1), min_dist=min_dist,
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(z)


def evaluate(params: Params, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """Write metrics.json, plots data, images and report.md under out_dir; return the metrics.

    Everything is written to a staging directory first and moved into out_dir only when
    the whole evaluation has succeeded: a failure leaves every previous output as it was.
    """
    from pipeline.encode import load_vae

    cfg = params.evaluate
    manifest = read_manifest(prepared_dir)
    vae = load_vae(model_path)
    latents = {split: load_latents(latents_dir, split, latent_dim=vae.latent_dim) for split in ("train", "test")}
    _check_provenance(latents_dir, manifest)
    z = {split: latents_to_numpy(table) for split, table in latents.items()}
    y = {split: table.column("label").fill_null(-1).to_numpy() for split, table in latents.items()}
    raw = {split: load_split(prepared_dir, split) for split in ("train", "test")}
    _check_rows(latents, raw, latents_dir)
    labelled = len(manifest["label_names"]) > 1 and min(y["train"].min(), y["test"].min()) >= 0
    if labelled:
        _check_knn_k(cfg.knn_k, min(len(y["train"]), cfg.probe.max_train_examples))
    with staged_outputs(out_dir) as staging:
        metrics = _evaluate(params, vae, manifest, z, y, raw, labelled, staging)
    return metrics


def _evaluate(params: Params, vae, manifest: dict, z: dict, y: dict, raw: dict, labelled: bool,
              out_dir: Path) -> dict:
    cfg, metrics = params.evaluate, {}
    if labelled:
        with timed("probes (linear with C chosen on validation, kNN) on latents, PCA and raw inputs"):
            metrics.update(_probes(params, z, y, raw, manifest, out_dir))
    else:  # nothing to probe; DVC still expects the plot file
        with atomic_path(out_dir / "confusion.csv") as tmp:
            tmp.write_text("actual,predicted\n")
    with timed("SUBO and importance-weighted surprisal"):
        _, val_rows = validation_rows(raw["train"].y, params.data.validation_fraction, params.seed)
        metrics["subo"] = {split: subo_estimates(vae, _evaluation_inputs(x, params), cfg.importance_samples)
                           for split, x in (("validation", np.asarray(raw["train"].x)[val_rows]),
                                            ("test", raw["test"].x)) if len(x)}
    with timed("gradient variance"):
        batch = _evaluation_inputs(raw["test"].x, params, cfg.gradient_variance.batch_size)
        metrics["gradient_variance"] = phi_gradient_variance(vae, batch, cfg.gradient_variance.repeats)
    images = out_dir / "images"
    with timed("UMAP"):
        metrics["umap"] = _umap_outputs(params, z[cfg.umap.split], y[cfg.umap.split], manifest, out_dir, images)
    with timed("reconstructions, samples and traversals"):
        metrics["generative"] = _generative_outputs(vae, raw["test"], manifest, params, images)
    write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, manifest, vae.latent_dim, out_dir)
    return metrics


def _check_knn_k(k: int, rows: int) -> None:
    """k neighbours out of `rows` probe rows: k >= rows votes the majority class for every point."""
    if k >= rows:
        raise ConfigError(f"params.yaml: evaluate.knn_k must be smaller than the kNN probe's training rows "
                          f"({rows} here). Got {k} instead.")


def _probes(params: Params, z: dict, y: dict, raw: dict, manifest: dict, out_dir: Path) -> dict:
    """metrics["probe"], ["knn"], ["baselines"]; the latent probe's confusion pairs as CSV."""
    from sklearn.decomposition import PCA

    cfg = params.evaluate
    flat = {split: np.asarray(raw[split].x).reshape(len(raw[split]), -1) for split in raw}
    pca = PCA(n_components=min(z["train"].shape[1], flat["train"].shape[1]), random_state=params.seed)
    pca.fit(flat["train"])
    features = {"latent": (z["train"], z["test"]),
                "pca": (pca.transform(flat["train"]), pca.transform(flat["test"])),
                "raw": (flat["train"], flat["test"])}
    protocol = ProbeProtocol(cfg.probe.c_grid, cfg.probe.validation_fraction, cfg.probe.max_train_examples,
                             cfg.knn_k, params.seed)
    results, predicted = probe_suite(features, y["train"], y["test"], protocol)
    names = np.array(manifest["label_names"])
    with atomic_path(out_dir / "confusion.csv") as tmp:
        rows = np.column_stack([names[y["test"]], names[predicted]])
        np.savetxt(tmp, rows, fmt="%s", delimiter=",", header="actual,predicted", comments="")
    latent = results["latent"]
    baselines = {name: results[name] for name in ("pca", "raw")}
    for name, baseline in baselines.items():
        baseline["latent_minus_baseline"] = latent["linear"]["accuracy"] - baseline["linear"]["accuracy"]
        baseline["latent_beats_baseline"] = bool(baseline["latent_minus_baseline"] > 0)
    return {
        "probe": {**latent["linear"], "dim": latent["dim"], "train_examples": results["train_examples"]},
        "knn": {"accuracy": latent["knn"], "k": cfg.knn_k},
        "baselines": {**baselines, "majority_class_accuracy": float(np.bincount(y["test"]).max() / len(y["test"]))},
    }


def _generative_outputs(vae, test, manifest: dict, params: Params, images: Path) -> dict:
    shape = manifest["example_shape"]
    if len(shape) != 3 or shape[-1] not in (1, 3):
        return {"images": False}
    x = np.asarray(test.x[seeded_rows(len(test), 10, params.seed)])
    title = f"{manifest['source']}, latent_dim={vae.latent_dim}"
    return {"images": True, **generative_figures(vae, x, images, params.seed, title)}


def seeded_rows(length: int, n: int, seed: int) -> np.ndarray:
    """At most n distinct row indices out of `length`, chosen with a seed, sorted."""
    return np.sort(np.random.default_rng(seed).choice(length, size=min(n, length), replace=False))


def _evaluation_inputs(x: np.ndarray, params: Params, n: int | None = None) -> np.ndarray:
    """A seeded subset of x (surprisal_examples rows unless n), binarized once if training was dynamic."""
    rows = seeded_rows(len(x), n or params.evaluate.surprisal_examples, params.seed)
    subset = np.asarray(x[rows])
    return binarize_sample(subset, params.seed) if params.data.binarize == "dynamic" else subset


def _umap_outputs(params: Params, z: np.ndarray, labels: np.ndarray, manifest: dict, out_dir: Path,
                  images: Path) -> dict:
    """umap.png (and latents.png when d = 2) under images/, the coordinates as umap.csv."""
    cfg = params.evaluate.umap
    rows = seeded_rows(len(z), cfg.max_points, params.seed)
    names = manifest["label_names"]
    coords = umap_embedding(z[rows], cfg.n_neighbors, cfg.min_dist, params.seed)
    what = f"{cfg.split} z_mean: {manifest['source']}, latent_dim={z.shape[1]}, {len(rows)} points"
    plot_scatter(coords, labels[rows], names, f"UMAP of {what}", images / "umap.png")
    if z.shape[1] == 2:
        plot_scatter(z[rows], labels[rows], names, f"Latents ({what})", images / "latents.png")
    label_text = np.array(names)[labels[rows]] if names else np.full(len(rows), "")
    with atomic_path(out_dir / "umap.csv") as tmp:
        table = np.column_stack([np.char.mod("%.5f", coords), label_text])
        np.savetxt(tmp, table, fmt="%s", delimiter=",", header="x,y,label", comments="")
    return {"split": cfg.split, "points": len(rows), "n_neighbors": cfg.n_neighbors, "min_dist": cfg.min_dist,
            "seed": params.seed}


def _check_rows(latents: dict, raw: dict, latents_dir) -> None:
    """The latents must be the prepared examples, row for row (encode writes them in order)."""
    for split in latents:
        if not np.array_equal(latents[split].column("id").to_numpy(), np.asarray(raw[split].id)):
            raise DataError(f"{latents_dir}: split={split} does not hold the prepared {split} examples "
                            "in order; re-run encode")


def _check_provenance(latents_dir, manifest: dict) -> None:
    for file in sorted(Path(latents_dir).glob("split=*/*.parquet")):
        fingerprint = read_metadata(file).get("dataset_fingerprint")
        if fingerprint != manifest["fingerprint"]:
            raise DataError(f"{file}: latents were encoded from another dataset "
                            f"(fingerprint {fingerprint}, prepared data has {manifest['fingerprint']}); "
                            "re-run encode")
