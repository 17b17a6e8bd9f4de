"""Quality at a fixed budget: which knobs move U, S_100 and the probes (issue: anchors).

    .venv/bin/python -m benchmarks.quality --variant base --variant silu model.activation=silu \\
        --variant res1 model.residual_blocks=1 --json /tmp/quality.json

The budget is the issue's: Fashion-MNIST, latent 16, 10 epochs, batch 128, Bernoulli on
grey levels, the shipped defaults otherwise. Fashion-MNIST is prepared once; each
variant then trains, encodes and evaluates (latent probes, U, S_K; no baselines, no UMAP)
in this process, one after another, and the script prints one row per variant: test U,
S_100, E_100, linear probe, kNN, seconds of training and seconds per epoch. Targets: U ≤ 235,
S_100 ≤ 232, linear probe ≥ 0.835, kNN ≥ 0.86.
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from benchmarks._common import command_line, trained_epochs, write_results
from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]

BUDGET = {
    "data.source": "fashion_mnist",
    "model.latent_dim": 16,
    "train.epochs": 10,
    "train.batch_size": 128,
    "model.likelihood": "bernoulli",
}


def _evaluate_variant(params, prepared: Path, out: Path) -> dict:
    """The evaluate stage on the variant's model and latents (probes, U, S_K; no baselines)."""
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.evaluation.probes import ProbeProtocol

    cfg = params.evaluate
    return evaluate(
        prepared_dir=prepared,
        model_path=out / "model" / "model.keras",
        latents_dir=out / "latents",
        out_dir=out / "evaluation",
        protocol=ProbeProtocol.of(cfg.probe, knn_k=cfg.knn_k, seed=params.seed),
        importance_samples=cfg.importance_samples,
        surprisal_examples=cfg.surprisal_examples,
        gradient_variance=cfg.gradient_variance,
        validation_fraction=params.data.validation_fraction,
        binarize=params.data.binarize,
        seed=params.seed,
    )


def run_variant(name: str, overrides: dict, prepared: Path, out: Path) -> dict:
    """One variant trained, encoded and evaluated at the budget; returns its row."""
    from pipeline.runner import encode, train

    params = overridden_params({**BUDGET, **overrides})
    start = time.perf_counter()
    history = train(params, prepared_dir=prepared, model_dir=out / "model")
    seconds = time.perf_counter() - start
    encode(params, prepared_dir=prepared, model_path=out / "model" / "model.keras", out_dir=out / "latents")
    metrics = _evaluate_variant(params, prepared, out)
    test = metrics["subo"]["test"]
    k = str(params.evaluate.importance_samples)
    epochs = trained_epochs(out)
    return {
        "variant": name,
        "overrides": overrides,
        "test_U": test["U"],
        "test_S_100": test["S_K"][k],
        "test_E_100": test["E_K"][k],
        "probe": metrics["probe"]["accuracy"],
        "knn": metrics["knn"]["accuracy"],
        "active": metrics["active_units"]["count"],
        "train_seconds": round(seconds),
        "epochs": epochs,
        "seconds_per_epoch": round(seconds / max(epochs, 1), 1),
        "last_val_U": history.get("val_U"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "KEY=VALUE"),
        help="a name and its overrides (dotted params.yaml keys)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, force=True)
    from pipeline.runner import prepare

    root = Path(tempfile.mkdtemp(prefix="vae-quality-"))
    prepare(overridden_params(BUDGET), out_dir=root / "prepared")
    rows = []
    for name, *overrides in args.variant:
        rows.append(run_variant(name, parse_overrides(overrides), root / "prepared", root / name))
        r = rows[-1]
        print(
            f"{name:<16} U {r['test_U']:.2f}  S_100 {r['test_S_100']:.2f}  E_100 {r['test_E_100']:.2f}  "
            f"probe {r['probe']:.3f}  kNN {r['knn']:.3f}  active {r['active']}  "
            f"train {r['train_seconds']} s ({r['seconds_per_epoch']} s/epoch)",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    write_results("quality", command_line(__spec__), {"variants": rows})


if __name__ == "__main__":
    main()
