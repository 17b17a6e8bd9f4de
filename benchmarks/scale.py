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
import time
from pathlib import Path

from benchmarks._common import command_line, cpu_flags, module_command, write_results
from benchmarks._scale_inputs import write_csv, write_npz, write_png_folder
from benchmarks._stage_child import child, measure

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "data.source": "npz",
    "model.architecture": "mlp",
    "train.epochs": 1,
    "train.batch_size": 256,
    "train.early_stopping_patience": None,
}


def run_child(stage: str, work: Path, overrides: dict, mode: str = "mmap") -> dict:
    """One stage in its own process (this script's `--child`), its memory measured from here."""
    return measure(
        [*module_command(__spec__), "--child", stage, str(work), mode, "--overrides", json.dumps(overrides)]
    )


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
            r = run_child("prepare", work, overrides)
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


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def synthetic_npz(rows: int, work: Path) -> Path:
    """The npz of `rows` synthetic images under work, written once (its size and time printed)."""
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
    return source


def train_input(rows: int, work: Path, overrides: dict, repeats: int) -> dict:
    """One epoch of train three ways (mmap, memory, the old input), interleaved and repeated."""
    figures = {mode: [] for mode in ("mmap", "memory", "old")}
    run_child("prepare", work, {**overrides, "train.input": "mmap"})
    for _ in range(repeats):
        for mode in figures:
            extra = {"train.input": mode} if mode in ("mmap", "memory") else {}
            figures[mode].append(run_child("train", work, {**overrides, **extra}, mode))
            print(
                f"{rows:,} rows, train input {mode}: {figures[mode][-1]['samples_per_s']:,.0f} samples/s, "
                f"peak anon {figures[mode][-1]['peak_anon_mib']:,} MiB",
                flush=True,
            )
    medians = {mode: statistics.median(r["samples_per_s"] for r in runs) for mode, runs in figures.items()}
    print(
        "median samples/s: "
        + ", ".join(f"{m} {v:,.0f}" for m, v in medians.items())
        + f"; mmap / memory {medians['mmap'] / medians['memory']:.3f}, "
        + f"mmap / old {medians['mmap'] / medians['old']:.3f}"
    )
    return {"rows": rows, "compare_input": figures, "medians": medians}


def every_stage(rows: int, work: Path, overrides: dict, stages: list[str]) -> dict:
    """Each stage once on `rows` rows, in order: its peak memory, time and speed."""
    row = {"rows": rows}
    for stage in stages:
        row[stage] = run_child(stage, work, {**overrides, "train.input": "mmap"})
        r = row[stage]
        speed = (
            f"{r['samples_per_s']:,.0f} samples/s" if stage == "train" else f"{r['rows_per_s']:,.0f} rows/s"
        )
        print(
            f"{rows:>11,} rows  {stage:<8} peak anon {r['peak_anon_mib']:>6,} MiB  "
            f"file {r['peak_file_mib']:>6,} MiB"
            f"  rss {r['peak_rss_mib']:>6,} MiB  {r['seconds']:>7.1f} s  {speed}",
            flush=True,
        )
    return row


def png_prepare(images: int, root: Path) -> dict:
    """prepare on a folder of `images` PNGs (written once): its time, speed and peak memory."""
    folder = root / f"images-{images}"
    if not folder.exists():
        write_png_folder(folder, images)
    overrides = {"data.source": "image_folder", "data.path": str(folder)}
    r = run_child("prepare", root / f"images-{images}-out", overrides)
    print(
        f"{images:,} PNGs: prepare {r['seconds']:.1f} s, {r['rows_per_s']:,.0f} images/s, "
        f"peak anon {r['peak_anon_mib']:,} MiB",
        flush=True,
    )
    return {"images": images, "prepare": r}


def main() -> None:
    args = parse_args()
    if args.child:
        stage, work, mode = args.child
        print(json.dumps(child(stage, Path(work), json.loads(args.overrides), mode)))
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; CPU flags: {cpu_flags()}")
    results = []
    for rows in args.rows:
        work = args.work / f"rows-{rows}"
        overrides = {**BASE, "data.path": str(synthetic_npz(rows, work))}
        if args.compare_input:
            results.append(train_input(rows, work, overrides, args.repeats))
        else:
            results.append(every_stage(rows, work, overrides, args.stages))
    if args.images:
        results.append(png_prepare(args.images, args.work))
    if args.csv:
        results.append({"csv": csv_memory(args.csv, args.work, args.repeats)})
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "results": results}, indent=2))
    write_results("scale", command_line(__spec__), results)


if __name__ == "__main__":
    main()
