"""The umap stage: a 2-D picture of the latents; re-runs alone when evaluate.umap.* changes."""

import sys
import warnings

import numpy as np

from pipeline.data.covariates import stored_codes
from pipeline.data.prepared import load_splits, seeded_rows
from pipeline.evaluation.plotting import csv_text, plot_scatter
from pipeline.latents.reader import read_z_mean
from pipeline.platform.console import timed
from pipeline.platform.io import Publication, write_json
from pipeline.platform.params.config import Params, UmapConfig


def umap_embedding(z: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """2-D UMAP coordinates of z (n, d), reproducible for a seed."""
    from sklearn.neighbors import NearestNeighbors

    umap = _import_umap()
    k = min(n_neighbors, len(z) - 1)
    # Exact neighbours from scikit-learn rather than UMAP's NN-descent: no approximation, and
    # no numba compilation of pynndescent in every fresh process (10,000 points: 38 s -> 13 s).
    distances, indices = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z)
    # A random_state makes UMAP reproducible and single-threaded (n_jobs=1 says so).
    reducer = umap.UMAP(
        n_neighbors=k,
        min_dist=min_dist,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(indices, distances, None),
    )
    with warnings.catch_warnings():  # "no search index: cannot transform new data": not needed here
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return reducer.fit_transform(z)


def _import_umap():
    """umap-learn, without the TensorFlow import it makes for ParametricUMAP (unused here).

    That import is 4 s of a stage that needs no TensorFlow; a failed import is what
    umap-learn itself expects when TensorFlow is absent. Left alone when it is loaded.
    """
    if "tensorflow" in sys.modules:
        import umap

        return umap
    sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError
    try:
        import umap
    finally:
        del sys.modules["tensorflow"]
    return umap


def from_params(params: Params, *, prepared_dir, latents_dir, out_dir) -> dict:
    """The stage's recipe: the params it reads, passed on (stages/umap_view.py and pipeline.runner)."""
    return umap_view(
        prepared_dir=prepared_dir,
        latents_dir=latents_dir,
        out_dir=out_dir,
        umap=params.evaluate.umap,
        seed=params.seed,
    )


def umap_view(*, prepared_dir, latents_dir, out_dir, umap: UmapConfig, seed: int) -> dict:
    """umap.csv (coordinates, labels and row ids), umap/umap.png (and umap/latents.png when d = 2;
    umap/covariate_<j>.png coloured by each categorical covariate j, in order), umap.json.

    Args:
        prepared_dir: the prepared data (labels, ids).
        latents_dir: the latent dataset.
        out_dir: data/evaluation.
        umap: the evaluate.umap params.
        seed: seeds the subsample and UMAP.

    Returns:
        umap.json's content.
    """
    publication = Publication(out_dir, "umap")
    publication.recover()  # what a killed run of this stage left
    manifest, data = load_splits(prepared_dir)
    ids = data[umap.split].id
    rows = seeded_rows(len(ids), umap.max_points, seed)
    z = read_z_mean(latents_dir, umap.split, ids, manifest.fingerprint, rows)  # only the rows drawn are kept
    labels = np.asarray(data[umap.split].y[rows])
    with timed("UMAP"):
        coords = umap_embedding(z, umap.n_neighbors, umap.min_dist, seed)
    what = f"{umap.split} z_mean: {manifest.source}, latent_dim={z.shape[1]}, {len(rows)} points"
    info = {
        "split": umap.split,
        "points": len(rows),
        "n_neighbors": umap.n_neighbors,
        "min_dist": umap.min_dist,
        "seed": seed,
    }
    with publication.staged() as staging:
        _pictures(staging / "umap", coords, z, labels, what, manifest, data[umap.split], rows)
        points = _umap_csv(coords, labels, manifest.label_names, ids[rows])
        (staging / "umap.csv").write_text(points, encoding="utf-8")
        write_json(staging / "umap.json", info)
    return info


def _pictures(
    folder, coords: np.ndarray, z: np.ndarray, labels: np.ndarray, what: str, manifest, split, rows
) -> None:
    """Into folder: umap.png, latents.png when d = 2, and covariate_<j>.png coloured by each
    categorical covariate j, in order (the report numbers them so)."""
    folder.mkdir()
    names = manifest.label_names
    plot_scatter(coords, labels, names, f"UMAP of {what}", folder / "umap.png")
    if z.shape[1] == 2:
        plot_scatter(z, labels, names, f"Latents ({what})", folder / "latents.png")
    codes = stored_codes(split.x, rows, manifest.covariates) if manifest.covariates else {}
    for j, covariate in enumerate(c for c in manifest.covariates or () if c.type == "categorical"):
        plot_scatter(
            coords,
            codes[covariate.name],
            [str(level) for level in covariate.levels],
            f"UMAP of {what}, by {covariate.name}",
            folder / f"covariate_{j}.png",
        )


def _umap_csv(coords: np.ndarray, labels: np.ndarray, names: list[str], ids: np.ndarray) -> str:
    """umap.csv's text: each point's coordinates, label and row id."""
    label_text = np.array(names)[labels] if names else np.full(len(ids), "")
    rows = zip(np.char.mod("%.5f", coords[:, 0]), np.char.mod("%.5f", coords[:, 1]), label_text, ids)
    return csv_text(["x", "y", "label", "id"], rows)
