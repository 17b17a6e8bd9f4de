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

Datasets, written under --work by benchmarks/_defaults_data.py (none is used by the tests for tuning):
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

from benchmarks._common import command_line, write_results
from benchmarks._defaults_data import DATASETS
from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


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
    write_results("defaults", command_line(__spec__), {"rows": rows})


if __name__ == "__main__":
    main()
