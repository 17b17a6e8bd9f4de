"""`dvc repro` end to end on a user's own messy CSV table, PNG folder and .h5ad
of single-cell counts, via params.yaml, in the session's repository after its default run
(a user's swap of the data); the .h5ad's latents handed back to AnnData."""

import json
import re
import shutil

import pyarrow.dataset as pads
import pytest

from tests.builders import make_cells, make_image_folder, make_mixed_table
from tests.conftest import edit_params, run


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory):
    repo = shutil.copytree(dvc_repo[0], tmp_path_factory.mktemp("sources") / "repo", symlinks=True)
    edit_params(
        repo,
        **{
            "train.epochs": 2,
            "model.hidden": [32],
            "model.latent_dim": 2,
            "evaluate.importance_samples": 5,
            "evaluate.surprisal_examples": 50,
            "evaluate.gradient_variance": {"repeats": 3, "batch_size": 16},
        },
    )
    make_image_folder(repo / "data/raw/shapes", sizes=((12, 12), (16, 10)), per_class=40)
    make_mixed_table(repo / "data/raw/mixed.csv", n=300)
    make_cells(repo / "data/raw/cells.h5ad")
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "own data"], repo)
    return repo


def _check_run(repo, source: str, rows: int, shape: list) -> None:
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["source"] == source and manifest["example_shape"] == shape
    latents = pads.dataset(repo / "data/latents", format="parquet", partitioning="hive").to_table()
    assert latents.num_rows == rows
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    assert 0 <= metrics["probe"]["accuracy"] <= 1
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout


def test_an_experiment_on_a_messy_csv_with_the_data_keys_only(repo):
    """The digits run swapped by `dvc exp run -S` for a CSV of strings, booleans, counts and
    empty cells, with only the data keys set (and a shorter training): runs, resolves to one
    likelihood per column, no collapse. (A count matrix, the same way in-process: test_columns.py.)"""
    ran = run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "data.source=table",
            "-S",
            "data.path=data/raw/mixed.csv",
            "-S",
            "data.table.label_column=species",
            "-S",
            "train.epochs=12",
            "-S",
            "model.latent_dim=4",
            "-S",
            "model.hidden=auto",
            "--name",
            "own-table",
        ],
        repo,
    ).stdout
    assert {"prepare", "train", "encode", "evaluate"} <= set(re.findall(r"Running stage '(\w+)'", ran))
    assert "own-table" in run(["dvc", "exp", "show", "--json"], repo).stdout
    _check_run(repo, "table", 300, [7])
    choices = json.loads((repo / "data/model/choices.json").read_text())
    assert choices["model.likelihood"]["value"] == "columns"
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    assert metrics["active_units"]["count"] >= 2
    assert metrics["probe"]["accuracy"] > metrics["baselines"]["majority_class_accuracy"] + 0.1


def test_editing_the_data_reruns_prepare(repo):
    """After the table run above: a new version of the same file is a changed dependency."""
    make_mixed_table(repo / "data/raw/mixed.csv", n=210, seed=1)
    status = run(["dvc", "status", "prepare"], repo).stdout
    assert "changed deps" in status and "data/raw" in status  # the file, or the data/raw folder it is in
    assert "Running stage 'prepare'" in run(["dvc", "repro", "prepare"], repo).stdout
    assert json.loads((repo / "data/prepared/manifest.json").read_text())["counts"] == {
        "train": 168,
        "test": 42,
    }


def test_repro_on_an_h5ad_and_the_latents_back_in_obsm(repo, tmp_path):
    """Sparse counts and obs labels through dvc repro; `vae-pipeline encode --anndata-out`
    writes a copy whose obsm["X_vae"] holds each cell's z_mean, in the file's row order; new
    cells' genes are matched by name."""
    import anndata as ad
    import numpy as np

    from pipeline.latents.reader import latents_to_numpy, load_latents

    edit_params(
        repo,
        **{
            "data.source": "anndata",
            "data.path": "data/raw/cells.h5ad",
            "data.anndata.label_key": "cell_type",
            "train.epochs": 12,
            "model.latent_dim": 4,
        },
    )
    # the UMAP, explorer and report of an .h5ad are no other than a table's
    run(["dvc", "repro", "evaluate"], repo)
    assert (
        json.loads((repo / "data/model/choices.json").read_text())["model.likelihood"]["value"] == "columns"
    )
    metrics = json.loads((repo / "data/evaluation/latent_metrics.json").read_text())  # evaluate's part
    assert metrics["probe"]["accuracy"] > 0.9  # three cell types, each with its marker genes
    run(
        [
            "vae-pipeline",
            "encode",
            "--model",
            "data/model/model.keras",
            "--input",
            "data/raw/cells.h5ad",
            "--output",
            str(tmp_path / "latents"),
            "--label-column",
            "cell_type",
            "--anndata-out",
            str(tmp_path / "cells_vae.h5ad"),
        ],
        repo,
    )
    original, copy = ad.read_h5ad(repo / "data/raw/cells.h5ad"), ad.read_h5ad(tmp_path / "cells_vae.h5ad")
    latents = load_latents(tmp_path / "latents", split="new")
    z = latents_to_numpy(latents)[np.argsort(latents.column("id").to_numpy())]
    assert copy.obsm["X_vae"].shape == (300, 4)
    np.testing.assert_allclose(copy.obsm["X_vae"], z, rtol=1e-6)
    assert (copy.obs_names == original.obs_names).all() and (copy.X != original.X).nnz == 0
    # The same cells with their genes in another order: matched by name, the same latents
    original[:, ::-1].copy().write_h5ad(tmp_path / "reversed.h5ad")
    run(
        [
            "vae-pipeline",
            "encode",
            "--model",
            "data/model/model.keras",
            "--input",
            str(tmp_path / "reversed.h5ad"),
            "--output",
            str(tmp_path / "latents"),
            "--split",
            "reversed",
        ],
        repo,
    )
    reversed_ = load_latents(tmp_path / "latents", split="reversed")
    np.testing.assert_array_equal(
        latents_to_numpy(reversed_)[np.argsort(reversed_.column("id").to_numpy())], z
    )
    original[:, 2:].copy().write_h5ad(tmp_path / "fewer.h5ad")
    failed = run(
        [
            "vae-pipeline",
            "encode",
            "--model",
            "data/model/model.keras",
            "--input",
            str(tmp_path / "fewer.h5ad"),
            "--output",
            str(tmp_path / "latents"),
            "--split",
            "fewer",
        ],
        repo,
        check=False,
    )
    assert (
        failed.returncode != 0 and "2 of the model's 60 genes are not in var: gene0, gene1" in failed.stderr
    )
    assert not (tmp_path / "latents" / "split=fewer").exists()


@pytest.mark.slow
def test_repro_on_an_image_folder(repo):
    """Last: it sets a conv architecture, which the table and the .h5ad could not take. In
    `make test-all`: the image folder's reader is tests/data/test_sources.py's, the conv model's
    kernels the harness's (tests/model/test_model_harness.py), both in the default tier."""
    # the table's 12 epochs are not needed here
    edit_params(
        repo,
        **{
            "data.source": "image_folder",
            "data.path": "data/raw/shapes",
            "data.images": {"size": [8, 8], "color": "grey"},
            "model.architecture": "conv",
            "model.filters": [4, 8],
            "train.epochs": 2,
        },
    )
    assert "Running stage 'evaluate'" in run(["dvc", "repro"], repo).stdout
    _check_run(repo, "image_folder", 80, [8, 8, 1])
