"""The surprisal, honestly, on Fashion-MNIST's 8-bit pixels: bits per dimension of U and
S_100 with the shipped likelihood, and the richer proxy and prior against the Gaussian
proxy and standard prior at the same budget.

    .venv/bin/python -m benchmarks.surprisal [--seeds 0 1 2] [--contenders gaussian flow vamp]
        [--max-examples N]

Budget (the anchors'): conv, latent 16, heads on the conv features, 10 epochs, batch 128,
every other key as shipped (model.likelihood auto). Fashion-MNIST is prepared once;
contenders run interleaved, one round per seed (the training seed: initialisation, batch
order, sampling; the split stays seed 0's), each trained, encoded and evaluated in-process
(latent probes, U / S_K / E_K on 1,000 validation and 1,000 test examples). Prints one
JSON line per run and medians per contender: test U, S_100, E_100 in nats and bits per
dimension, seconds per epoch, linear and kNN probe accuracy.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import command_line, trained_epochs, write_results
from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]

BUDGET = {
    "data.source": "fashion_mnist",
    "model.architecture": "conv",
    "model.latent_dim": 16,
    "model.hidden": [],
    "train.epochs": 10,
    "train.batch_size": 128,
}
CONTENDERS = {
    "gaussian": {},
    "flow": {"model.posterior": "flow"},
    "vamp": {"model.prior": "vamp"},
    "flow+vamp": {"model.posterior": "flow", "model.prior": "vamp"},
    "bernoulli": {"model.likelihood": "bernoulli"},  # not a mass on 256 levels: for reference only
}


def _overrides(name: str, max_examples: int | None, seed: int) -> dict:
    """The params keys one run sets: the budget, the contender's keys, the seed and the
    subsample when asked."""
    return {
        **BUDGET,
        **CONTENDERS[name],
        "seed": seed,
        **({"data.max_examples": max_examples} if max_examples else {}),
    }


def one_run(name: str, prepared: Path, work: Path, max_examples: int | None, seed: int) -> dict:
    """One contender trained on `seed`, encoded and evaluated at the budget; returns its row."""
    from pipeline.evaluation import evaluate
    from pipeline.runner import encode, train

    params = overridden_params(_overrides(name, max_examples, seed))
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{name}-"))
    start = time.perf_counter()
    train(params, prepared_dir=prepared, model_dir=out / "model")
    train_seconds = time.perf_counter() - start
    model = out / "model" / "model.keras"
    encode(params, prepared_dir=prepared, model_path=model, out_dir=out / "latents")
    metrics = evaluate.from_params(
        params,
        prepared_dir=prepared,
        model_path=model,
        latents_dir=out / "latents",
        out_dir=out / "evaluation",
    )
    test = metrics["subo"]["test"]
    epochs = trained_epochs(out)
    return {
        "contender": name,
        "seed": seed,
        "likelihood": metrics["likelihood"]["family"],
        "U": test["U"],
        "D": test["D"],
        "S_100": test["S_K"]["100"],
        "E_100": test["E_K"]["100"],
        "bits_U": test["bits_per_dim"]["U"],
        "bits_S_100": test["bits_per_dim"]["S_K"]["100"],
        "D_estimate": test["D_estimate"],
        "seconds_per_epoch": train_seconds / epochs,
        "epochs": epochs,
        "linear": metrics["probe"]["accuracy"],
        "knn": metrics["knn"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one interleaved round per training seed"
    )
    parser.add_argument(
        "--contenders", nargs="+", default=["gaussian", "flow", "vamp"], choices=list(CONTENDERS)
    )
    parser.add_argument(
        "--max-examples", type=int, default=None, help="a stratified subsample, for a quick look"
    )
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from pipeline.runner import prepare

    work = args.work or Path(tempfile.mkdtemp(prefix="surprisal-"))
    work.mkdir(parents=True, exist_ok=True)
    base = {**BUDGET, **({"data.max_examples": args.max_examples} if args.max_examples else {})}
    prepare(overridden_params(base), out_dir=work / "prepared")
    rows = {name: [] for name in args.contenders}
    for seed in args.seeds:
        for name in args.contenders:  # interleaved
            rows[name].append(one_run(name, work / "prepared", work, args.max_examples, seed))
            print(json.dumps(rows[name][-1]), flush=True)
    medians = {}
    for name, runs in rows.items():
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("U", "S_100", "E_100", "bits_U", "bits_S_100", "seconds_per_epoch")
        }
        print(
            f"{name} ({runs[0]['likelihood']}): median of {len(runs)}: test U {med['U']:.2f} "
            f"({med['bits_U']:.3f} bits/dim), S_100 {med['S_100']:.2f} ({med['bits_S_100']:.3f}), "
            f"E_100 {med['E_100']:.2f}; {med['seconds_per_epoch']:.1f} s/epoch; "
            f"probes {runs[0]['linear']} / {runs[0]['knn']}"
        )
        medians[name] = {**med, "linear": runs[0]["linear"], "knn": runs[0]["knn"]}
    write_results("surprisal", command_line(__spec__), {"runs": rows, "medians": medians})


if __name__ == "__main__":
    main()
