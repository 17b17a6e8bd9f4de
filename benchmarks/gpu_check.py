"""The measurements of benchmarks/gpu_check.sh, each step in its own process (a GPU's set-up
is per process): Fashion-MNIST with the shipped defaults for 3 epochs (samples/s, the
precision `auto` chose, peak GPU memory), one epoch under MirroredStrategy over two
logical GPUs carved from the first GPU, and encode of every row.

    .venv/bin/python -m benchmarks.gpu_check --out /tmp/gpu_check.json

Where Debian's dataset-fashion-mnist is not installed, a synthetic 60,000-row 28×28 npz
(benchmarks/scale.py) stands in, and the results say so.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._common import command_line, module_command, write_results
from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]

LOGICAL_GPU_MIB = 8192  # each of the two logical GPUs carved for the MirroredStrategy step


def child(step: str, work: Path, overrides: dict) -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if step == "mirrored" and gpus:
        tf.config.set_logical_device_configuration(
            gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=LOGICAL_GPU_MIB)] * 2
        )
    from benchmarks._stage_child import epoch_timer
    from pipeline import runner

    params = overridden_params(overrides)
    start = time.perf_counter()
    if step == "prepare":
        manifest = runner.prepare(params, out_dir=work / "prepared")
        return {"rows": sum(manifest.counts.values()), "seconds": time.perf_counter() - start}
    if step == "encode":
        rows = runner.encode(
            params,
            prepared_dir=work / "prepared",
            model_path=work / "model" / "model.keras",
            out_dir=work / "latents",
        )
        return {"rows": rows, "rows_per_s": rows / (time.perf_counter() - start)}
    timer = epoch_timer(params.train.batch_size)
    model_dir = work / ("model" if step == "train" else "mirrored")
    history = runner.train(params, prepared_dir=work / "prepared", model_dir=model_dir, callbacks=(timer,))
    choices = json.loads((model_dir / "choices.json").read_text())
    logical = tf.config.list_logical_devices("GPU")
    peak = tf.config.experimental.get_memory_info(logical[0].name)["peak"] if logical else 0
    return {
        "samples_per_s_by_epoch": timer.rates,
        "samples_per_s_median": statistics.median(timer.rates),
        "precision": choices["train.precision"],
        "steps_per_execution": choices["train.steps_per_execution"],
        "peak_gpu_mib": peak / 2**20,
        "logical_gpus": len(logical),
        "U": history["U"],
        "seconds": time.perf_counter() - start,
    }


def run_child(step: str, work: Path, overrides: dict) -> dict:
    out = subprocess.run(
        [*module_command(__spec__), "--child", step, str(work), json.dumps(overrides)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        return {
            "failed": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}",
            "stderr_tail": out.stderr[-2000:],
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare_data(work: Path, results: dict) -> dict:
    """Prepare Fashion-MNIST, or a synthetic stand-in of its size where it is not installed:
    the data keys the later steps use (the prepare step's figures go into `results`)."""
    data = {"data.source": "fashion_mnist"}
    results["prepare"] = run_child("prepare", work, data)
    if "failed" in results["prepare"]:
        from benchmarks._scale_inputs import write_npz

        write_npz(work / "synthetic.npz", 60_000)
        data = {"data.source": "npz", "data.path": str(work / "synthetic.npz")}
        results["data"] = (
            f"synthetic 60,000 × 28×28 (Fashion-MNIST not found: {results['prepare']['failed']})"
        )
        results["prepare"] = run_child("prepare", work, data)
    else:
        results["data"] = "Fashion-MNIST"
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, work, overrides = args.child
        print(json.dumps(child(step, Path(work), json.loads(overrides))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_data(work, results)
        steps = {
            "train": {**data, "train.epochs": args.epochs},
            "mirrored": {**data, "train.epochs": 1, "train.distribution": "mirrored"},
            "encode": data,
        }
        for step, overrides in steps.items():
            results[step] = run_child(step, work, overrides)
            print(
                step, json.dumps({k: v for k, v in results[step].items() if k != "stderr_tail"}), flush=True
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    write_results("gpu_check", command_line(__spec__), results)


if __name__ == "__main__":
    main()
