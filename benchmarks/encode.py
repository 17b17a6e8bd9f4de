"""Encode throughput and peak memory for 10k, 100k and 1M synthetic rows.

    .venv/bin/python -m benchmarks.encode [--rows 10000 100000 1000000] [--batch-size 1024] \
        [--importance-samples 1 10 100]

Each size runs in a fresh process: synthetic digits-shaped pixels (8x8x1 uint8 levels) are
written to a memory-mapped .npy, then streamed through the default encoder (params.yaml's
model block, untrained weights: the cost does not depend on their values) into the latent
Parquet writer with each row's scores (S_K, its quantile, novelty: the WebP code length, the
decoder's mean, the distance to training z_means), exactly as the encode stage does, for each K
given. Prints rows/s and the process's peak resident memory above its level just before
encoding (TensorFlow and the model loaded).
"""

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._common import command_line, module_command, write_results

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic_pixels(path: Path, rows: int):
    """`rows` random digits-shaped images (8x8x1 uint8 levels) written to the .npy at `path`,
    read back memory-mapped."""
    import numpy as np

    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 8, 8, 1))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 100_000):  # written in chunks: the inputs never sit in memory
        x[start : start + 100_000] = rng.integers(0, 256, x[start : start + 100_000].shape)
    x.flush()
    return np.load(path, mmap_mode="r")


def _untrained_vae(params):
    """The model `auto` builds for digits-shaped pixels in [0, 1], with untrained weights."""
    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import resolve_model

    model, _ = resolve_model(params.model, [8, 8, 1], [0.0, 1.0])
    return build_vae((8, 8, 1), model, params.loss, seed=0)


def one_run(rows: int, batch_size: int, importance_samples: int) -> dict:
    import numpy as np

    from pipeline.latents.scores import Scorer, reference_of
    from pipeline.latents.writer import encoded_batches, write_latents
    from pipeline.model.diagnostics import RowSurprisal
    from pipeline.platform.params.load import load_params

    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        x = _synthetic_pixels(Path(tmp) / "x.npy", rows)
        vae = _untrained_vae(params)
        y, ids = np.zeros(rows, np.int32), np.arange(rows, dtype=np.int64)

        def preprocess(stored):
            return np.asarray(stored, np.float32) / 255

        vae.encoder.predict_on_batch(preprocess(x[:batch_size]))  # compile outside the timing
        surprisal = RowSurprisal(vae, importance_samples)
        # each row's scores as the stage writes them: S_K, its quantile and novelty's three parts
        scorer = Scorer(vae, surprisal, 64, reference_of(vae, surprisal, x[:2048], preprocess, pixels=True))
        before = peak_rss_mib()
        start = time.perf_counter()
        batches = encoded_batches(vae.predict_posterior, scorer, "train", x, y, ids, batch_size, preprocess)
        written = write_latents(Path(tmp) / "latents", batches, vae.latent_dim, {})
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (Path(tmp) / "latents").rglob("*.parquet"))
    return {
        "rows": written,
        "seconds": round(seconds, 2),
        "rows_per_second": round(written / seconds),
        "peak_rss_mib": round(peak_rss_mib()),
        "peak_growth_mib": round(peak_rss_mib() - before),
        "parquet_mib": round(size / 2**20, 1),
    }


def one_child(rows: int, batch_size: int, k: int) -> dict:
    """One size's run in its own process (its own peak memory)."""
    out = subprocess.run(
        [
            *module_command(__spec__),
            "--one",
            str(rows),
            "--batch-size",
            str(batch_size),
            "--importance-samples",
            str(k),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--importance-samples", type=int, nargs="+", default=[10])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.batch_size, args.importance_samples[0])))
        return
    print(
        f"{'K':>4} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13} {'growth MiB':>11} "
        f"{'parquet MiB':>12}"
    )
    runs = []
    for k in args.importance_samples:
        for rows in args.rows:
            r = one_child(rows, args.batch_size, k)
            print(
                f"{k:>4} {r['rows']:>10,} {r['seconds']:>8} {r['rows_per_second']:>10,} "
                f"{r['peak_rss_mib']:>13} "
                f"{r['peak_growth_mib']:>11} {r['parquet_mib']:>12}",
                flush=True,
            )
            runs.append({"importance_samples": k, **r})
    write_results("encode", command_line(__spec__), {"runs": runs})


if __name__ == "__main__":
    main()
