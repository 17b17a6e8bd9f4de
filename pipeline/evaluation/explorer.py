"""The explore stage: the UMAP's points as a page to hover, search and click
(explorer.html, pipeline.evaluation.explorer_page), and as TensorBoard Embedding Projector
files (projector/), for the tools users already have.

It reads what the umap and evaluate stages wrote (umap.csv: the points and their row ids;
confusion.csv: the linear probe's test predictions by id), the points' z_mean and scores
(surprisal, its quantile, novelty), and the model for their reconstructions.

    projector/tensors.tsv            z_mean, one row per point, tab-separated
    projector/metadata.tsv           a header, then id, label, the probe's prediction, right/wrong
    projector/sprite.png             images: every point's picture in a grid, row by row
    projector/projector_config.pbtxt what `tensorboard --logdir data/evaluation/projector` reads
"""

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from pipeline.data.covariates import covariate_values
from pipeline.data.prepared import load_splits
from pipeline.evaluation.explorer_page import SCORES, Points, Shown, explorer_html
from pipeline.latents.imputation import Completer, decoded_means
from pipeline.latents.reader import read_rows
from pipeline.model.bundle import load_bundle
from pipeline.platform.console import timed
from pipeline.platform.errors import DataError
from pipeline.platform.hardware import share_gpus
from pipeline.platform.io import Publication

DETAIL_VALUES = 40  # a table's or vector's first values shown (the hover shows the first six of them)
HOVER_PIXELS = 56  # a picture's side in the hover, about (the click shows it twice as large)
SPRITE_MAX_SIDE = 8192  # the projector's limit on the sprite image, in pixels


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
    coords, labels, ids = _umap_points(evaluation_dir / "umap.csv")
    positions = _positions(evaluation_dir / "umap.csv", np.asarray(data[split].id), ids)
    order = np.argsort(positions)  # read_rows takes ascending rows
    coords, labels, ids, positions = coords[order], [labels[i] for i in order], ids[order], positions[order]
    bundle = load_bundle(model_path)
    rows = read_rows(
        latents_dir,
        split,
        data[split].id,
        manifest.fingerprint,
        positions,
        ("z_mean", *SCORES),
        bundle.vae.latent_dim,
    )
    z = rows.pop("z_mean")
    predicted = _predictions(evaluation_dir / "confusion.csv")
    with timed("reconstructions for the explorer"):
        shown, pictures = _shown(manifest, bundle, data[split], positions, z)
    points = Points(
        coords[:, 0],
        coords[:, 1],
        ids,
        labels,
        [predicted.get(i, "") for i in ids.tolist()],
        z,
        shown,
        rows,
        _covariates(manifest, data[split], positions),
    )
    title = f"Latents of {manifest.source}: {split} split"
    summary = (
        f"{len(ids):,} points of the {split} split, latent_dim {z.shape[1]}; hover a point, click it for "
        f"its reconstruction, colour by label, probe error, surprisal, novelty, a covariate or a latent "
        "dimension"
    )
    with publication.staged() as staging, timed("explorer page and projector files"):
        (staging / "explorer.html").write_text(explorer_html(points, title, summary), encoding="utf-8")
        _projector(staging / "projector", points, pictures)
    return {
        "points": len(ids),
        "split": split,
        "latent_dim": int(z.shape[1]),
        "bytes": (evaluation_dir / "explorer.html").stat().st_size,
    }


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


def _data_uri(picture: np.ndarray) -> str:
    """A (H, W, 1 or 3) uint8 picture as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buffer, "PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _covariates(manifest, split, positions: np.ndarray) -> dict[str, list[str]]:
    """Each categorical covariate's level of the points, as text (the page colours by them)."""
    if not manifest.covariates:
        return {}
    values = covariate_values(np.asarray(split.x[positions]), manifest.covariates)
    return {c.name: [str(v) for v in values[c.name]] for c in manifest.covariates if c.type == "categorical"}


def _shown(manifest, bundle, split, positions: np.ndarray, z: np.ndarray) -> tuple[Shown, np.ndarray | None]:
    """How the points' examples are shown, and their pictures (uint8 (n, H, W, C)) for images:
    each beside its reconstruction, the decoder's mean at z = μ_φ(x)."""
    stored = np.asarray(split.x[positions])
    if manifest.columns is not None:
        guesses = Completer(bundle.vae, manifest.columns, bundle.preprocess).guesses(z, stored)
        return _values([c.name for c in manifest.columns], stored, guesses, manifest.columns), None
    covariates = bundle.vae.split(split.preprocess(stored))[1]
    means = decoded_means(bundle.vae, z, c=covariates)
    if manifest.pictured:
        inputs = split.preprocess(stored)
        low, high = (
            (0.0, 1.0) if manifest.value_type == "pixels" else (float(inputs.min()), float(inputs.max()))
        )
        pictures = _to_uint8(inputs, low, high)
        return pictures_shown(pictures, _to_uint8(means, low, high)), pictures
    unscaled = means * bundle.preprocess.scale + bundle.preprocess.offset  # back in the stored units
    names = [
        f"x{j}" for j in range(math.prod(manifest.feature_shape))
    ]  # a covariate's code is not shown as x
    stored = stored.reshape(len(stored), -1)[:, : len(names)]
    return _values(names, stored, unscaled.reshape(len(stored), -1), None), None


def pictures_shown(pictures: np.ndarray, reconstructions: np.ndarray) -> Shown:
    """Pictures and their reconstructions as PNG data URIs, shown at about HOVER_PIXELS a side."""
    height, width = pictures.shape[1:3]
    scale = max(1, HOVER_PIXELS // max(height, width))
    return Shown(
        pictures=([_data_uri(p) for p in pictures], [_data_uri(r) for r in reconstructions]),
        size=(height * scale, width * scale),
    )


def _values(names: list[str], stored: np.ndarray, guesses: np.ndarray, columns) -> Shown:
    """The first DETAIL_VALUES columns' cells as text, the example's and its reconstruction's."""

    def text(c: int, values: np.ndarray) -> list[str]:
        if columns is not None and columns[c].levels is not None:
            levels = [html.escape(str(level)) for level in columns[c].levels]
            return ["&mdash;" if np.isnan(v) else levels[int(v)] for v in values]
        return ["&mdash;" if np.isnan(v) else f"{v:.4g}" for v in values]

    return Shown(
        values={
            html.escape(names[c]): (text(c, stored[:, c]), text(c, guesses[:, c]))
            for c in range(min(DETAIL_VALUES, len(names)))
        }
    )


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.round((values - low) / ((high - low) or 1.0) * 255), 0, 255).astype(np.uint8)


def _projector(folder: Path, points: Points, pictures: np.ndarray | None) -> None:
    """tensors.tsv, metadata.tsv, sprite.png (images) and projector_config.pbtxt."""
    folder.mkdir()
    np.savetxt(folder / "tensors.tsv", points.z, delimiter="\t", fmt="%.6g")
    clean = lambda text: " ".join(str(text).split())  # noqa: E731 - no tab or newline inside a field
    rows = ["id\tlabel\tpredicted\tprobe"] + [
        f"{i}\t{clean(label)}\t{clean(p) or '-'}\t{'' if not p else 'right' if p == label else 'wrong'}"
        for i, label, p in zip(points.ids.tolist(), points.labels, points.predicted)
    ]
    (folder / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sprite = ""
    if pictures is not None and len(pictures):
        per_row = math.ceil(math.sqrt(len(pictures)))
        side = min(max(pictures.shape[1:3]), SPRITE_MAX_SIDE // per_row)
        _write_sprite(folder / "sprite.png", pictures, per_row, side)
        sprite = (
            f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {side}\n'
            f"    single_image_dim: {side}\n  }}\n"
        )
    (folder / "projector_config.pbtxt").write_text(
        'embeddings {\n  tensor_name: "z_mean"\n  tensor_path: "tensors.tsv"\n  metadata_path: '
        '"metadata.tsv"\n'
        f"{sprite}}}\n",
        encoding="utf-8",
    )


def _write_sprite(path: Path, pictures: np.ndarray, per_row: int, side: int) -> None:
    """The pictures as side × side tiles, per_row to a row, left to right, top to bottom."""
    from PIL import Image

    mode = "L" if pictures.shape[-1] == 1 else "RGB"
    sheet = Image.new(mode, (per_row * side, per_row * side))
    for i, picture in enumerate(pictures):
        tile = Image.fromarray(picture[..., 0] if mode == "L" else picture).resize(
            (side, side), Image.NEAREST
        )
        sheet.paste(tile, ((i % per_row) * side, (i // per_row) * side))
    sheet.save(path, optimize=True)
