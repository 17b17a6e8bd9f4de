"""`dvc repro` end to end on a user's own CSV table, npz, IDX directory and PNG folder, via params.yaml."""

import json

import numpy as np
import pyarrow.dataset as pads
import pytest

from .conftest import copy_project
from .test_columns import make_mixed_table
from .test_data import write_idx
from .test_e2e import edit_params, run
from .test_sources import make_image_folder, make_table


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_project(tmp_path_factory.mktemp("sources"))
    edit_params(repo, **{"train.epochs": 2, "model.hidden": [32], "model.latent_dim": 2,
                         "evaluate.importance_samples": 5, "evaluate.surprisal_examples": 50,
                         "evaluate.gradient_variance": {"repeats": 3, "batch_size": 16}})
    make_table(repo / "data/raw/table.csv", n=240)
    make_image_folder(repo / "data/raw/shapes", sizes=((12, 12), (16, 10)), per_class=40)
    rng = np.random.default_rng(0)
    np.savez(repo / "data/raw/arrays.npz", x=rng.normal(size=(150, 6)), y=np.arange(150) % 3)
    make_mixed_table(repo / "data/raw/mixed.parquet", n=300)
    y = np.arange(300) % 3  # counts from a low-rank negative binomial model, 3 classes
    log_mean = 1.0 + (rng.normal(size=(300, 2)) + np.array([[2, 0], [-1, 1.5], [-1, -1.5]])[y]) @ rng.normal(
        scale=0.7, size=(2, 30))
    np.savez(repo / "data/raw/counts.npz", x=rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(log_mean))), y=y)
    (repo / "data/raw/idx").mkdir()
    write_idx(repo / "data/raw/idx/train-images-idx3-ubyte.gz", rng.integers(0, 256, size=(160, 10, 10)))
    write_idx(repo / "data/raw/idx/train-labels-idx1-ubyte.gz", np.arange(160) % 4)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], repo)
    return repo


@pytest.mark.parametrize("params, rows, shape", [
    ({"data.source": "table", "data.path": "data/raw/table.csv"}, 240, [3]),
    ({"data.source": "npz", "data.path": "data/raw/arrays.npz"}, 150, [6]),
    ({"data.source": "idx", "data.path": "data/raw/idx"}, 160, [10, 10, 1]),
    ({"data.source": "image_folder", "data.path": "data/raw/shapes", "data.images": {"size": [8, 8], "color": "grey"},
      "model.architecture": "conv", "model.filters": [4, 8]}, 80, [8, 8, 1]),
])
def test_repro_on_own_data(repo, params, rows, shape):
    edit_params(repo, **params)
    result = run(["dvc", "repro"], repo)
    assert "Running stage 'evaluate'" in result.stdout
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["source"] == params["data.source"] and manifest["example_shape"] == shape
    latents = pads.dataset(repo / "data/latents", format="parquet", partitioning="hive").to_table()
    assert latents.num_rows == rows
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    assert 0 <= metrics["probe"]["accuracy"] <= 1
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout


def test_editing_the_data_reruns_prepare(repo):
    edit_params(repo, **{"data.source": "table", "data.path": "data/raw/table.csv", "model.architecture": "mlp"})
    run(["dvc", "repro"], repo)
    make_table(repo / "data/raw/table.csv", n=210)
    result = run(["dvc", "repro"], repo)
    assert "Running stage 'prepare'" in result.stdout
    assert json.loads((repo / "data/prepared/manifest.json").read_text())["counts"] == {"train": 168, "test": 42}


@pytest.mark.parametrize("data, shape, likelihood", [
    ({"source": "table", "path": "data/raw/mixed.parquet", "table.label_column": "species"}, [7], "columns"),
    ({"source": "npz", "path": "data/raw/counts.npz"}, [30], "columns"),
])
def test_repro_on_a_mixed_table_and_a_count_matrix_with_the_data_keys_only(repo, data, shape, likelihood):
    """Strings, booleans, counts and empty cells; a count matrix: only data.* set (and a
    shorter training): runs, resolves to one likelihood per column, no collapse."""
    edit_params(repo, **{f"data.{key}": value for key, value in data.items()},
                **{"train.epochs": 12, "model.latent_dim": 4, "model.hidden": "auto", "model.architecture": "auto"})
    run(["dvc", "repro"], repo)
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["example_shape"] == shape
    choices = json.loads((repo / "data/model/choices.json").read_text())
    assert choices["model.likelihood"]["value"] == likelihood
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    assert metrics["active_units"]["count"] >= 2
    assert metrics["probe"]["accuracy"] > metrics["baselines"]["majority_class_accuracy"] + 0.1
    assert "Running stage" not in run(["dvc", "repro"], repo).stdout
    edit_params(repo, **{"train.epochs": 2, "model.latent_dim": 2, "model.hidden": [32],
                         "data.table.label_column": "label"})
