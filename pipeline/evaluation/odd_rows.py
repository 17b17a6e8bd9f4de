"""The odd rows: each split's per-row surprisal (the latents' score columns) summed up for
the report: its spread, the most and least surprising rows with their labels, a histogram
per split; for images the most and least surprising test examples as pictures, for tables
the most surprising test rows' cells that the model finds most surprising."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

from pipeline.evaluation.plotting import histograms, image_grid
from pipeline.latents.parquet import read_metadata
from pipeline.latents.scores import TAIL

SHOWN = 8  # rows listed (and pictured) at each end of a split
QUANTILES = (0.5, 0.9, 0.99)
CELLS = 3  # a table row's most surprising cells, listed


def odd_rows(latents_dir, manifest, data: dict, folder: Path, vae) -> dict:
    """{split: {rows, mean, quantiles, most, least}} from the latents of the train and test
    splits (a table's most surprising test rows with their `cells`); surprisal_histogram.png
    (and for images odd_rows.png) into folder."""
    dataset = pads.dataset(latents_dir, format="parquet", partitioning="hive")
    found, surprisal = {}, {}
    for split in ("train", "test"):
        table = dataset.to_table(
            columns=["id", "label", "surprisal", "surprisal_quantile", "novelty"],
            filter=pads.field("split") == split,
        )
        columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        s = surprisal[split] = columns["surprisal"]
        order = np.argsort(s, kind="stable")
        found[split] = {
            "rows": len(s),
            "mean": round(float(s.mean()), 3) if len(s) else None,
            "quantiles": {str(q): round(float(np.quantile(s, q)), 3) for q in QUANTILES} if len(s) else {},
            "most": _listed(columns, order[::-1][:SHOWN], manifest.label_names),
            "least": _listed(columns, order[:SHOWN], manifest.label_names),
        }
    reference = (read_metadata(dataset.files[0])["surprisal"]["reference"] or {}).get("quantiles")
    # new data: above it 1%
    marks = {"training rows' 99th percentile": reference[TAIL]} if reference else None
    histograms(
        surprisal,
        "surprisal S_K (nats)",
        "rows",
        "each row's surprisal, by split",
        folder / "surprisal_histogram.png",
        marks,
    )
    if manifest.pictured and found["test"]["rows"]:
        _pictures(data["test"], found["test"], folder / "odd_rows.png")
    if manifest.columns is not None and found["test"]["rows"]:
        rows = found["test"]["most"]
        for row, cells in zip(rows, odd_cells(vae, data["test"], manifest.columns, [r["id"] for r in rows])):
            row["cells"] = cells
    return found


def odd_cells(vae, split, columns, ids: list[int]) -> list[list[dict]]:
    """Each table row's CELLS most surprising cells: log 1/p(x_c | z = μ_φ(x)) of each column c
    (the likelihood's per-column terms), with the cell's value as read (None where missing)."""
    position = {int(i): p for p, i in enumerate(np.asarray(split.id))}
    stored = np.stack([np.asarray(split.x[position[i]]) for i in ids])
    inputs = split.preprocess(stored)
    x, covariates = vae.split(inputs)
    params = vae.decode(np.asarray(vae.predict_posterior(inputs)[0])[None], covariates)
    likelihood = vae.likelihood  # a table of real columns is one Gaussian: one feature per column
    terms = np.asarray(
        likelihood.per_column(x, params)
        if hasattr(likelihood, "per_column")
        else likelihood.per_feature(x, params)
    )[0]
    return [
        [
            {"column": columns[c].name, "value": columns[c].value(row[c]), "nats": round(float(term[c]), 3)}
            for c in np.argsort(-term, kind="stable")[:CELLS]
        ]
        for row, term in zip(stored, terms)
    ]


def _listed(columns: dict, chosen: np.ndarray, label_names: list[str]) -> list[dict]:
    return [
        {
            "id": int(columns["id"][i]),
            "label": _label(columns["label"][i], label_names),
            "surprisal": round(float(columns["surprisal"][i]), 3),
            "quantile": _rounded(columns["surprisal_quantile"][i]),
            "novelty": _rounded(columns["novelty"][i]),
        }
        for i in chosen
    ]


def _rounded(value) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def _label(value, names: list[str]) -> str | None:
    return None if np.isnan(value) or not names else names[int(value)]  # a null label reads as NaN


def _pictures(split, found: dict, path: Path) -> None:
    """The most and the least surprising test examples, as the model sees them."""
    position = {int(i): p for p, i in enumerate(np.asarray(split.id))}
    rows = [
        split.preprocess(np.asarray(split.x[sorted(position[r["id"]] for r in found[end])]))
        for end in ("most", "least")
    ]
    order = [np.argsort(np.argsort([position[r["id"]] for r in found[end]])) for end in ("most", "least")]
    image_grid(
        [r[o] for r, o in zip(rows, order)],
        ["most surprising", "least surprising"],
        "test examples by surprisal",
        path,
    )
