"""What the benchmark scripts share: the project root, this machine's CPU, the command that
runs a script's own workers, and the results files (benchmarks/results/<name>.json).

Scripts run as modules from the project root (`.venv/bin/python -m benchmarks.<name>`), so
they import `pipeline`, `tests` and each other without editing sys.path. Only the standard
library is imported here: the peers' environment (.venv-peers) runs workers of these scripts.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The CPU flags that decide TensorFlow's kernels here (oneDNN on by default with the last five).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> str:
    """This CPU's flags among FLAGS, as one line ("" when it has none of them)."""
    line = next(
        (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
    )
    return " ".join(f for f in FLAGS if f in line.split())


def cpu_flags_line() -> str:
    return "CPU flags: " + (cpu_flags() or "(none of " + "/".join(FLAGS) + ")")


def machine() -> dict:
    """The machine a figure was measured on: CPU model, cores, the flags that matter, oneDNN's switch."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": cpu_flags().split(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default)"),
    }


def module_command(spec, python=sys.executable) -> list[str]:
    """The command that runs the benchmark module `spec` (a module's __spec__) with `python`:
    how a script starts its own workers, in this environment or the peers'."""
    return [str(python), "-m", spec.name]


def command_line(spec) -> str:
    """How the running script was started, as a reader would retype it from the project root."""
    return " ".join([".venv/bin/python -m " + spec.name, *sys.argv[1:]])


def write_results(name: str, command: str, results) -> Path:
    """benchmarks/results/<name>.json: the figures with the command, date, commit and machine."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "command": command,
                "date": datetime.date.today().isoformat(),
                "commit": commit.strip(),
                "machine": machine(),
                "results": results,
            },
            indent=1,
        )
    )
    return path


def trained_epochs(out: Path) -> int:
    """The epochs a run under `out` trained: the rows of its train U curve, less the header."""
    return (
        len((out / "model" / "live" / "plots" / "metrics" / "train" / "U.tsv").read_text().splitlines()) - 1
    )
