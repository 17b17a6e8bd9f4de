"""The explore stage: the UMAP's points as a page to hover, search and click
(explorer.html, pipeline.evaluation.explorer.page), and as TensorBoard Embedding Projector
files (projector/, pipeline.evaluation.explorer.projector), for the tools users already have.

It reads what the umap and evaluate stages wrote (umap.csv: the points and their row ids;
confusion.csv: the linear probe's test predictions by id), the points' z_mean and scores
(surprisal, its quantile, novelty), and the model for their reconstructions.
"""

import csv
import json
from pathlib import Path

import numpy as np

from pipeline.data.covariates import covariate_values
from pipeline.data.prepared import load_splits
from pipeline.evaluation.explorer.examples import shown_examples
from pipeline.evaluation.explorer.page import SCORES, Points, explorer_html
from pipeline.evaluation.explorer.projector import write_projector
from pipeline.latents.reader import read_rows
from pipeline.model.bundle import load_bundle
from pipeline.platform.console import timed
from pipeline.platform.errors import DataError
from pipeline.platform.hardware import share_gpus
from pipeline.platform.io import Publication


def from_params(params, *, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """The stage's recipe (stages/explore.py and pipeline.runner): it reads no params of its
    own; the points are the umap stage's."""
    return explore(
        prepared_dir=prepared_dir, model_path=model_path, latents_dir=latents_dir, evaluation_dir=out_dir
    )


def explore(*, prepared_dir, model_path, latents_dir, evaluation_dir) -> dict:
    """explorer.html and projector/ under evaluation_dir, replaced together; returns what they hold."""
    evaluation_dir = Path(evaluation_dir)
    publication = Publication(evaluation_dir, "explore")
    publication.recover()  # what a killed run of this stage left
    share_gpus()
    manifest, data = load_splits(prepared_dir)
    split = json.loads((evaluation_dir / "umap.json").read_text(encoding="utf-8"))["split"]
    umap_rows = _umap_rows(evaluation_dir / "umap.csv", np.asarray(data[split].id))
    bundle = load_bundle(model_path)
    points, pictures = _points(manifest, bundle, data[split], split, umap_rows, latents_dir, evaluation_dir)
    title = f"Latents of {manifest.source}: {split} split"
    with publication.staged() as staging, timed("explorer page and projector files"):
        page = explorer_html(points, title, _summary(points, split))
        (staging / "explorer.html").write_text(page, encoding="utf-8")
        write_projector(staging / "projector", points, pictures)
    return {
        "points": len(points.ids),
        "split": split,
        "latent_dim": int(points.z.shape[1]),
        "bytes": (evaluation_dir / "explorer.html").stat().st_size,
    }


def _umap_rows(path: Path, split_ids: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(coordinates, labels, ids, positions) of umap.csv's points, positions being the split's
    rows holding them; all in the order of those rows (read_rows takes ascending rows)."""
    coords, labels, ids = _umap_points(path)
    positions = _positions(path, split_ids, ids)
    order = np.argsort(positions)  # read_rows takes ascending rows
    return coords[order], [labels[i] for i in order], ids[order], positions[order]


def _points(
    manifest, bundle, split_data, split: str, umap_rows: tuple, latents_dir, evaluation_dir: Path
) -> tuple[Points, np.ndarray | None]:
    """What the page shows of each point: its place in the UMAP, id and label, the probe's
    prediction, z_mean and scores from the latents, its example beside its reconstruction,
    its covariates; and the examples' pictures (uint8 (n, H, W, C)) for images."""
    coords, labels, ids, positions = umap_rows
    rows = read_rows(
        latents_dir,
        split,
        split_data.id,
        manifest.fingerprint,
        positions,
        ("z_mean", *SCORES),
        bundle.vae.latent_dim,
    )
    z = rows.pop("z_mean")
    predicted = _predictions(evaluation_dir / "confusion.csv")
    with timed("reconstructions for the explorer"):
        shown, pictures = shown_examples(manifest, bundle, split_data, positions, z)
    points = Points(
        coords[:, 0],
        coords[:, 1],
        ids,
        labels,
        [predicted.get(i, "") for i in ids.tolist()],
        z,
        shown,
        rows,
        _covariates(manifest, split_data, positions),
    )
    return points, pictures


def _summary(points: Points, split: str) -> str:
    """The line under the page's title: what the points are, and what to do with them."""
    return (
        f"{len(points.ids):,} points of the {split} split, latent_dim {points.z.shape[1]}; hover a point, "
        "click it for its reconstruction, colour by label, probe error, surprisal, novelty, a covariate or "
        "a latent dimension"
    )


def _umap_points(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(coordinates (n, 2), labels, ids) of umap.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    coords = np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(-1, 2)
    return coords, [r["label"] for r in rows], np.array([int(r["id"]) for r in rows], np.int64)


def _positions(path: Path, split_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The rows of the split holding `ids` (those of the umap stage's `path`)."""
    order = np.argsort(split_ids, kind="stable")
    found = order[np.minimum(np.searchsorted(split_ids, ids, sorter=order), max(len(order) - 1, 0))]
    if len(ids) and (not len(order) or not (split_ids[found] == ids).all()):
        raise DataError(
            f"{path}: ids the prepared split does not have; re-run the umap stage (dvc repro umap)"
        )
    return found


def _predictions(path: Path) -> dict[int, str]:
    """{id: the linear probe's prediction} from confusion.csv (empty without labels)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {int(r["id"]): r["predicted"] for r in csv.DictReader(f)}


def _covariates(manifest, split, positions: np.ndarray) -> dict[str, list[str]]:
    """Each categorical covariate's level of the points, as text (the page colours by them)."""
    if not manifest.covariates:
        return {}
    values = covariate_values(np.asarray(split.x[positions]), manifest.covariates)
    return {c.name: [str(v) for v in values[c.name]] for c in manifest.covariates if c.type == "categorical"}
