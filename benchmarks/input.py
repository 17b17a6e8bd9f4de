"""The training input alone (pipeline.training.feed), against what a GPU would ask of it (issue 25).

    .venv/bin/python -m benchmarks.input [--rows 60000] [--sizes 28 64] [--batch-sizes 128 1024] [--repeats 3]

For each image size, a synthetic npz of uint8 grey images is prepared (as prepare writes
any source), then the shuffled training batches of `train.input: mmap` and `memory` are
drawn with no model, interleaved and repeated: samples/s, median of the repeats. Then
the training FLOPs per sample of the shipped defaults' model for 28×28×1 (2 FLOPs per
multiply-add, forward + backward ≈ 3 × forward, the decoder run once per z sample) and
the samples/s that implies at a given share of a GPU's rate, so that input and compute
can be set side by side.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, cpu_flags, write_results
from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]

# bf16 dense matrix rate of an H200 as measured through PyTorch on this workplace's device
# machine (8192³ products); small convolutions reach a fraction of it.
GPU_TFLOPS = 788


def prepared(work: Path, rows: int, side: int) -> Path:
    from pipeline import runner

    source = work / f"x{side}.npz"
    rng = np.random.default_rng(0)
    np.savez(source, x=rng.integers(0, 256, size=(rows, side, side), dtype=np.uint8), y=np.arange(rows) % 10)
    out = work / f"prepared{side}"
    runner.prepare(overridden_params({"data.source": "npz", "data.path": str(source)}), out_dir=out)
    return out


def samples_per_s(prepared_dir: Path, batch_size: int, mode: str, seconds: float = 2.0) -> float:
    from pipeline.data.prepared import load_split
    from pipeline.training import feed

    split = load_split(prepared_dir, "train")
    rows = np.arange(len(split.y))
    iterator = iter(feed.batches(split, rows, batch_size, seed=0, shuffle=True, in_memory=mode == "memory"))
    for _ in range(3):  # warm-up: tf.data starts its threads
        next(iterator)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += int(next(iterator).shape[0])
    return done / (time.perf_counter() - start)


def train_flops_per_sample(side: int) -> tuple[float, str]:
    """Training FLOPs per example of the shipped defaults' model for side×side×1 pixels."""
    import keras

    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import resolve_model
    from pipeline.platform.choices import AUTO

    params = overridden_params({})
    model = resolve_model(params.model, (side, side, 1), [0.0, 1.0], "pixels")[0]
    vae = build_vae((side, side, 1), model, params.loss, seed=0)

    def forward(network) -> float:
        total = 0.0
        for layer in network.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
                k = np.prod(layer.kernel.shape)  # kh · kw · c_in · c_out
                h, w = (
                    layer.output.shape[1:3]
                    if isinstance(layer, keras.layers.Conv2D)
                    else layer.input.shape[1:3]
                )
                total += 2 * k * h * w
            elif isinstance(layer, keras.layers.Dense):
                total += 2 * np.prod(layer.kernel.shape)
        return total

    mc = params.loss.mc_samples if params.loss.mc_samples != AUTO else 1
    per_sample = 3 * (forward(vae.encoder) + mc * forward(vae.decoder))
    return per_sample, (
        f"{model.architecture}, filters {model.filters}, hidden {model.hidden}, latent {model.latent_dim}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(f"{os.cpu_count()} cores; CPU flags: {cpu_flags()}")
    with tempfile.TemporaryDirectory(dir=ROOT / ".scale" if (ROOT / ".scale").is_dir() else None) as tmp:
        prepared_dirs = {side: prepared(Path(tmp), args.rows, side) for side in args.sizes}
        runs = {
            (side, b, mode): []
            for side in args.sizes
            for b in args.batch_sizes
            for mode in ("mmap", "memory")
        }
        for _ in range(args.repeats):
            for side, b, mode in runs:  # interleaved: each repeat measures every contender once
                runs[(side, b, mode)].append(samples_per_s(prepared_dirs[side], b, mode))
    print("| image | batch | input | samples/s (median) | repeats |")
    print("|---|---|---|---|---|")
    for (side, b, mode), figures in runs.items():
        print(
            f"| {side}×{side} | {b} | {mode} | {statistics.median(figures):,.0f} | "
            f"{', '.join(f'{f:,.0f}' for f in figures)} |"
        )
    flops, what = train_flops_per_sample(28)
    print(f"\ndefault model for 28×28×1 ({what}): {flops / 1e6:.2f} MFLOP per training sample")
    for share in (0.05, 0.2, 0.5):
        print(f"at {share:.0%} of {GPU_TFLOPS} TFLOP/s: {share * GPU_TFLOPS * 1e12 / flops:,.0f} samples/s")
    figures = {"runs": {f"{s}x{s} b{b} {m}": f for (s, b, m), f in runs.items()}, "train_flops": flops}
    print(json.dumps(figures))
    write_results("input", command_line(__spec__), figures)


if __name__ == "__main__":
    main()
