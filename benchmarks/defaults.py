"""The shipped defaults on data the pipeline was not tuned on: only the data keys are set.

    python benchmarks/defaults.py                      # all six datasets
    python benchmarks/defaults.py --only wine digits   # some of them
    python benchmarks/defaults.py --json results.json
    python benchmarks/defaults.py --only wine --set loss.free_bits=0.5   # an alternative

For each dataset the whole pipeline (prepare, train, encode, baselines, evaluate, umap,
report) runs in this process with params.yaml as shipped plus data.source / data.path
(and the label column of a table), and one table row is printed: linear and kNN probes
of the latents beside PCA of the same size and the raw inputs, active units, test D, U
and S_100, what `auto` chose, the epochs trained and the wall time.

Datasets, written under --work by this script (none is used by the tests for tuning):
digits (scikit-learn), Fashion-MNIST (Debian's dataset-fashion-mnist), an RGB image
folder of 5,000 Fashion-MNIST images each tinted with a random colour, scikit-learn's
wine table (13 real-valued features), a generated real-valued npz with class structure
(40 features: 10 informative, 30 noise), and scikit-learn's breast-cancer table written as
CSV with string labels.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run_pipeline import overridden_params, parse_overrides  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_rgb_folder(out: Path, n: int = 5000, seed: int = 0) -> Path:
    """n Fashion-MNIST train images as 28×28 RGB PNGs in class folders, each a random colour."""
    from PIL import Image

    from pipeline.idx import IDX_RELEASES, read_idx

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

    x, y = make_classification(n_samples=5000, n_features=40, n_informative=10, n_redundant=0, n_repeated=0,
                               n_classes=5, n_clusters_per_class=2, class_sep=1.5, shuffle=True, random_state=seed)
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


DATASETS = {  # name -> (kind, the data keys, given the work directory)
    "digits": ("8×8 grey images", lambda out: {"data.source": "digits"}),
    "fashion_mnist": ("28×28 grey images", lambda out: {"data.source": "fashion_mnist"}),
    "rgb_folder": ("28×28 RGB image folder", lambda out: {"data.source": "image_folder",
                                                          "data.path": str(write_rgb_folder(out))}),
    "wine": ("table, 13 real features", lambda out: {"data.source": "table", "data.path": str(write_wine(out))}),
    "vectors": ("npz, 40 real features", lambda out: {"data.source": "npz", "data.path": str(write_vectors(out))}),
    "cancer": ("CSV, 30 features, string labels", lambda out: {
        "data.source": "table", "data.path": str(write_cancer(out)), "data.table.label_column": "diagnosis"}),
}


def run(name: str, work: Path, overrides: dict) -> dict:
    from pipeline import runner

    kind, keys = DATASETS[name]
    data_keys = keys(work)
    params = overridden_params({**data_keys, **overrides}, source="params.yaml + data keys")
    out = work / name
    start = time.perf_counter()
    runner.prepare(params, out_dir=out / "prepared")
    runner.train(params, prepared_dir=out / "prepared", model_dir=out / "model")
    runner.encode(params, prepared_dir=out / "prepared", model_path=out / "model" / "model.keras",
                  out_dir=out / "latents")
    metrics = runner.evaluate_all(params, prepared_dir=out / "prepared", model_path=out / "model" / "model.keras",
                                  latents_dir=out / "latents", out_dir=out / "evaluation")
    seconds = time.perf_counter() - start
    choices = json.loads((out / "model" / "choices.json").read_text())
    epochs = len((out / "model" / "live" / "plots" / "metrics" / "train" / "U.tsv").read_text().splitlines()) - 1
    base, test = metrics["baselines"], metrics["subo"]["test"]
    return {
        "dataset": name, "kind": kind, "data_keys": data_keys,
        "latent_linear": metrics["probe"]["accuracy"], "pca_linear": base["pca"]["linear"]["accuracy"],
        "raw_linear": base["raw"]["linear"]["accuracy"], "latent_knn": metrics["knn"]["accuracy"],
        "pca_knn": base["pca"]["knn"], "raw_knn": base["raw"]["knn"],
        "active_units": metrics["active_units"]["count"], "latent_dim": metrics["active_units"]["of"],
        "test_D": test["D"], "test_U": test["U"], "test_S_100": test["S_K"]["100"],
        "choices": {key: item["value"] for key, item in choices.items()}, "epochs_run": epochs,
        "seconds": round(seconds, 1),
    }


def table(rows: list[dict]) -> str:
    head = ("| data | kind | linear: latent / PCA / raw | kNN: latent / PCA / raw | active | test D | test U "
            "| S_100 | auto chose | epochs | s |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        c = r["choices"]
        chose = ", ".join(str(c.get(k)) for k in ("data.scaling", "model.likelihood", "model.architecture"))
        chose += f", hidden {c.get('model.hidden')}" + (f", filters {c['model.filters']}"
                                                       if c.get("model.architecture") == "conv" else "")
        lines.append(f"| {r['dataset']} | {r['kind']} | {r['latent_linear']:.3f} / {r['pca_linear']:.3f} / "
                     f"{r['raw_linear']:.3f} | {r['latent_knn']:.3f} / {r['pca_knn']:.3f} / {r['raw_knn']:.3f} "
                     f"| {r['active_units']} of {r['latent_dim']} | {r['test_D']:.1f} | {r['test_U']:.1f} "
                     f"| {r['test_S_100']:.1f} | {chose} | {r['epochs_run']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vae-defaults"),
                        help="where the datasets and each run's outputs go (datasets are reused)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="change knobs beyond the data keys (to study an alternative default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)
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
