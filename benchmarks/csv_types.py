"""A streamed CSV whose types change after its first block, in every column: how long the
table reader takes and how often it starts over (issue "hardened, round two").

    .venv/bin/python -m benchmarks.csv_types [--columns 200] [--rows 12000] [--repeats 3]

Each column holds digits in its first block and a word in the last row, so its type widens
from integer to string after the first block. Before the reader widened every column at
once (one pass of the file read as text), it started over once per column: 200 columns of a
4.6 MiB file took 46 s; the figure now is printed with the number of restarts.
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results
from pipeline.data.readers.tables import read_table


class _Restarts(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += "read again" in record.getMessage()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--columns", type=int, default=200)
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "late.csv"
        values = np.random.default_rng(0).integers(0, 9, (args.rows, args.columns)).astype("<U8")
        values[-1] = [f"w{j}" for j in range(args.columns)]
        lines = [",".join(f"c{j}" for j in range(args.columns)) + ",label"] + [
            ",".join(r) + ",u" for r in values
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        restarts = _Restarts()
        logging.getLogger("pipeline.data.readers.tables").addHandler(restarts)
        logging.getLogger("pipeline.data.readers.tables").setLevel(logging.INFO)
        seconds = []
        for _ in range(args.repeats):
            restarts.count, start = 0, time.perf_counter()
            data = read_table(path, "label", None)
            seconds.append(time.perf_counter() - start)
        print(
            f"{path.stat().st_size / 2**20:.1f} MiB, {args.columns} columns widened, "
            f"{data.x.shape[0]:,} rows: median {statistics.median(seconds):.2f} s of {args.repeats}, "
            f"{restarts.count} restart(s) a read",
            file=sys.stdout,
        )
        figures = {
            "mib": path.stat().st_size / 2**20,
            "columns": args.columns,
            "rows": data.x.shape[0],
            "median_seconds": statistics.median(seconds),
            "repeats": args.repeats,
            "restarts_per_read": restarts.count,
        }
    write_results("csv_types", command_line(__spec__), figures)


if __name__ == "__main__":
    main()
