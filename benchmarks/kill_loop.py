"""SIGKILL real `dvc repro` runs at random instants; check that no stage is left mixed and no litter stays.

    .venv/bin/python -m benchmarks.kill_loop --kills 30 [--seed 0] [--workdir /tmp/kill-loop]

A git+DVC copy of the project on digits with small, deterministic training
(`train.deterministic: true`) is run to completion under two param sets, A and B (they
differ in `seed`, which changes every stage's output), giving each stage's outputs
under A and under B. Then, --kills times: switch params to the other set, start
`dvc repro` in its own process group, SIGKILL the whole group at a uniformly random
instant of a full run's duration (a run that finishes first is not counted as a kill), finish whatever
journal the killed stage left
(pipeline.platform.io.recover, what that stage's next run does first) and check every stage's
outputs: each must be exactly its A outputs or its B outputs, never a mix (compared
byte for byte but for what differs between two runs of the same params: the training
speed curve, a .keras file's save date and the Python object ids Keras writes into its
config, and the model file's sha256 which those change, recorded in the latents'
metadata), and nothing
hidden may be left under data/ but the killed stage's scratch (its next run clears it).
The train backup a kill leaves is removed after each kill: a training resumed from it is
a valid run, but not bitwise the uninterrupted one the check compares with. Last, one `dvc repro` must
finish, leave no temporaries, and a second must run
nothing. Prints where each kill landed and what it found; exits 1 on any violation.
"""

import argparse
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from benchmarks._common import command_line, write_results
from pipeline.platform.io import recover
from tests.conftest import copy_project
from tests.platform.test_kill import PUBLICATIONS, outputs_of

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "train.epochs": 2,
    "model.hidden": [64],
    "train.deterministic": True,
    "evaluate.importance_samples": 10,
    "evaluate.surprisal_examples": 100,
}
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def sh(args, cwd, check=True):
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def set_params(repo: Path, seed: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in {**SMALL, "seed": seed}.items():
        block = params
        *parents, key = dotted.split(".")
        for part in parents:
            block = block[part]
        block[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def comparable(path: str, data):
    """An output's content without what differs between two runs of the same params."""
    if path.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        metadata = {
            k: v for k, v in (table.schema.metadata or {}).items() if k != b"vae_pipeline.model_sha256"
        }
        return table.replace_schema_metadata(None).to_pydict(), metadata
    if path.endswith(".keras"):  # Keras writes id() of objects shared in the config: number them instead
        ids = {}
        config = re.sub(
            rb'"shared_object_id": (\d+)',
            lambda m: b"%d" % ids.setdefault(m.group(1), len(ids)),
            data["config.json"],
        )
        return {**data, "config.json": config}
    if path.endswith("live/metrics.json"):
        metrics = json.loads(data)
        metrics["train"].pop("samples_per_second", None)
        return metrics
    return data


def snapshot(repo: Path) -> dict:
    return {
        stage: {
            path: comparable(path, data)
            for path, data in outputs_of(repo, stage).items()
            if not path.endswith("samples_per_second.tsv")
        }
        for stage in PUBLICATIONS
    }


def differing(state: dict, reference: dict) -> list[str]:
    return sorted(path for path in state.keys() | reference.keys() if state.get(path) != reference.get(path))


def litter(repo: Path) -> list[str]:
    return sorted(
        str(p.relative_to(repo))
        for p in (repo / "data").rglob(".*")
        if ".scratch." not in p.name and p.name != ".gitignore"
    )


def killed_repro(repo: Path, after_s: float) -> tuple[str, bool]:
    """Start `dvc repro`, SIGKILL its process group after `after_s`: the stage it was in,
    and whether it had finished first."""
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        process.wait(timeout=after_s)
        finished = True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        finished = False
    out = process.stdout.read()
    if finished and process.returncode:
        raise SystemExit(f"dvc repro failed on its own:\n{out[-3000:]}")
    running = re.findall(r"Running stage '(\w+)'", out)
    return (running[-1] if running else "dvc start-up"), finished


def committed_copy(workdir: Path) -> Path:
    """A fresh copy of the project under workdir, committed in its own git repository."""
    shutil.rmtree(workdir, ignore_errors=True)
    repo = copy_project(workdir)
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.email=k@k", "-c", "user.name=k", "commit", "-qm", "copy"], repo)
    return repo


def reference_runs(repo: Path) -> tuple[dict, dict]:
    """Clean runs under B then A (the loop starts from A's outputs): their outputs and times."""
    reference, duration = {}, {}
    for seed in (1, 0):
        set_params(repo, seed)
        start = time.perf_counter()
        sh(["dvc", "repro"], repo)
        duration[seed] = time.perf_counter() - start
        reference[seed] = snapshot(repo)
    mixed_reference = [s for s in PUBLICATIONS if reference[0][s] == reference[1][s]]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; full run "
        f"{duration[1]:.0f} s (B), {duration[0]:.0f} s (A); stages equal under A and B: "
        f"{mixed_reference or 'none'}"
    )
    return reference, duration


def recovered_state(
    repo: Path, reference: dict, kill: int, stage: str, found: Counter
) -> tuple[list[str], list[str]]:
    """After a kill: recover every publication, count what each stage holds, and the violations."""
    # A train killed under A, then a run under B killed before its train, then A again: train
    # resumes from the backup, a valid run but not bitwise the uninterrupted one: not this check's
    # subject.
    shutil.rmtree(repo / "data/model/backup", ignore_errors=True)
    journals = sorted(p.name for p in (repo / "data").rglob(".*.journal"))
    found["journal left"] += bool(journals)
    for base, publication in PUBLICATIONS.values():
        recover(repo / base, publication)
    state, violations = snapshot(repo), []
    for name in PUBLICATIONS:
        is_a, is_b = state[name] == reference[0][name], state[name] == reference[1][name]
        found[f"{name}: {'A' if is_a else 'B' if is_b else 'MIXED'}"] += 1
        if not (is_a or is_b):
            violations.append(
                f"kill {kill} in {stage}: {name} is neither A nor B; files unlike A: "
                f"{differing(state[name], reference[0][name])[:3]}, unlike B: "
                f"{differing(state[name], reference[1][name])[:3]}"
            )
    if left := litter(repo):
        violations.append(f"kill {kill} in {stage}: litter {left}")
    return violations, journals


def final_violations(repo: Path, reference: dict, seed: int) -> list[str]:
    """After the loop: a last dvc repro leaves no litter, a second one runs nothing, and the
    outputs are a clean run's."""
    violations = []
    sh(["dvc", "repro"], repo)
    if left := [p for p in litter(repo) if "backup" not in p] + [
        str(p) for p in (repo / "data").glob(".*.scratch.*")
    ]:
        violations.append(f"after the final dvc repro: litter {left}")
    if "Running stage" in sh(["dvc", "repro"], repo).stdout:
        violations.append("a second dvc repro ran a stage")
    final = snapshot(repo)
    if final != reference[seed]:
        violations.append(
            f"the final outputs differ from a clean run's: "
            f"{[differing(final[s], reference[seed][s])[:3] for s in PUBLICATIONS]}"
        )
    return violations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kill-loop"))
    args = parser.parse_args()
    repo = committed_copy(args.workdir)
    reference, duration = reference_runs(repo)
    rng = random.Random(args.seed)
    landed, found, violations = Counter(), Counter(), []
    seed, kill, window = 0, 0, min(duration.values())  # a full run's time (a run after a kill may do less)
    while kill < args.kills:  # a run that finishes before its instant is not a kill: draw again
        seed = 1 - seed
        set_params(repo, seed)
        stage, finished = killed_repro(repo, rng.uniform(0, window))
        landed["(finished first)" if finished else stage] += 1
        kill += not finished
        found_now, journals = recovered_state(repo, reference, kill, stage, found)
        violations += found_now
        print(
            f"kill {kill}: in {stage}{' (run had finished first)' if finished else ''}, "
            f"journals {journals or 'none'}",
            flush=True,
        )
    violations += final_violations(repo, reference, seed)
    print("where the kills landed:", json.dumps(dict(sorted(landed.items()))))
    print("what recovery found:", json.dumps(dict(sorted(found.items()))))
    print("violations:", violations or "none")
    figures = {
        "full_run_seconds": {"A": duration[0], "B": duration[1]},
        "landed": dict(sorted(landed.items())),
    }
    figures |= {"found": dict(sorted(found.items())), "violations": violations}
    write_results("kill_loop", command_line(__spec__), figures)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
