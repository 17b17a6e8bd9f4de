"""The kill matrix: each stage, run as DVC runs it, SIGKILLed at a named step of its work or
of its publish (pipeline.platform.io), leaves its outputs entirely the previous run's or, once the
journal it committed is rolled forward, entirely the new run's; no other stage's output
changes, and no litter is left. The protocol's every step is killed in test_publish.py;
here each stage is killed once or twice, where its own writing happens.

The previous run is the session's tiny pipeline run; the new run changes `seed`, which
changes every stage's output.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline.platform.faults import KILL_AT
from pipeline.platform.io import recover
from tests.conftest import ROOT, TINY

# Every stage's publication (root, name under root) and outputs, as dvc.yaml lists them.
PUBLICATIONS = {
    "prepare": ("data", "prepared"),
    "train": ("data/model", "train"),
    "encode": ("data", "latents"),
    "baselines": ("data/evaluation", "baselines"),
    "evaluate": ("data/evaluation", "evaluate"),
    "umap": ("data/evaluation", "umap"),
    "report": ("data/evaluation", "report"),
}
SCRIPTS = {"umap": "umap_view"}
# (stage, fault point), in pipeline order: the new outputs of one case are the inputs of the next.
CASES = [
    ("prepare", "aside"),
    ("train", "bundle"),
    ("train", "aside"),
    ("encode", "parquet"),
    ("encode", "journaled"),
    ("baselines", "published"),
    ("evaluate", "renamed"),
    ("umap", "staged"),
    ("report", "aside"),
]


def stage_outputs() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {
        name: [
            next(iter(out)) if isinstance(out, dict) else out
            for kind in ("outs", "metrics", "plots")
            for out in stage.get(kind, [])
        ]
        for name, stage in stages.items()
    }


def content(path: Path) -> dict:
    """Every file under path with its content; a .keras file's members but the save date."""
    files = (
        sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else [path]
        if path.exists()
        else []
    )
    out = {}
    for file in files:
        if file.suffix == ".keras":
            with zipfile.ZipFile(file) as archive:
                out[str(file)] = {n: archive.read(n) for n in archive.namelist() if n != "metadata.json"}
        else:
            out[str(file)] = file.read_bytes()
    return out


def outputs_of(root: Path, stage: str) -> dict:
    return {key: value for out in stage_outputs()[stage] for key, value in content(root / out).items()}


def journalled_outputs(root: Path, stage: str) -> dict:
    """What the killed run's committed journal publishes: each entry at its staged or, if
    already renamed in, its final name, read as the outputs it becomes."""
    base, name = PUBLICATIONS[stage]
    moves = json.loads((root / base / f".{name}.journal").read_text())["moves"]
    view = {}
    for staged, target in moves:
        source = root / base / staged if (root / base / staged).exists() else root / base / target
        view.update(
            {
                key.replace(str(source), str(root / base / target), 1): value
                for key, value in content(source).items()
            }
        )
    return {
        key: value
        for key, value in view.items()
        if any(
            key == str(root / out) or key.startswith(str(root / out) + "/") for out in stage_outputs()[stage]
        )
    }


@pytest.fixture(scope="module")
def project(pipeline_run, tmp_path_factory):
    """The previous run's outputs in a project layout, params.yaml set for the new run."""
    root = tmp_path_factory.mktemp("kill")
    paths = pipeline_run["paths"]
    for source, target in (
        ("prepared", "prepared"),
        ("model_dir", "model"),
        ("latents", "latents"),
        ("evaluation", "evaluation"),
    ):
        shutil.copytree(paths[source], root / "data" / target)
    (root / "params.yaml").write_text(
        yaml.safe_dump({**TINY, "seed": 1, "train": {**TINY["train"], "epochs": 2}})
    )
    return root


def litter(root: Path) -> list[str]:
    """Hidden temporaries under data/, but a killed stage's scratch (cleared by its next run)."""
    return [str(p.relative_to(root)) for p in (root / "data").rglob(".*") if ".scratch." not in p.name]


@pytest.mark.parametrize("stage, point", CASES, ids=[f"{s}@{p}" for s, p in CASES])
def test_a_killed_stage_leaves_its_outputs_old_or_new(project, stage, point):
    before = {s: outputs_of(project, s) for s in PUBLICATIONS}
    script = ROOT / "stages" / f"{SCRIPTS.get(stage, stage)}.py"
    env = {**os.environ, KILL_AT: point, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, str(script)], cwd=project, env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    base, name = PUBLICATIONS[stage]
    committed = (project / base / f".{name}.journal").exists()
    assert committed == (point not in ("staged", "bundle", "parquet"))
    expected = journalled_outputs(project, stage) if committed else before[stage]
    recover(project / base, name)  # what the stage's next run does first

    after = outputs_of(project, stage)
    assert sorted(after) == sorted(expected) and after == expected  # entirely old, or entirely new
    if committed:
        changed = [key for key in after if after[key] != before[stage].get(key)]
        assert changed, "the new run should differ from the previous one"  # or old-or-new is vacuous
    assert {s: outputs_of(project, s) for s in PUBLICATIONS if s != stage} == {
        s: v for s, v in before.items() if s != stage
    }  # no other stage's output moved
    assert litter(project) == []
    if stage == "train":
        assert (project / "data/model/backup/run_fingerprint.txt").is_file()  # resumable
