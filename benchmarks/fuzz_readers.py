"""The reader fuzz of tests/data/test_fuzz_readers.py, longer and with fresh random cases: each
format's mutated files (random bytes, truncations, byte flips, header edits; an .h5ad's
structure) through prepare, and mutated tables through the encode command, each either
read or refused in one line naming the file, never a traceback, a hang or a changed output.

    .venv/bin/python -m benchmarks.fuzz_readers [--examples 2000]

Prints the cases tried per format and the pytest outcome.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks._common import command_line, write_results

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases per format")
    args = parser.parse_args()
    env = {**os.environ, "VAE_PIPELINE_FUZZ_EXAMPLES": str(args.examples), "VAE_PIPELINE_FUZZ_RANDOM": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "data" / "test_fuzz_readers.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    counts = re.findall(r"fuzz (\w+): (\d+) read, (\d+) refused", result.stdout)
    for fmt, read, refused in counts:
        print(f"{fmt:>15}: {int(read) + int(refused):>6} cases, {read} read, {refused} refused in one line")
    total = sum(int(r) + int(f) for _, r, f in counts)
    print(f"{total} cases; pytest: {result.stdout.strip().splitlines()[-1]}")
    if result.returncode:
        print(result.stdout[-4000:], result.stderr[-2000:])
    figures = {
        "formats": {fmt: {"read": int(read), "refused": int(refused)} for fmt, read, refused in counts},
        "cases": total,
        "pytest": result.stdout.strip().splitlines()[-1],
        "returncode": result.returncode,
    }
    write_results("fuzz_readers", command_line(__spec__), figures)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
