"""The real thing: `dvc repro` in a copy of the repository, then a no-op, an experiment, a bad param."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.evaluation.metrics import Metrics
from pipeline.latents.reader import load_latents
from pipeline.platform.faults import FULL_AT
from pipeline.platform.io import sha256_file
from tests.builders import PAGES, RUN, blocks
from tests.conftest import BIN, ROOT, edit_params, run


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory):
    """A copy of the session's repository after `dvc repro`, for tests that change it (the
    docs' blocks run in copies of the untouched one)."""
    path, first = dvc_repo
    return shutil.copytree(path, tmp_path_factory.mktemp("e2e-changed") / "repo", symlinks=True), first


def test_dvc_repro_writes_every_output(repo):
    repo, first = repo
    ran = re.findall(r"Running stage '(\w+)'", first)
    kept = re.findall(r"Stage '(\w+)' didn't change", first)  # e.g. outputs committed with dvc.lock
    assert ran[:3] == ["prepare", "train", "encode"]  # the clone has no data/prepared nor model
    assert sorted(ran + kept) == sorted(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    for path in (
        "data/prepared/manifest.json",
        "data/model/model.keras",
        "data/model/encoder.keras",
        "data/model/live/metrics.json",
        "data/latents/split=train/part-0.parquet",
        "data/latents/split=test/part-0.parquet",
        "data/evaluation/metrics.json",
        "data/evaluation/umap/umap.png",
        "data/evaluation/umap.csv",
        "data/evaluation/confusion.csv",
        "data/evaluation/report.md",
        "data/evaluation/pictures/reconstructions.png",
        "data/evaluation/explorer.html",
        "data/evaluation/projector/projector_config.pbtxt",
    ):
        assert (repo / path).is_file(), path
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    assert metrics["subo"]["test"]["U"] >= metrics["subo"]["test"]["reconstruction"] >= 0
    assert Metrics.of(metrics).as_dict() == metrics  # every key in the schema, in its order
    shown = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert '"accuracy"' in shown and '"baselines"' in shown


def test_second_repro_runs_nothing(repo):
    repo, _ = repo
    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout


def test_bad_param_stops_with_one_line_and_keeps_outputs(repo):
    repo, _ = repo
    before = sha256_file(repo / "data/model/model.keras")
    original = (repo / "params.yaml").read_text()
    edit_params(repo, **{"model.latent_dim": -3})
    try:
        failed = run(["dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    assert failed.returncode != 0
    assert "error: params.yaml: model.latent_dim must be an integer >= 1. Got -3 instead." in failed.stderr
    assert "Traceback" not in failed.stderr
    assert sha256_file(repo / "data/model/model.keras") == before


def outputs(repo: Path) -> dict:
    """Every file the stages wrote, with its bytes."""
    return {
        p: p.read_bytes() for p in sorted((repo / "data").rglob("*")) if p.is_file() and "raw" not in p.parts
    }


# Errors that need the data (a param's range alone is checked in-process: tests/platform/test_config.py,
# and one such error through DVC above).
@pytest.mark.parametrize(
    "stage, changes, message",
    [
        # issue 12: the prepare split fails after reading the data
        ("prepare", {"data.max_examples": 5}, "error: digits: cannot make the max_examples split"),
        (
            "train",
            {"model.latent_dim": 65},
            "error: model.latent_dim must be at most the number of values per example",
        ),
        ("baselines", {"evaluate.knn_k": 100_000}, "error: params.yaml: evaluate.knn_k must be smaller than"),
    ],
)
def test_a_failing_stage_leaves_every_output_byte_identical(repo, stage, changes, message):
    repo, _ = repo
    before = outputs(repo)
    original = (repo / "params.yaml").read_text()
    edit_params(repo, **changes)
    try:
        failed = run(["dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    assert failed.returncode != 0
    assert f"Running stage '{stage}'" in failed.stdout
    assert message in failed.stderr and "Traceback" not in failed.stderr
    assert outputs(repo) == before


@pytest.mark.parametrize("stage, point", [("train", "bundle"), ("encode", "parquet"), ("evaluate", "staged")])
def test_a_stage_failing_after_its_work_leaves_every_output_byte_identical(repo, stage, point):
    """A full disk found after the work is done: while the trained model is saved, inside the
    Parquet writer with a row group written, and while evaluate's finished outputs are synced."""
    repo, _ = repo
    before = outputs(repo)
    failed = run(["dvc", "repro", "--force", "--single-item", stage], repo, check=False, **{FULL_AT: point})
    assert failed.returncode != 0 and f"Running stage '{stage}'" in failed.stdout
    [line] = [
        line for line in failed.stderr.splitlines() if line.startswith("error: ")
    ]  # one line, then DVC's
    assert line.startswith("error: No space left on device: ") and line.endswith(
        "; the previous outputs are kept"
    )
    assert "Traceback" not in failed.stderr
    after = outputs(repo)
    if stage == "train":  # the finished training is kept for the next run to resume, not published
        backup = repo / "data/model/backup"
        assert (backup / "training_metadata.json").is_file()
        after = {path: data for path, data in after.items() if backup not in path.parents}
        shutil.rmtree(backup)
    assert after == before
    assert [
        p.name for p in (repo / "data").rglob(".*") if p.name != ".gitignore"
    ] == []  # staging rolled back


def test_each_knob_reruns_only_what_depends_on_it_and_an_experiment_is_recorded(repo):
    repo, _ = repo
    original = (repo / "params.yaml").read_text()
    try:
        edit_params(repo, **{"train.learning_rate": 0.002})
        dry = run(["dvc", "repro", "--dry"], repo).stdout  # lists what the change itself touches
        assert "Running stage 'train'" in dry
        assert "Stage 'baselines' didn't change" in dry and "Stage 'prepare' didn't change" in dry
    finally:
        (repo / "params.yaml").write_text(original)
    ran = run(["dvc", "exp", "run", "-S", "evaluate.umap.n_neighbors=5", "--name", "umap5"], repo).stdout
    assert re.findall(r"Running stage '(\w+)'", ran) == ["umap", "explore", "report"]  # explore: its points
    assert "| latents z_mean |" in ran  # the report stage prints the probe table, not the JSON
    assert "umap5" in run(["dvc", "exp", "show", "--json"], repo).stdout
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout  # the workspace holds its results


def test_dvc_sees_a_change_of_every_key_and_each_stage_the_keys_it_declares(repo):
    """Every key of params.yaml changed at once: `dvc status` names, for each stage, exactly the
    keys its dvc.yaml entry declares, and every key is some stage's but the timeouts, which
    change no result. (That a stage reads only what it declares is checked by every stage
    run in the tests: VAE_PIPELINE_STRICT_PARAMS.)"""
    from pipeline.platform.params.config import leaf_keys
    from pipeline.platform.params.param_watch import NO_RESULT

    repo, _ = repo
    original = (repo / "params.yaml").read_text()

    def leaves(keys) -> set:  # a block declared whole (train's model, loss, train) stands for its keys
        return {leaf for key in keys for leaf in leaf_keys() if f"{leaf}.".startswith(f"{key}.")}

    declared = {
        name: leaves(stage.get("params", []))
        for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items()
    }
    try:
        edit_params(repo, **{key: f"changed {key}" for key in leaf_keys()})
        status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    finally:
        (repo / "params.yaml").write_text(original)
    seen = {
        name: leaves(
            key
            for change in changes
            if isinstance(change, dict)
            for key in change.get("changed deps", {}).get("params.yaml", {})
        )
        for name, changes in status.items()
    }
    assert seen == {name: keys for name, keys in declared.items() if keys}
    assert set(leaf_keys()) - set().union(*declared.values()) == NO_RESULT


def test_dvc_import_and_get_from_another_repository(repo, tmp_path):
    repo, _ = repo
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    run(["dvc", "push"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "outputs"], repo)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run(["git", "init", "-q"], consumer)
    run(["dvc", "init", "-q"], consumer)
    run(["dvc", "import", str(repo), "data/latents", "-o", "latents"], consumer)
    assert (consumer / "latents.dvc").is_file()
    imported = load_latents(consumer / "latents", latent_dim=8)
    assert imported.num_rows == 1797
    run(["dvc", "get", str(repo), "data/latents", "-o", str(tmp_path / "copy")], tmp_path)
    assert load_latents(tmp_path / "copy", split="test").num_rows == 360


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(b["lang"] in RUN and not b["why"] for b in blocks(p))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_docs_blocks_run(page, dvc_repo, tmp_path):
    """In document order, each block in its own process (as a reader pastes it), in a copy of
    a repository after `dvc repro` (digits, tiny settings), the project's environment first
    on PATH as after `. .venv/bin/activate`."""
    repo = shutil.copytree(dvc_repo[0], tmp_path / "repo", symlinks=True)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for block in blocks(page):
        if block["lang"] in RUN and not block["why"]:
            command = (
                ["bash", "-euo", "pipefail", "-c"] if block["lang"] == "bash" else [sys.executable, "-c"]
            )
            result = subprocess.run(
                [*command, block["code"]], cwd=repo, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, (
                f"{page.relative_to(ROOT)}:{block['line']}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
            )
