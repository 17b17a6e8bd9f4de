"""How long a user waits for the evaluation after changing a knob, through real DVC.

    .venv/bin/python -m benchmarks.iteration [--epochs 2] [--keep DIR] [override ...]

Copies the project (git-tracked files) into a git repository (a temporary one, or DIR,
which a later run with the same --keep reuses: only the code is copied again), sets the
README's Fashion-MNIST recipe (plus overrides: dotted.key=value), runs `dvc repro`, then
for each scenario changes one knob, brings train/encode up to date first (their time is
not the evaluation's), and times the `dvc repro` that follows; it prints which stages
ran and each stage's seconds. Needs Fashion-MNIST's IDX files where
`data.source: fashion_mnist` finds them (Debian: apt-get install dataset-fashion-mnist).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks._common import command_line, write_results
from benchmarks.run_pipeline import parse_overrides
from pipeline.platform.params.config_checker import set_dotted

ROOT = Path(__file__).resolve().parents[1]

RECIPE = {
    "data.source": "fashion_mnist",
    "model.architecture": "conv",
    "model.latent_dim": 16,
    "model.hidden": [],
    "train.batch_size": 128,
}
SCENARIOS = [  # (what a user changes, the key, two values to switch between)
    ("a training knob (train.learning_rate)", "train.learning_rate", (0.0015, 0.001)),
    ("a UMAP knob (evaluate.umap.n_neighbors)", "evaluate.umap.n_neighbors", (20, 15)),
]


def sh(args, cwd, check=True) -> tuple[str, float]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout + result.stderr, seconds


def get_param(repo: Path, key: str):
    value = yaml.safe_load((repo / "params.yaml").read_text())
    for part in key.split("."):
        value = value[part]
    return value


def set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        set_dotted(params, dotted, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed_repro(repo: Path) -> dict:
    """`dvc repro`, one stage at a time, so each one's wall time is known (after a first repro).

    `dvc repro --dry` names only the stages whose own deps changed, so ask again after each
    stage: the next one's deps are that stage's outputs.
    """
    seconds = {}
    while stages := re.findall(r"Running stage '(\w+)'", sh(["dvc", "repro", "--dry"], repo)[0]):
        seconds[stages[0]] = round(sh(["dvc", "repro", "--single-item", stages[0]], repo)[1], 1)
    return {"stages": seconds, "total_s": round(sum(seconds.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="dotted.key=value (YAML values)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (not what is measured)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    args = parser.parse_args()
    repo = args.keep or Path(tempfile.mkdtemp(prefix="vae-iteration-"))
    reuse = (repo / ".git").is_dir()
    params = (repo / "params.yaml").read_text() if reuse else None
    for name in sh(["git", "ls-files"], ROOT)[0].split():
        if (ROOT / name).is_file() and not name.startswith("data/") and name != "dvc.lock":
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "data" / "raw").mkdir(parents=True, exist_ok=True)
    if reuse:  # the code is new, the params and outputs are the earlier run's
        (repo / "params.yaml").write_text(params)
    else:
        set_params(repo, {**RECIPE, "train.epochs": args.epochs, **parse_overrides(args.overrides)})
        for command in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "benchmark"],
        ):
            sh(command, repo)
    output, seconds = sh(["dvc", "repro"], repo)
    first = {"stages": re.findall(r"Running stage '(\w+)'", output), "total_s": round(seconds, 1)}
    print(json.dumps({"first repro": first}), flush=True)
    results = {"first repro": first}
    for what, key, values in SCENARIOS:
        set_params(repo, {key: values[1] if get_param(repo, key) == values[0] else values[0]})
        sh(["dvc", "repro", "encode"], repo)  # train and encode: not the evaluation's time
        results[what] = timed_repro(repo)
        print(json.dumps({what: results[what]}), flush=True)
    print(json.dumps({"repo": str(repo), **results}, indent=1))
    write_results("iteration", command_line(__spec__), results)
    if args.keep is None:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
