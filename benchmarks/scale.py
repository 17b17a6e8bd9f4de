"""Memory and speed of every stage as the data grows (issues: data of any size; nothing lost, proven).

    .venv/bin/python -m benchmarks.scale --rows 100000 1000000 10000000 --json /tmp/scale.json
    .venv/bin/python -m benchmarks.scale --rows 1000000 --compare-input      # mmap vs memory vs the old path
    .venv/bin/python -m benchmarks.scale --images 100000                      # prepare on a folder of PNGs
    .venv/bin/python -m benchmarks.scale --csv 2000000 6000000 --repeats 2    # prepare on messy CSVs

For each size it writes a synthetic npz of N 28×28 uint8 images (stored uncompressed, so
prepare memory-maps it), then runs prepare, one epoch of train (MLP, batch 256), encode,
baselines, evaluate, umap and report (the shipped evaluate.* caps), each in its own process. The parent
samples the child's /proc/<pid>/status every
50 ms and prints the peak of anonymous memory (RssAnon: what the process itself
allocated) and of file-backed memory (RssFile: pages of memory-mapped files, which the
kernel can drop and re-read), with rows/s and training samples/s.

--csv writes a CSV of N rows with a messy table's traits (a unique id, a timestamp, strings,
numbers, empty cells; about 190 bytes a row, so 2M rows is about 380 MB) and measures
prepare alone on it, the sizes interleaved and repeated: its peak RssAnon should not grow
with the rows (the CSV is streamed, the codes go to memory-mapped scratch files).

--compare-input trains the same epoch three ways, interleaved and repeated: batches read
from the memory-mapped file (train.input: mmap), from an in-memory copy of the uint8 rows
(train.input: memory), and the input pipeline before streaming ("old": the fit rows
scaled to float32 in memory and fed by from_tensor_slices and a full shuffle buffer).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np

from benchmarks._common import cpu_flags, module_command
from benchmarks.run_pipeline import overridden_params

ROOT = Path(__file__).resolve().parents[1]

SIDE, CLASSES = 28, 10
BASE = {
    "data.source": "npz",
    "model.architecture": "mlp",
    "train.epochs": 1,
    "train.batch_size": 256,
    "train.early_stopping_patience": None,
}


def write_npz(path: Path, rows: int, seed: int = 0, chunk: int = 100_000) -> None:
    """An uncompressed npz of x (rows, 28, 28) uint8 and y (rows,) int64, written chunk by chunk.

    Each class is a smooth random prototype; an example is its prototype plus noise.
    """
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, SIDE)
    prototypes = (
        np.stack(
            [
                np.clip(
                    sum(
                        np.outer(np.sin(2 * np.pi * (a * grid + b)), np.cos(2 * np.pi * (c * grid + d)))
                        for a, b, c, d in rng.uniform(0, 2, size=(3, 4))
                    ),
                    -1,
                    1,
                )
                for _ in range(CLASSES)
            ]
        )
        * 100
        + 128
    )
    labels = np.arange(rows) % CLASSES
    rng.shuffle(labels)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": (rows, SIDE, SIDE)}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, rows, chunk):
                y = labels[start : start + chunk]
                noise = rng.normal(0, 30, size=(len(y), SIDE, SIDE))
                f.write(np.clip(prototypes[y] + noise, 0, 255).astype(np.uint8).tobytes())
        with archive.open("y.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, labels)


def write_csv(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    """A messy table of `rows` rows, written chunk by chunk (pyarrow's CSV writer)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        z = rng.normal(size=n)
        stamp = np.datetime64("2017-01-01T00:00:00") + rng.integers(0, 365 * 86_400, n).astype(
            "timedelta64[s]"
        )
        gender = rng.choice(["Male", "Female", "Unknown", ""], n, p=[0.6, 0.3, 0.05, 0.05])
        batch = pa.table(
            {
                "idNum": [f"17-{i:09d}" for i in range(start, start + n)],
                "date": pa.array(stamp, pa.timestamp("s")),
                "problem": np.where(z > 0, "suspicious", "traffic"),
                "gender": pa.array(gender).cast(pa.string()),
                "race": rng.choice(
                    ["White", "Black", "Unknown", "East African", "Latino", "Asian", "Other"], n
                ),
                "neighborhood": [f"Neighborhood number {k}" for k in rng.integers(0, 87, n)],
                "lat": 44.95 + 0.02 * z + rng.normal(0, 0.01, n),
                "long": -93.27 + rng.normal(0, 0.02, n),
                "precinct": rng.integers(1, 6, n),
                "searches": rng.poisson(0.4, n),
                "speed": np.round(50 + 10 * z + rng.normal(0, 3, n), 2),
            }
        )
        if writer is None:
            writer = pacsv.CSVWriter(str(path), batch.schema)
        writer.write_table(batch)
    writer.close()


def write_png_folder(folder: Path, images: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        pixels = rng.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"class{i % CLASSES}" / f"{i}.png")


def measure(command: list[str]) -> dict:
    """Run a child; its last stdout line is JSON. Adds peak RssAnon / RssFile / VmRSS in MiB."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            for line in status.read_text().splitlines():
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]) // 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    out = child.stdout.read().strip().splitlines()
    if child.returncode != 0 or not out:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return {
        **json.loads(out[-1]),
        "peak_anon_mib": peak["RssAnon"],
        "peak_file_mib": peak["RssFile"],
        "peak_rss_mib": peak["VmRSS"],
    }


def child(stage: str, work: Path, overrides: dict, mode: str) -> dict:
    """One stage in this process; returns its figures."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    params = overridden_params(overrides)
    from pipeline import runner

    start = time.perf_counter()
    if stage == "train":
        if mode == "old":
            _use_the_old_input()
        timer = _epoch_timer(params.train.batch_size)
        runner.train(params, prepared_dir=work / "prepared", model_dir=work / "model", callbacks=(timer,))
        return {"seconds": time.perf_counter() - start, "samples_per_s": timer.rate}
    _run_stage(stage, params, work)
    seconds = time.perf_counter() - start
    rows = sum(json.loads((work / "prepared" / "manifest.json").read_text())["counts"].values())
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def _run_stage(stage: str, params, work: Path) -> None:
    """The stage's recipe (its module's `run`, as stages/*.py call it) on the paths under work;
    only that stage's module is imported, so the memory figures are the stage's own."""
    import importlib

    prepared, model, latents, evaluation = (
        work / "prepared",
        work / "model/model.keras",
        work / "latents",
        work / "evaluation",
    )
    module = importlib.import_module(
        {
            "prepare": "pipeline.data.prepare",
            "encode": "pipeline.latents.encode",
            "baselines": "pipeline.evaluation.baselines",
            "umap": "pipeline.evaluation.umap_view",
            "evaluate": "pipeline.evaluation.evaluate",
            "report": "pipeline.evaluation.report",
        }[stage]
    )
    if stage == "prepare":
        module.from_params(params, out_dir=prepared)
    elif stage == "encode":
        module.from_params(params, prepared_dir=prepared, model_path=model, out_dir=latents)
    elif stage == "baselines":
        module.from_params(params, prepared_dir=prepared, out_dir=evaluation)
    elif stage == "evaluate":
        module.from_params(
            params, prepared_dir=prepared, model_path=model, latents_dir=latents, out_dir=evaluation
        )
    elif stage == "umap":
        module.from_params(params, prepared_dir=prepared, latents_dir=latents, out_dir=evaluation)
    else:
        module.write_report(evaluation)


def _epoch_timer(batch_size: int):
    import keras

    class Timer(keras.callbacks.Callback):
        """Samples per second of the training steps alone: epoch start to the validation pass.
        rate: the last epoch's; rates: every epoch's."""

        def on_train_begin(self, logs=None):
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.rate = self.params["steps"] * batch_size / (time.perf_counter() - self.start)
            self.rates.append(self.rate)

    return Timer()


def _use_the_old_input() -> None:
    """The input before streaming: the rows scaled to float32 in memory, from_tensor_slices,
    a full shuffle."""
    import tensorflow as tf

    import pipeline.training.feed

    def batches(split, rows, batch_size, *, seed, shuffle=False, in_memory=False, binarize="none"):
        ds = tf.data.Dataset.from_tensor_slices(split.inputs(np.asarray(rows)))
        if shuffle:
            ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    pipeline.training.feed.batches = batches


def csv_memory(sizes: list[int], root: Path, repeats: int) -> dict:
    """prepare on a messy CSV of each size, interleaved and repeated: peak memory and time."""
    figures = {rows: [] for rows in sizes}
    for rows in sizes:
        source = root / f"csv-{rows}" / "data.csv"
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            write_csv(source, rows)
        print(f"{rows:,} rows: {source} is {source.stat().st_size / 2**20:,.0f} MiB", flush=True)
    for _ in range(repeats):
        for rows in sizes:
            work = root / f"csv-{rows}"
            overrides = {
                "data.source": "table",
                "data.path": str(work / "data.csv"),
                "data.table.label_column": "problem",
            }
            r = measure(
                [
                    *module_command(__spec__),
                    "--child",
                    "prepare",
                    str(work),
                    "mmap",
                    "--overrides",
                    json.dumps(overrides),
                ]
            )
            figures[rows].append(r)
            print(
                f"{rows:>11,} CSV rows  prepare peak anon {r['peak_anon_mib']:>6,} MiB  "
                f"file {r['peak_file_mib']:>6,} MiB  {r['seconds']:>7.1f} s  {r['rows_per_s']:,.0f} rows/s",
                flush=True,
            )
    medians = {rows: statistics.median(r["peak_anon_mib"] for r in runs) for rows, runs in figures.items()}
    print(
        "median peak anon MiB: "
        + ", ".join(f"{rows:,} rows {m:,.0f}" for rows, m in medians.items())
        + f"; largest / smallest {max(medians.values()) / min(medians.values()):.3f}",
        flush=True,
    )
    return {"runs": figures, "median_peak_anon_mib": medians}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="*", default=[])
    parser.add_argument("--images", type=int, default=0, help="also prepare a folder of this many PNGs")
    parser.add_argument(
        "--csv", type=int, nargs="*", default=[], help="prepare on messy CSVs of these many rows"
    )
    parser.add_argument("--compare-input", action="store_true", help="mmap vs memory vs old input, at --rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["prepare", "train", "encode", "baselines", "evaluate", "umap", "report"],
        help="the stages to run (later ones reuse the outputs already under --work)",
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / ".scale", help="data goes here (not /tmp: memory)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "WORK", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, work, mode = args.child
        print(json.dumps(child(stage, Path(work), json.loads(args.overrides), mode)))
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; CPU flags: {cpu_flags()}")
    results = []
    for rows in args.rows:
        work = args.work / f"rows-{rows}"
        work.mkdir(parents=True, exist_ok=True)
        source = work / "data.npz"
        if not source.exists():
            started = time.perf_counter()
            write_npz(source, rows)
            print(
                f"{rows:,} rows: wrote {source} ({source.stat().st_size / 2**30:.2f} GiB) "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        overrides = {**BASE, "data.path": str(source)}

        def run(stage, mode="mmap", overrides=overrides, work=work):
            extra = {"train.input": mode} if mode in ("mmap", "memory") else {}
            return measure(
                [
                    *module_command(__spec__),
                    "--child",
                    stage,
                    str(work),
                    mode,
                    "--overrides",
                    json.dumps({**overrides, **extra}),
                ]
            )

        if args.compare_input:
            figures = {mode: [] for mode in ("mmap", "memory", "old")}
            run("prepare")
            for _ in range(args.repeats):
                for mode in figures:
                    figures[mode].append(run("train", mode))
                    print(
                        f"{rows:,} rows, train input {mode}: {figures[mode][-1]['samples_per_s']:,.0f} "
                        "samples/s, "
                        f"peak anon {figures[mode][-1]['peak_anon_mib']:,} MiB",
                        flush=True,
                    )
            medians = {
                mode: statistics.median(r["samples_per_s"] for r in runs) for mode, runs in figures.items()
            }
            print(
                "median samples/s: "
                + ", ".join(f"{m} {v:,.0f}" for m, v in medians.items())
                + f"; mmap / memory {medians['mmap'] / medians['memory']:.3f}, "
                + f"mmap / old {medians['mmap'] / medians['old']:.3f}"
            )
            results.append({"rows": rows, "compare_input": figures, "medians": medians})
            continue
        row = {"rows": rows}
        for stage in args.stages:
            row[stage] = run(stage)
            r = row[stage]
            speed = (
                f"{r['samples_per_s']:,.0f} samples/s"
                if stage == "train"
                else f"{r['rows_per_s']:,.0f} rows/s"
            )
            print(
                f"{rows:>11,} rows  {stage:<8} peak anon {r['peak_anon_mib']:>6,} MiB  "
                f"file {r['peak_file_mib']:>6,} MiB"
                f"  rss {r['peak_rss_mib']:>6,} MiB  {r['seconds']:>7.1f} s  {speed}",
                flush=True,
            )
        results.append(row)
    if args.images:
        folder = args.work / f"images-{args.images}"
        if not folder.exists():
            write_png_folder(folder, args.images)
        work = args.work / f"images-{args.images}-out"
        r = measure(
            [
                *module_command(__spec__),
                "--child",
                "prepare",
                str(work),
                "mmap",
                "--overrides",
                json.dumps({"data.source": "image_folder", "data.path": str(folder)}),
            ]
        )
        print(
            f"{args.images:,} PNGs: prepare {r['seconds']:.1f} s, {r['rows_per_s']:,.0f} images/s, "
            f"peak anon {r['peak_anon_mib']:,} MiB",
            flush=True,
        )
        results.append({"images": args.images, "prepare": r})
    if args.csv:
        results.append({"csv": csv_memory(args.csv, args.work, args.repeats)})
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
