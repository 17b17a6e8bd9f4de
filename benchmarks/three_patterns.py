"""Is S a surprisal on pixels? Three fixed 8×8 uint8 patterns (one per class, many grey
levels), 700 examples each, with only the data keys set: a model that has learned the three
patterns should reach S ≈ ln 3 ≈ 1.1 nats per image. A Bernoulli on grey levels cannot go
below the pixels' binary entropies however well it learns; the auto likelihood (a mass on
the 256 levels: level_categorical at 8×8) can.

    .venv/bin/python -m benchmarks.three_patterns [--repeats 2] [--work DIR]

Contenders, interleaved per repeat: the shipped params with only data.source/data.path set
(auto: level_categorical), and the same with model.likelihood: bernoulli forced. Prints
test U, S_100 and E_100 in nats and bits per dimension, the epochs run and the seconds.
"""

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results
from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]


def make_patterns(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(3), 700)
    np.savez(path, x=patterns[y], y=y.astype(np.int64))


def one_run(work: Path, likelihood: str | None) -> dict:
    from pipeline import runner
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_split
    from pipeline.model.bundle import load_bundle
    from pipeline.model.diagnostics import subo_estimates

    overrides = {"data.source": "npz", "data.path": str(work / "patterns.npz")}
    if likelihood:
        overrides["model.likelihood"] = likelihood
    params = overridden_params(overrides)
    out = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    prepare(params.data, seed=params.seed, out_dir=out / "prepared")
    history = runner.train(params, prepared_dir=out / "prepared", model_dir=out / "model")
    seconds = time.perf_counter() - start
    bundle = load_bundle(out / "model" / "model.keras")
    x = load_split(out / "prepared", "test").inputs(slice(None))
    figures = subo_estimates(bundle.vae, x, 100, seed=0)
    bits = 1 / (64 * math.log(2))
    epochs = len(
        np.loadtxt(out / "model" / "live" / "plots" / "metrics" / "train" / "U.tsv", skiprows=1, ndmin=2)
    )
    return {
        "likelihood": bundle.choices["model.likelihood"]["value"],
        "U": figures["U"],
        "S_100": figures["S_K"]["100"],
        "E_100": figures["E_K"]["100"],
        "S_100_bits_per_dim": figures["S_K"]["100"] * bits,
        "epochs": epochs,
        "seconds": seconds,
        "final_train_U": history["U"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="three-patterns-"))
    work.mkdir(parents=True, exist_ok=True)
    make_patterns(work / "patterns.npz")
    rows = {None: [], "bernoulli": []}
    for _ in range(args.repeats):
        for contender in rows:  # interleaved
            rows[contender].append(one_run(work, contender))
            print(json.dumps(rows[contender][-1]), flush=True)
    medians = {}
    for contender, runs in rows.items():
        name = runs[0]["likelihood"] + (" (forced)" if contender else " (auto)")
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("U", "S_100", "E_100", "S_100_bits_per_dim", "seconds")
        }
        print(
            f"{name}: median of {len(runs)}: test U {med['U']:.2f}, S_100 {med['S_100']:.2f} nats "
            f"({med['S_100_bits_per_dim']:.3f} bits/dim), E_100 {med['E_100']:.2f}, {med['seconds']:.0f} s"
        )
        medians[name] = med
    by_contender = {contender or "auto": runs for contender, runs in rows.items()}
    write_results("three_patterns", command_line(__spec__), {"runs": by_contender, "medians": medians})


if __name__ == "__main__":
    main()
