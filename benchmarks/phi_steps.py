"""The article's conjecture that being aggressive on φ helps: train.phi_steps 1, 3 and 5.

    .venv/bin/python -m benchmarks.phi_steps                          # 10,000 Fashion-MNIST images, 10 epochs
    .venv/bin/python -m benchmarks.phi_steps --max-examples 0 --epochs 12 --png benchmarks/phi_steps.png

With k = phi_steps > 1 every batch takes k encoder (φ) steps, then one decoder (θ) step.
Everything else is the shipped params.yaml with data.source fashion_mnist (and
data.max_examples, a seeded stratified subsample, to keep the run short). Each setting
trains from the same initialisation and data order; the per-epoch U, S_K and E_K = U − S_K
(K = train.importance_samples) on fixed validation examples come from the dvclive curves that
train writes (bound/*). Prints one table per epoch and writes a figure of the curves
against epoch and against wall time.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results

ROOT = Path(__file__).resolve().parents[1]


def curves(model_dir: Path) -> dict[str, np.ndarray]:
    bound = model_dir / "live" / "plots" / "metrics" / "bound"
    return {
        name: np.loadtxt(bound / f"{name}.tsv", delimiter="\t", skiprows=1, usecols=1, ndmin=1)
        for name in ("U", "S_K", "E_K")
    }


def epoch_timer():
    import keras

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start, self.ends = time.perf_counter(), []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter() - self.start)

    return Timer()


def print_table(results: dict, epochs: int) -> None:
    """Each epoch's test U, S_K, E_K and seconds, one column per k."""
    print(f"\n{'epoch':>5} " + " ".join(f"{'k=' + str(k) + ' U / S_K / E_K / s':>30}" for k in results))
    for e in range(epochs):
        cells = [
            f"{r['U'][e]:8.2f} {r['S_K'][e]:8.2f} {r['E_K'][e]:5.2f} {r['seconds'][e]:6.0f}"
            for r in results.values()
        ]
        print(f"{e + 1:>5} " + " ".join(f"{c:>30}" for c in cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-examples", type=int, default=10_000, help="0: all 70,000")
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="phi-steps-")))
    parser.add_argument("--png", type=Path, default=None, help="write the figure here")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    from benchmarks.run_pipeline import overridden_params
    from pipeline import runner

    study = {
        "data.source": "fashion_mnist",
        "data.max_examples": args.max_examples or None,
        "train.epochs": args.epochs,
        "train.early_stopping_patience": None,
    }
    runner.prepare(overridden_params(study), out_dir=args.work / "prepared")
    results = {}
    for k in args.steps:
        timer = epoch_timer()
        runner.train(
            overridden_params({**study, "train.phi_steps": k}),
            prepared_dir=args.work / "prepared",
            model_dir=args.work / f"phi{k}",
            callbacks=(timer,),
        )
        results[k] = {
            **{name: c.tolist() for name, c in curves(args.work / f"phi{k}").items()},
            "seconds": timer.ends,
        }
        print(json.dumps({"phi_steps": k, "final": {n: v[-1] for n, v in results[k].items()}}), flush=True)

    print_table(results, args.epochs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    write_results("phi_steps", command_line(__spec__), {str(k): curves for k, curves in results.items()})
    if args.png:
        figure(results, args.png)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, r in results.items():
        epochs = np.arange(1, len(r["U"]) + 1)
        axes[0].plot(epochs, r["S_K"], marker="o", ms=3, label=f"phi_steps {k}")
        axes[1].plot(epochs, r["E_K"], marker="o", ms=3, label=f"phi_steps {k}")
        axes[2].plot(r["seconds"], r["S_K"], marker="o", ms=3, label=f"phi_steps {k}")
    axes[0].set(xlabel="epoch", ylabel="S_K (nats)", title="importance-weighted S_K, validation")
    axes[1].set(xlabel="epoch", ylabel="E_K = U − S_K (nats)", title="the gap")
    axes[2].set(xlabel="wall seconds", ylabel="S_K (nats)", title="S_K against time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
