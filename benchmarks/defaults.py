"""The shipped defaults on data the pipeline was not tuned on: only the data keys are set.

    .venv/bin/python -m benchmarks.defaults                      # all nine datasets
    .venv/bin/python -m benchmarks.defaults --only wine digits   # some of them
    .venv/bin/python -m benchmarks.defaults --json results.json
    .venv/bin/python -m benchmarks.defaults --only wine --set loss.free_bits=0.5   # an alternative

For each dataset the whole pipeline (prepare, train, encode, baselines, evaluate, umap,
report) runs in this process with params.yaml as shipped plus data.source / data.path
(and the label column of a table), and one table row is printed: linear and kNN probes
of the latents beside PCA of the same size and the raw inputs, active units, test D, U
and S_100, what `auto` chose, the epochs trained and the wall time.

Datasets, written under --work by this script (none is used by the tests for tuning):
digits (scikit-learn), Fashion-MNIST (Debian's dataset-fashion-mnist), an RGB image
folder of 5,000 Fashion-MNIST images each tinted with a random colour, scikit-learn's
wine table (13 real-valued features), a generated real-valued npz with class structure
(40 features: 10 informative, 30 noise), scikit-learn's breast-cancer table written as
CSV with string labels; and data as it really is: the breast-cancer table with a string
`site` column and 10% of its cells emptied, a generated survey table (strings, booleans,
a year, counts, real values, 5-15% empty cells) whose columns follow a 3-d latent, and a
count matrix simulated from a low-rank negative binomial model (5,000 × 200). For the
tables, the row also gives imputation against the column mean/mode (pipeline.latents.imputation).
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_rgb_folder(out: Path, n: int = 5000, seed: int = 0) -> Path:
    """n Fashion-MNIST train images as 28×28 RGB PNGs in class folders, each a random colour."""
    from PIL import Image

    from pipeline.data.readers.idx import IDX_RELEASES, read_idx

    folder = out / "rgb_folder"
    if folder.is_dir():
        return folder
    rng = np.random.default_rng(seed)
    x = read_idx(FASHION / "train-images-idx3-ubyte.gz")
    y = read_idx(FASHION / "train-labels-idx1-ubyte.gz")
    rows = rng.choice(len(x), n, replace=False)
    names = IDX_RELEASES["fashion_mnist"][1]
    tmp = out / "rgb_folder.tmp"
    for i in rows:
        tint = rng.uniform(0.3, 1.0, size=3)  # the colour carries no class information
        pixels = (x[i][..., None] * tint).astype(np.uint8)
        directory = tmp / names[y[i]].replace("/", "-")
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(directory / f"{i}.png")
    tmp.rename(folder)
    return folder


def write_wine(out: Path) -> Path:
    import pandas as pd
    from sklearn.datasets import load_wine

    wine = load_wine()
    path = out / "wine.csv"
    frame = pd.DataFrame(wine.data, columns=wine.feature_names)
    frame["label"] = wine.target
    frame.to_csv(path, index=False)
    return path


def write_vectors(out: Path, seed: int = 0) -> Path:
    """5,000 real-valued 40-d vectors of 5 classes: 10 informative features, 30 of noise."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=5000,
        n_features=40,
        n_informative=10,
        n_redundant=0,
        n_repeated=0,
        n_classes=5,
        n_clusters_per_class=2,
        class_sep=1.5,
        shuffle=True,
        random_state=seed,
    )
    path = out / "vectors.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def write_cancer(out: Path) -> Path:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer()
    path = out / "cancer.csv"
    frame = pd.DataFrame(cancer.data, columns=cancer.feature_names)
    frame["diagnosis"] = np.array(cancer.target_names)[cancer.target]  # "malignant" / "benign"
    frame.to_csv(path, index=False)
    return path


def write_cancer_site(out: Path, seed: int = 0) -> Path:
    """The breast-cancer table plus a string column (site: north/south/east, tied to the first
    feature), with 10% of the feature cells emptied at random."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.read_csv(write_cancer(out))
    features = [c for c in frame.columns if c != "diagnosis"]
    first = frame[features[0]].to_numpy()
    frame["site"] = np.array(["north", "south", "east"])[
        np.digitize(first + rng.normal(0, 2, len(frame)), np.percentile(first, [33, 66]))
    ]
    holes = rng.uniform(size=(len(frame), len(features) + 1)) < 0.10
    values = frame[[*features, "site"]].astype(object).to_numpy()
    values[holes] = None
    frame[[*features, "site"]] = values
    path = out / "cancer_site.csv"
    frame.to_csv(path, index=False)
    return path


def write_survey(out: Path, n: int = 5000, seed: int = 0) -> Path:
    """A survey-like Parquet table driven by a 3-d latent: 4 classes; strings, booleans, a
    year, two counts and four real columns, 5-15% of each column's cells empty."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    label = np.digitize(z[:, 0] + 0.5 * z[:, 1], [-0.8, 0, 0.8])
    w = rng.normal(size=(3, 8))
    h = z @ w
    columns = {
        "region": np.array(["north", "south", "east", "west", "centre"])[
            np.digitize(h[:, 0], [-1.5, -0.5, 0.5, 1.5])
        ],
        "owner": h[:, 1] + rng.normal(size=n) > 0,
        "plan": np.array(["basic", "plus", "pro"])[np.digitize(h[:, 2] + rng.normal(size=n), [-0.7, 0.7])],
        "year": rng.integers(2015, 2025, size=n),
        "visits": rng.poisson(np.exp(0.8 + 0.5 * h[:, 3] / np.abs(w[:, 3]).sum())),
        "items": rng.negative_binomial(3, 3 / (3 + np.exp(1.5 + 0.4 * h[:, 4] / np.abs(w[:, 4]).sum()))),
        **{f"score_{i}": h[:, 5 + i % 3] * (i + 1) + rng.normal(size=n) for i in range(4)},
    }
    arrays = {}
    for name, values in columns.items():
        empty = rng.uniform(size=n) < rng.uniform(0.05, 0.15)
        arrays[name] = pa.array([None if e else v for v, e in zip(values.tolist(), empty)])
    arrays["label"] = pa.array([f"class_{k}" for k in label])
    path = out / "survey.parquet"
    pq.write_table(pa.table(arrays), path)
    return path


def write_counts(out: Path, n: int = 5000, genes: int = 200, seed: int = 0) -> Path:
    """A count matrix from a low-rank negative binomial model: 4 clusters in a 5-d latent,
    log means linear in it, dispersion 2 (an scRNA-like matrix, many zeros)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    z = rng.normal(size=(n, 5)) + 1.5 * rng.normal(size=(4, 5))[y]
    log_mean = -0.5 + z @ rng.normal(scale=0.35, size=(5, genes))
    path = out / "counts.npz"
    np.savez(path, x=rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(log_mean))).astype(np.int32), y=y)
    return path


DATASETS = {  # name -> (kind, the data keys, given the work directory)
    "digits": ("8×8 grey images", lambda out: {"data.source": "digits"}),
    "fashion_mnist": ("28×28 grey images", lambda out: {"data.source": "fashion_mnist"}),
    "rgb_folder": (
        "28×28 RGB image folder",
        lambda out: {"data.source": "image_folder", "data.path": str(write_rgb_folder(out))},
    ),
    "wine": (
        "table, 13 real features",
        lambda out: {"data.source": "table", "data.path": str(write_wine(out))},
    ),
    "vectors": (
        "npz, 40 real features",
        lambda out: {"data.source": "npz", "data.path": str(write_vectors(out))},
    ),
    "cancer": (
        "CSV, 30 features, string labels",
        lambda out: {
            "data.source": "table",
            "data.path": str(write_cancer(out)),
            "data.table.label_column": "diagnosis",
        },
    ),
    "cancer_site": (
        "CSV, 30 real + 1 string, 10% cells empty",
        lambda out: {
            "data.source": "table",
            "data.path": str(write_cancer_site(out)),
            "data.table.label_column": "diagnosis",
        },
    ),
    "survey": (
        "Parquet, 10 mixed columns, 5-15% empty",
        lambda out: {"data.source": "table", "data.path": str(write_survey(out))},
    ),
    "counts": (
        "npz count matrix, 200 features",
        lambda out: {"data.source": "npz", "data.path": str(write_counts(out))},
    ),
}


def run(name: str, work: Path, overrides: dict) -> dict:
    from pipeline import runner

    kind, keys = DATASETS[name]
    data_keys = keys(work)
    params = overridden_params({**data_keys, **overrides}, source="params.yaml + data keys")
    out = work / name
    start = time.perf_counter()
    metrics = runner.run_all(params, out)["metrics"]
    seconds = time.perf_counter() - start
    choices = json.loads((out / "model" / "choices.json").read_text())
    epochs = (
        len((out / "model" / "live" / "plots" / "metrics" / "train" / "U.tsv").read_text().splitlines()) - 1
    )
    base, test = metrics["baselines"], metrics["subo"]["test"]
    return {
        "dataset": name,
        "kind": kind,
        "data_keys": data_keys,
        "latent_linear": metrics["probe"]["accuracy"],
        "pca_linear": base["pca"]["linear"]["accuracy"],
        "raw_linear": base["raw"]["linear"]["accuracy"],
        "latent_knn": metrics["knn"]["accuracy"],
        "pca_knn": base["pca"]["knn"],
        "raw_knn": base["raw"]["knn"],
        "active_units": metrics["active_units"]["count"],
        "latent_dim": metrics["active_units"]["of"],
        "test_D": test["D"],
        "test_U": test["U"],
        "test_S_100": test["S_K"]["100"],
        "choices": {key: item["value"] for key, item in choices.items()},
        "epochs_run": epochs,
        "seconds": round(seconds, 1),
        "imputation": imputation_summary(metrics.get("columns")),
    }


def imputation_summary(columns: dict | None) -> dict | None:
    """Per metric (accuracy, rmse / the mean's): the model's imputation against the mean/mode,
    over columns."""
    if not columns:
        return None
    rows = [c for c in columns.values() if c["imputation"]["cells"]]
    accuracy = [
        (c["imputation"]["model"], c["imputation"]["mean_or_mode"]) for c in rows if c["metric"] == "accuracy"
    ]
    rmse = [
        c["imputation"]["model"] / c["imputation"]["mean_or_mode"]
        for c in rows
        if c["metric"] == "rmse" and c["imputation"]["mean_or_mode"]
    ]
    return {
        "accuracy_model": round(float(np.mean([a for a, _ in accuracy])), 3) if accuracy else None,
        "accuracy_mode": round(float(np.mean([b for _, b in accuracy])), 3) if accuracy else None,
        "rmse_over_mean": round(float(np.mean(rmse)), 3) if rmse else None,
    }


def table(rows: list[dict]) -> str:
    head = (
        "| data | kind | linear: latent / PCA / raw | kNN: latent / PCA / raw | active | test D | test U "
        "| S_100 | imputed: accuracy vs mode, RMSE / mean's | auto chose | epochs | s |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        c = r["choices"]
        chose = ", ".join(str(c.get(k)) for k in ("data.scaling", "model.likelihood", "model.architecture"))
        chose += f", hidden {c.get('model.hidden')}" + (
            f", filters {c['model.filters']}" if c.get("model.architecture") == "conv" else ""
        )
        i = r.get("imputation") or {}
        imputed = (
            f"{i['accuracy_model']} vs {i['accuracy_mode']}" if i.get("accuracy_model") is not None else "–"
        )
        imputed += f", {i['rmse_over_mean']}" if i.get("rmse_over_mean") is not None else ""
        lines.append(
            f"| {r['dataset']} | {r['kind']} | {r['latent_linear']:.3f} / {r['pca_linear']:.3f} / "
            f"{r['raw_linear']:.3f} | {r['latent_knn']:.3f} / {r['pca_knn']:.3f} / {r['raw_knn']:.3f} "
            f"| {r['active_units']} of {r['latent_dim']} | {r['test_D']:.1f} | {r['test_U']:.1f} "
            f"| {r['test_S_100']:.1f} | {imputed} | {chose} | {r['epochs_run']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/vae-defaults"),
        help="where the datasets and each run's outputs go (datasets are reused)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change knobs beyond the data keys (to study an alternative default)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    logging.getLogger("pipeline").setLevel(logging.INFO)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only:
        rows.append(run(name, args.work, parse_overrides(args.set)))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
