"""The odd rows: each split's per-row surprisal (the latents' score columns) summed up for
the report: its spread, the most and least surprising rows with their labels, a histogram
per split and, for images, the most and least surprising test examples as pictures."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

from pipeline.evaluation.plotting import histograms, image_grid

SHOWN = 8  # rows listed (and pictured) at each end of a split
QUANTILES = (0.5, 0.9, 0.99)


def odd_rows(latents_dir, manifest, data: dict, folder: Path, images: bool) -> dict:
    """{split: {rows, mean, quantiles, most, least}} from the latents of the train and test
    splits; surprisal_histogram.png (and for images odd_rows.png) into folder."""
    dataset = pads.dataset(latents_dir, format="parquet", partitioning="hive")
    found, surprisal = {}, {}
    for split in ("train", "test"):
        table = dataset.to_table(columns=["id", "label", "surprisal", "surprisal_quantile"],
                                 filter=pads.field("split") == split)
        columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        s = surprisal[split] = columns["surprisal"]
        order = np.argsort(s, kind="stable")
        found[split] = {"rows": len(s), "mean": round(float(s.mean()), 3) if len(s) else None,
                        "quantiles": {str(q): round(float(np.quantile(s, q)), 3) for q in QUANTILES} if len(s) else {},
                        "most": _listed(columns, order[::-1][:SHOWN], manifest.label_names),
                        "least": _listed(columns, order[:SHOWN], manifest.label_names)}
    histograms(surprisal, "surprisal S_K (nats)", "rows", "each row's surprisal, by split",
               folder / "surprisal_histogram.png")
    if images and found["test"]["rows"]:
        _pictures(data["test"], found["test"], folder / "odd_rows.png")
    return found


def _listed(columns: dict, chosen: np.ndarray, label_names: list[str]) -> list[dict]:
    return [{"id": int(columns["id"][i]), "label": _label(columns["label"][i], label_names),
             "surprisal": round(float(columns["surprisal"][i]), 3),
             "quantile": _rounded(columns["surprisal_quantile"][i])} for i in chosen]


def _rounded(value) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def _label(value, names: list[str]) -> str | None:
    return None if np.isnan(value) or not names else names[int(value)]  # a null label reads as NaN


def _pictures(split, found: dict, path: Path) -> None:
    """The most and the least surprising test examples, as the model sees them."""
    position = {int(i): p for p, i in enumerate(np.asarray(split.id))}
    rows = [split.preprocess(np.asarray(split.x[sorted(position[r["id"]] for r in found[end])]))
            for end in ("most", "least")]
    order = [np.argsort(np.argsort([position[r["id"]] for r in found[end]])) for end in ("most", "least")]
    image_grid([r[o] for r, o in zip(rows, order)], ["most surprising", "least surprising"],
               "test examples by surprisal", path)
