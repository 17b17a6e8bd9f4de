"""The Ray engine against the local one on this machine (issue: beyond one machine on Ray).

    .venv/bin/python -m benchmarks.ray_engine --rows 1000000 10000000 --repeats 2
    .venv/bin/python -m benchmarks.ray_engine --images 100000 --repeats 2

--rows: for each size, a synthetic npz of N 28×28 uint8 images (benchmarks/scale.py's) is
prepared and a model trained for one epoch (MLP, batch 256), once, locally; then encode
runs with three engines, interleaved and repeated, each stage in its own process:
  local      the one-process loop (cluster.engine: local)
  ray-1      Ray started by the stage on this machine (one node, every core)
  ray-2      two simulated nodes of one CPU each (ray.cluster_utils.Cluster, started here)
It prints rows/s, the stage's seconds, its start-up cost (the same stage on 10,000 rows),
the peak anonymous memory of the stage's process and of each encode actor.

--images: prepare of a folder of N PNGs, local (a process per core) against ray-1.

    .venv/bin/python -m benchmarks.ray_engine --same-latents fashion_mnist

--same-latents SOURCE: prepare SOURCE with both engines (the prepared files must be equal
byte for byte), train one epoch on two Ray Train workers (ray-2), encode that model with
both engines, and print the largest z_mean difference (ids must be equal, in order).
"""

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

from benchmarks._common import command_line, cpu_flags, module_command, write_results
from benchmarks._scale_inputs import write_npz, write_png_folder
from benchmarks._stage_child import child, measure
from benchmarks.scale import BASE

ROOT = Path(__file__).resolve().parents[1]

ENGINES = ("local", "ray-1", "ray-2")
SMALL = 10_000  # rows whose encode time is the engine's fixed cost


class ActorMemory:
    """Peak RssAnon (MiB) of every Ray worker process running encode, sampled every 100 ms."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.running:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if not (proc / "cmdline").read_bytes().startswith(b"ray::_Actor"):
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("RssAnon:"):
                            pid = int(proc.name)
                            self.peaks[pid] = max(self.peaks.get(pid, 0), int(line.split()[1]) // 1024)
                except (OSError, ValueError):
                    pass
            time.sleep(0.1)

    def stop(self) -> list[int]:
        self.running = False
        self.thread.join()
        return sorted(self.peaks.values())


def run_encode(work: Path, overrides: dict, engine: str, address: str | None) -> dict:
    cluster = (
        {"cluster.engine": "local"}
        if engine == "local"
        else {"cluster.engine": "ray", "cluster.address": address or "auto"}
    )
    actors = ActorMemory()
    figures = measure(
        [
            *module_command(__spec__),
            "--child",
            "encode",
            str(work),
            "--overrides",
            json.dumps({**overrides, **cluster}),
        ]
    )
    return {**figures, "actor_peak_anon_mib": actors.stop()}


def prepared_work(args, rows: int) -> tuple[Path, dict]:
    """work/rows-N with prepared data and a model (made once), and its overrides."""
    work = args.work / f"rows-{rows}"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "data.npz"
    if not source.exists():
        write_npz(source, rows)
    overrides = {**BASE, "data.path": str(source)}
    for stage, output in (
        ("prepare", work / "prepared" / "manifest.json"),
        ("train", work / "model" / "model.keras"),
    ):
        if not output.exists():
            measure(
                [*module_command(__spec__), "--child", stage, str(work), "--overrides", json.dumps(overrides)]
            )
    return work, overrides


def _prepare_both(source: str, work: Path, local, remote) -> None:
    """prepare SOURCE with each engine, timed, and print the prepared files that differ."""
    import filecmp

    from pipeline.data import prepare

    for name, params in (("local", local), ("ray", remote)):
        started = time.perf_counter()
        prepare.from_params(params, out_dir=work / f"prepared-{name}")
        print(f"{source}: prepare {name} {time.perf_counter() - started:.1f} s", flush=True)
    compared = filecmp.dircmp(work / "prepared-local", work / "prepared-ray")
    different = compared.diff_files + [
        f"{d}/{f}" for d, sub in compared.subdirs.items() for f in sub.diff_files
    ]
    print(f"{source}: prepared files that differ between the engines: {different or 'none'}", flush=True)


def _encode_both(source: str, work: Path, local, remote) -> None:
    """encode the Ray-trained model on Ray's prepared data with each engine, timed."""
    from pipeline.latents import encode

    for name, params in (("local", local), ("ray", remote)):
        started = time.perf_counter()
        encode.from_params(
            params,
            prepared_dir=work / "prepared-ray",
            model_path=work / "model" / "model.keras",
            out_dir=work / f"latents-{name}",
        )
        print(f"{source}: encode {name} {time.perf_counter() - started:.1f} s", flush=True)


def _compare_latents(source: str, work: Path) -> None:
    """Per split, whether both engines wrote the same ids in the same order, and the largest
    |z_mean difference| between them, printed."""
    import numpy as np

    from pipeline.latents.reader import latents_to_numpy, load_latents

    for split in ("train", "test"):
        a, b = (
            load_latents(work / "latents-local", split=split),
            load_latents(work / "latents-ray", split=split),
        )
        same_ids = a.column("id").to_pylist() == b.column("id").to_pylist()
        gap = float(np.abs(latents_to_numpy(a) - latents_to_numpy(b)).max())
        print(
            f"{source}: {split} {a.num_rows:,} rows, same ids in the same order: {same_ids}, "
            f"largest |z_mean difference| {gap:.2e}",
            flush=True,
        )


def same_latents(source: str, work: Path, address: str) -> None:
    """SOURCE prepared with both engines, a model trained on two Ray Train workers and encoded
    with both engines: the prepared files and the latents compared, printed."""
    from benchmarks.run_pipeline import overridden_params
    from pipeline.training import train

    ray = {"cluster.engine": "ray", "cluster.address": address}
    local = overridden_params({"data.source": source})
    remote = overridden_params({"data.source": source, "train.epochs": 1, "train.workers": 2, **ray})
    _prepare_both(source, work, local, remote)
    started = time.perf_counter()
    train.from_params(remote, prepared_dir=work / "prepared-ray", model_dir=work / "model")
    print(f"{source}: one epoch on two Ray Train workers: {time.perf_counter() - started:.1f} s", flush=True)
    _encode_both(source, work, local, remote)
    _compare_latents(source, work)


def encode_engines(args, rows: int, small: Path, small_overrides: dict, addresses: dict) -> dict:
    """encode on `rows` rows under each engine, interleaved and repeated; each engine's start-up
    is its encode time on SMALL rows."""
    work, overrides = prepared_work(args, rows)
    figures = {engine: [] for engine in ENGINES}
    startup = {engine: [] for engine in ENGINES}
    for _ in range(args.repeats):
        for engine in ENGINES:
            startup[engine].append(run_encode(small, small_overrides, engine, addresses[engine])["seconds"])
            r = run_encode(work, overrides, engine, addresses[engine])
            figures[engine].append(r)
            print(
                f"{rows:>11,} rows  {engine:<6} {r['rows_per_s']:>9,.0f} rows/s  "
                f"{r['seconds']:>6.1f} s  "
                f"start-up {startup[engine][-1]:.1f} s  stage peak anon {r['peak_anon_mib']:,} MiB  "
                f"actors {r['actor_peak_anon_mib']} MiB",
                flush=True,
            )
    local, medians = statistics.median(r["rows_per_s"] for r in figures["local"]), {}
    for engine in ENGINES:
        rate = medians[engine] = statistics.median(r["rows_per_s"] for r in figures[engine])
        print(
            f"{rows:>11,} rows  {engine:<6} median {rate:,.0f} rows/s ({rate / local:.2f}× local), "
            f"median start-up {statistics.median(startup[engine]):.1f} s",
            flush=True,
        )
    return {"rows": rows, "runs": figures, "startup_seconds": startup, "median_rows_per_s": medians}


def prepare_engines(args) -> dict:
    """prepare on a folder of PNGs, locally and on one Ray node, interleaved and repeated."""
    folder = args.work / f"images-{args.images}"
    if not folder.exists():
        write_png_folder(folder, args.images)
    rates = {"local": [], "ray-1": []}
    for _ in range(args.repeats):
        for engine in rates:
            cluster = {"cluster.engine": "local" if engine == "local" else "ray"}
            r = measure(
                [
                    *module_command(__spec__),
                    "--child",
                    "prepare",
                    str(args.work / f"images-{engine}"),
                    "--overrides",
                    json.dumps({"data.source": "image_folder", "data.path": str(folder), **cluster}),
                ]
            )
            rates[engine].append(r["rows_per_s"])
            print(
                f"{args.images:,} PNGs  prepare {engine:<6} {r['rows_per_s']:,.0f} images/s  "
                f"{r['seconds']:.1f} s  peak anon {r['peak_anon_mib']:,} MiB",
                flush=True,
            )
    local = statistics.median(rates["local"])
    print(
        f"{args.images:,} PNGs  median images/s: local {local:,.0f}, ray-1 "
        f"{statistics.median(rates['ray-1']):,.0f} "
        f"({statistics.median(rates['ray-1']) / local:.2f}× local)"
    )
    return {"images": args.images, "images_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="*", default=[])
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--same-latents", metavar="SOURCE", help="check Ray's outputs against local ones on SOURCE"
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / ".scale", help="data goes here (not /tmp: memory)"
    )
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "WORK"), help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), json.loads(args.overrides), "mmap")))
        return

    from ray.cluster_utils import Cluster

    print(f"{os.cpu_count()} cores; CPU flags: {cpu_flags()}", flush=True)
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    addresses = {"local": None, "ray-1": None, "ray-2": nodes.address}
    try:
        if args.same_latents:
            same_latents(args.same_latents, args.work / f"same-{args.same_latents}", nodes.address)
        small, small_overrides = prepared_work(args, SMALL) if args.rows else (None, None)
        figures = {"encode": [], "images": None}
        for rows in args.rows:
            figures["encode"].append(encode_engines(args, rows, small, small_overrides, addresses))
        if args.images:
            figures["images"] = prepare_engines(args)
    finally:
        nodes.shutdown()
    write_results("ray_engine", command_line(__spec__), figures)


if __name__ == "__main__":
    main()
