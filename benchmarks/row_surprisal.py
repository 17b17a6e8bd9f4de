"""The cost and noise of each row's surprisal S_K for K importance samples: what
encode.importance_samples' default rests on.

    .venv/bin/python -m benchmarks.row_surprisal [--ks 1 3 10 30 100] [--truth 1000] [--repeats 3]

Trains the default model on the embedded digits (params.yaml as shipped) in a temporary
folder, then scores every test row with RowSurprisal, as the encode stage does, for each K:
rows per second (median of the repeats, the Ks interleaved; this process, TensorFlow's
threads), each row's Monte Carlo spread (from two seeds: std of the difference / √2), the mean S_K (it falls
towards S as K grows), and how well K ranks the rows: Spearman's correlation with the
scores of K = --truth, and the share of the truth's 5% most surprising rows among K's 5%.
"""

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results

ROOT = Path(__file__).resolve().parents[1]


def trained_default():
    """The default model trained by the stages on params.yaml's data, and its test rows."""
    from pipeline import runner
    from pipeline.data.prepared import load_split
    from pipeline.model.bundle import load_vae
    from pipeline.platform.params.load import load_params

    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        runner.prepare(params, out_dir=Path(tmp) / "prepared")
        runner.train(params, prepared_dir=Path(tmp) / "prepared", model_dir=Path(tmp) / "model")
        vae = load_vae(Path(tmp) / "model" / "model.keras")
        x = load_split(Path(tmp) / "prepared", "test").inputs(slice(None))
    return vae, x


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    parser.add_argument("--truth", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from pipeline.model.diagnostics import RowSurprisal

    vae, x = trained_default()
    truth = RowSurprisal(vae, args.truth)(x)
    top = truth >= np.quantile(truth, 0.95)
    print(
        f"digits test rows: {len(x)}; default model ({vae.config.model.likelihood}, latent_dim "
        f"{vae.latent_dim})"
    )
    print(
        f"{'K':>5} {'rows/s':>9} {'row spread (nats)':>18} {'mean S_K':>9} "
        f"{'Spearman vs K=' + str(args.truth):>20} "
        f"{'top 5% found':>13}"
    )
    scorers = {k: RowSurprisal(vae, k) for k in args.ks}
    for score in scorers.values():
        score(x[:64])  # traced outside the timing
    seconds = {k: [] for k in args.ks}
    for _ in range(args.repeats):  # the Ks interleaved, so the machine's drift touches each alike
        for k, score in scorers.items():
            start = time.perf_counter()
            score(x)
            seconds[k].append(time.perf_counter() - start)
    figures = {"rows": len(x), "likelihood": vae.config.model.likelihood, "latent_dim": vae.latent_dim}
    figures["ks"] = rank_against_truth(vae, x, scorers, seconds, truth, top)
    write_results("row_surprisal", command_line(__spec__), figures)


def rank_against_truth(vae, x, scorers: dict, seconds: dict, truth, top) -> list[dict]:
    """Each K's speed, row spread, mean S_K and ranking against the truth's, printed."""
    from scipy.stats import spearmanr

    from pipeline.model.diagnostics import RowSurprisal

    ks = []
    for k, score in scorers.items():
        s = score(x)
        spread = (RowSurprisal(vae, k, seed=1)(x) - s).std() / math.sqrt(2)
        found = (top & (s >= np.quantile(s, 0.95))).sum() / top.sum()
        rho = spearmanr(s, truth).statistic
        print(
            f"{k:>5} {len(x) / statistics.median(seconds[k]):>9,.0f} {spread:>18.3f} {s.mean():>9.2f} "
            f"{rho:>20.4f} {found:>13.2f}",
            flush=True,
        )
        ks.append(
            {
                "k": k,
                "rows_per_s": len(x) / statistics.median(seconds[k]),
                "row_spread_nats": float(spread),
                "mean_S_K": float(s.mean()),
                "spearman": float(rho),
                "top_5pct_found": float(found),
            }
        )
    return ks


if __name__ == "__main__":
    main()
