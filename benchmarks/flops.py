"""Training near the CPU's limit: the train step's FLOPs per sample (counted from its graph),
the samples/s the shipped defaults reach, and their share of this machine's matmul peak.

    .venv/bin/python -m benchmarks.flops                                # 28×28×1 and 64×64×3
    .venv/bin/python -m benchmarks.flops --set train.jit_compile=true   # a variant, interleaved

FLOPs: the model the shipped defaults resolve for the data (auto likelihood, architecture,
filters) is built and one training step (the objective, its gradient with respect to every
weight) is traced as a TensorFlow graph for a batch of the default size. Its useful FLOPs
are counted op by op from the graph's static shapes: every convolution (forward, and its
two backward ops: to the input and to the filter) and every matrix product, 2 per
multiply-add (`op_flops`). The elementwise work (the likelihood's terms, activations, the
optimizer's update) is not counted: it is what keeps a step from the peak.

Peak: the median rate of float32 (and, where the CPU has native bf16, bfloat16) products
of two 2048×2048 matrices, in one compiled function, after a warm-up.

Samples/s: the real train stage (`pipeline.runner.train`) on prepared data with
`train.epochs: 4`, the median of epochs 2–4 from its dvclive log (epoch 1 compiles):
Fashion-MNIST (the Debian package's IDX files, 10,000 examples) for 28×28×1, the photo crops
of benchmarks/photos.py for 64×64×3. Contenders (the defaults and each --set) alternate, and
the whole sequence repeats --repeats times.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks._common import command_line, write_results
from benchmarks._flops_count import matmul_peak, step_flops
from benchmarks.photos import generate
from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def samples_per_second(params, prepared: Path, out: Path) -> float:
    """The train stage's median samples/s over epochs 2.. (dvclive's per-epoch figure)."""
    from pipeline.runner import train

    train(params, prepared_dir=prepared, model_dir=out)
    rows = (
        (out / "live" / "plots" / "metrics" / "train" / "samples_per_second.tsv").read_text().split("\n")[2:]
    )
    return statistics.median(float(row.split("\t")[-1]) for row in rows if row)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help="a variant to time beside the shipped defaults (repeatable)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the train stage's timing (0: none)")
    parser.add_argument(
        "--python",
        default=str(ROOT / ".venv-peers" / "bin" / "python"),
        help="a python with scikit-image (make peers-env), for the photo crops",
    )
    parser.add_argument(
        "--data",
        choices=("28x28x1", "64x64x3"),
        action="append",
        help="only these inputs (repeatable; default: both)",
    )
    return parser.parse_args()


def machine_peaks() -> tuple[dict, dict]:
    """This CPU's matmul peaks (bfloat16 too where it is native), printed with its flags."""
    from pipeline.platform.hardware import cpu_flags, onednn_enabled
    from pipeline.training.resolve_run import NATIVE_BF16_CPU_FLAGS

    flags = cpu_flags()
    native = sorted(set(NATIVE_BF16_CPU_FLAGS) & flags)
    peaks = {"float32": matmul_peak("float32"), **({"bfloat16": matmul_peak("bfloat16")} if native else {})}
    printed = {
        "cpu_native_bf16": native,
        "amx": sorted({"amx_bf16", "amx_tile"} & flags),
        "onednn": onednn_enabled(),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
    }
    print(json.dumps(printed))
    return peaks, printed


def count_flops(data: dict, variants: list[dict], work: Path) -> dict:
    """Each input's prepared data, and each variant's step FLOPs on it: {(input, variant): figures}."""
    from pipeline.runner import prepare

    rates: dict = {}
    for name, keys in data.items():
        prepare(overridden_params(keys), out_dir=work / name / "prepared")
        for i, overrides in enumerate(variants):
            flops = step_flops(overridden_params({**keys, **overrides}), work / name / "prepared")
            print(json.dumps({"data": name, "set": overrides, **flops}), flush=True)
            rates[name, i] = {"flops": flops, "rates": []}
    return rates


def time_stages(data: dict, variants: list[dict], work: Path, repeats: int, rates: dict) -> None:
    """The train stage's samples/s of every (input, variant), interleaved, `repeats` rounds."""
    for repeat in range(repeats):
        for name, keys in data.items():
            for i, overrides in enumerate(variants):
                params = overridden_params(
                    {**keys, **overrides, "train.epochs": 4, "train.early_stopping_patience": None}
                )
                rate = samples_per_second(
                    params, work / name / "prepared", work / name / f"model-{i}-{repeat}"
                )
                rates[name, i]["rates"].append(rate)
                print(
                    json.dumps(
                        {"data": name, "set": overrides, "repeat": repeat, "samples_per_s": round(rate)}
                    ),
                    flush=True,
                )


def share_line(name: str, variant: dict, figures: dict, peak: float) -> str:
    """One (input, variant)'s line: FLOPs, the parts' times and, when timed, the share of the peak."""
    flops, parts = figures["flops"]["mflop"] * 1e6, figures["flops"]["ms_per_example"]
    line = (
        f"{name} {variant or 'defaults'}: {flops / 1e6:.1f} useful MFLOP/example; per example "
        f"networks {parts['networks']:.3f} ms ({flops / parts['networks'] / 1e6:.1f} GFLOP/s), + "
        "objective "
        f"{parts['objective_and_gradient'] - parts['networks']:.3f}, + Adam "
        f"{parts['with_adam'] - parts['objective_and_gradient']:.3f}"
    )
    if figures["rates"]:
        rate = statistics.median(figures["rates"])
        line += (
            f"; the stage: {rate:,.0f} samples/s, {1000 / rate:.3f} ms (the rest: Keras' loop, input, "
            f"metrics {1000 / rate - parts['with_adam']:.3f}) -> {flops * rate / 1e9:.1f} GFLOP/s = "
            f"{100 * flops * rate / 1e9 / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak"
        )
    return line


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="vae-flops-"))
    data = {
        "28x28x1": {"data.source": "fashion_mnist", "data.max_examples": 10_000},
        "64x64x3": {"data.source": "image_folder", "data.path": str(work / "photos")},
    }
    data = {name: keys for name, keys in data.items() if name in (args.data or data)}
    if "64x64x3" in data:
        generate(work / "photos", args.python, 400, 64)
    peaks, printed = machine_peaks()
    variants = [{}] + [parse_overrides(v.split(";")) for v in args.set]
    rates = count_flops(data, variants, work)
    time_stages(data, variants, work, args.repeats, rates)
    peak = max(peaks.values())
    results = {**printed, "runs": []}
    for (name, i), figures in rates.items():
        line = share_line(name, variants[i], figures, peak)
        print(line)
        results["runs"].append({"data": name, "set": variants[i], **figures, "summary": line})
    write_results("flops", command_line(__spec__), results)


if __name__ == "__main__":
    main()
