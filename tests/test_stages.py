"""encode and evaluate on the shared tiny run: outputs, metrics' structure and ranges, errors."""

import json

import numpy as np
import pytest

from pipeline.encode import encode
from pipeline.errors import DataError
from pipeline.evaluate import evaluate, sample_counts
from pipeline.latents import write_latents

from .test_latents import _batch


def test_metrics_file_structure_and_ranges(pipeline_run):
    metrics = pipeline_run["metrics"]
    out = pipeline_run["paths"]["evaluation"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    probe = metrics["probe"]
    assert set(probe["accuracy"]) == {"latent", "pca", "raw"}
    assert probe["dim"] == {"latent": 4, "pca": 4, "raw": 64}
    assert all(0 <= a <= 1 for a in probe["accuracy"].values())
    assert probe["accuracy"]["latent"] > 3 * probe["majority_class_accuracy"]  # well above chance
    assert set(metrics["subo"]) == {"validation", "test"}
    assert metrics["subo"]["validation"]["examples"] == 120  # capped by surprisal_examples (144 held out)
    figures = metrics["subo"]["test"]
    assert figures["examples"] == 120
    assert figures["U"] == pytest.approx(figures["D"] + figures["reconstruction"])
    assert figures["U"] >= figures["reconstruction"] >= 0 and figures["D"] >= 0
    assert list(figures["S_K"]) == ["1", "10", "20"]
    s = list(figures["S_K"].values())
    assert s[0] > s[1] > s[2] and figures["U"] > s[2]
    assert all(figures["E_K"][k] == pytest.approx(figures["U"] - figures["S_K"][k]) for k in figures["S_K"])
    variance = metrics["gradient_variance"]
    assert variance["score_function"] > variance["reparameterized"] > 0
    assert variance["ratio"] == pytest.approx(variance["score_function"] / variance["reparameterized"])
    assert (variance["repeats"], variance["batch_size"]) == (8, 32)
    assert metrics["umap"]["points"] == 200


def test_umap_outputs(pipeline_run):
    out = pipeline_run["paths"]["evaluation"]
    assert (out / "umap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = np.loadtxt(out / "umap.csv", delimiter=",", skiprows=1)
    assert table.shape == (200, 3) and np.isfinite(table).all()
    assert set(table[:, 2].astype(int)) <= set(range(10))


def test_sample_counts():
    assert sample_counts(1) == [1]
    assert sample_counts(100) == [1, 10, 100]
    assert sample_counts(250) == [1, 10, 100, 250]


def test_evaluate_rejects_latents_of_another_dimension(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    write_latents(tmp_path / "latents", [_batch("train", 5, 3), _batch("test", 5, 3)], 3, {})
    with pytest.raises(DataError, match="latent_dim 3, expected 4"):
        evaluate(pipeline_run["params"], paths["prepared"], paths["model"], tmp_path / "latents", tmp_path / "ev")
    assert not (tmp_path / "ev").exists()


def test_evaluate_rejects_latents_of_another_dataset(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    write_latents(tmp_path / "latents", [_batch("train", 5, 4), _batch("test", 5, 4)], 4,
                  {"dataset_fingerprint": "0" * 64})
    with pytest.raises(DataError, match="encoded from another dataset"):
        evaluate(pipeline_run["params"], paths["prepared"], paths["model"], tmp_path / "latents", tmp_path / "ev")


def test_encode_names_a_missing_or_foreign_model(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    with pytest.raises(DataError, match="model file not found"):
        encode(pipeline_run["params"], paths["prepared"], tmp_path / "none.keras", tmp_path / "l")
    with pytest.raises(DataError, match="expected a saved VAE, got Functional"):
        encode(pipeline_run["params"], paths["prepared"], paths["model_dir"] / "encoder.keras", tmp_path / "l")
    assert not (tmp_path / "l").exists()
