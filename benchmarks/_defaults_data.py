"""The datasets of benchmarks/defaults.py, written under its work directory: none is used by
the tests or for tuning, so the shipped defaults meet them as a user's data.
"""

from pathlib import Path

import numpy as np

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
