"""encode and evaluate on the shared tiny run: outputs, metrics' structure and ranges, errors."""

import json

import numpy as np
import pytest

from pipeline.latents.writer import write_latents
from pipeline.model.diagnostics import sample_counts
from pipeline.platform.errors import DataError
from pipeline.runner import encode, evaluate_all
from tests.builders import latent_batch


def test_metrics_file_structure_and_ranges(pipeline_run):
    metrics = pipeline_run["metrics"]
    out = pipeline_run["paths"]["evaluation"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    probe, baselines = metrics["probe"], metrics["baselines"]
    assert probe["dim"] == 4 and probe["train_examples"] == 1437
    assert probe["C"] in (0.01, 0.1, 1.0, 10.0) and 0 <= probe["validation_accuracy"] <= 1
    assert 0 <= probe["macro_f1"] <= probe["accuracy"] + 0.05 and probe["accuracy"] <= 1
    assert probe["accuracy"] > 3 * baselines["majority_class_accuracy"]  # well above chance
    assert (baselines["pca"]["dim"], baselines["raw"]["dim"]) == (4, 64)
    for name in ("pca", "raw"):
        b = baselines[name]
        assert b["latent_minus_baseline"] == pytest.approx(probe["accuracy"] - b["linear"]["accuracy"])
        assert b["latent_beats_baseline"] == (b["latent_minus_baseline"] > 0)
        assert 0 <= b["knn"] <= 1
    assert metrics["knn"]["k"] == 5 and 0.3 < metrics["knn"]["accuracy"] <= 1
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
    assert metrics["umap"] == {"split": "test", "points": 200, "n_neighbors": 10, "min_dist": 0.1, "seed": 0}
    assert metrics["generative"]["images"] and len(metrics["generative"]["mean_kl_per_dim"]) == 4
    active = metrics["active_units"]
    assert active["of"] == 4 and active["count"] == sum(v > 0.01 for v in active["variance_of_mean"]) >= 1
    report = (out / "report.md").read_text()
    assert f"Active latent units: **{active['count']} of 4**" in report


def test_the_metrics_schema_names_a_stray_or_missing_key_and_documents_every_field(pipeline_run):
    from pipeline.evaluation.metrics import Metrics, metrics_keys

    metrics = pipeline_run["metrics"]
    assert Metrics.of(metrics).as_dict() == metrics
    stray = {**metrics, "subo": {**metrics["subo"], "test": {**metrics["subo"]["test"], "S_k": {}}}}
    with pytest.raises(DataError, match=r"metrics subo\.test: keys \['S_k'\] are not in .*Bound"):
        Metrics.of(stray)
    with pytest.raises(DataError, match=r"metrics: Metrics needs \['umap'\]"):
        Metrics.of({key: value for key, value in metrics.items() if key != "umap"})
    keys = metrics_keys()
    assert all(keys.values()) and "covariates.*.embeddings.*.ilisi" in keys and "odd_rows.*.most" in keys


def test_pictures_plots_and_report(pipeline_run):
    out = pipeline_run["paths"]["evaluation"]
    for name in ("umap/umap", "pictures/reconstructions", "pictures/samples", "pictures/traversals"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    coords = np.loadtxt(out / "umap.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    assert coords.shape == (200, 2) and np.isfinite(coords).all()
    labels = np.loadtxt(out / "umap.csv", delimiter=",", skiprows=1, usecols=2, dtype=str)
    assert set(labels) <= {str(i) for i in range(10)}
    confusion = np.loadtxt(out / "confusion.csv", delimiter=",", skiprows=1, dtype=str)
    assert confusion.shape == (360, 3)
    assert np.mean(confusion[:, 0] == confusion[:, 1]) == pytest.approx(
        pipeline_run["metrics"]["probe"]["accuracy"]
    )
    report = (out / "report.md").read_text()
    assert "## Probes" in report and "![reconstructions](pictures/reconstructions.png)" in report
    assert sorted(p.name for p in out.iterdir()) == [
        "baselines.json",
        "confusion.csv",
        "explorer.html",
        "latent_metrics.json",
        "metrics.json",
        "pictures",
        "projector",
        "report.md",
        "umap",
        "umap.csv",
        "umap.json",
    ]


def test_probes_use_one_protocol_for_every_feature_set():
    """Same rows, same C search: identical features must give identical scores under any name."""
    from pipeline.evaluation.probes import ProbeProtocol, probe_rows, probe_suite

    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.normal(size=(300, 5)) + 2 * y[:, None]
    protocol = ProbeProtocol((0.1, 1.0), 0.25, max_train=201, max_test=30, knn_k=3, seed=0)
    train, test = probe_rows(y[:240], y[240:], protocol)  # seeded, stratified caps
    assert np.bincount(y[train]).tolist() == [67, 67, 67] and np.bincount(y[240:][test]).tolist() == [
        10,
        10,
        10,
    ]
    features = (x[:240][train], x[240:][test])
    results, _ = probe_suite({"a": features, "b": features}, y[train], y[240:][test], protocol)
    assert results["a"] == results["b"] and (results["train_examples"], results["test_examples"]) == (201, 30)
    assert results["a"]["linear"]["accuracy"] > 0.8


def test_a_wide_probe_fitted_in_the_rows_span_is_the_same_model():
    """More features than rows: the L2 logistic regression's weights lie in the rows' span,
    so fitting on its coordinates (RowSpace) gives the same probabilities on new rows."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.evaluation.probes import RowSpace

    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 400)) + 0.3 * y[:, None] * rng.normal(size=400)
    x -= x[:60].mean(axis=0)  # centred on the fitted rows, as after StandardScaler
    span = RowSpace().fit(x[:60])
    assert span.basis.shape == (400, 59)  # centring takes one dimension
    np.testing.assert_allclose(span.basis.T @ span.basis, np.eye(59), atol=1e-8)
    for c in (0.01, 10.0):
        full = LogisticRegression(C=c, tol=1e-10, max_iter=20_000).fit(x[:60], y[:60])
        small = LogisticRegression(C=c, tol=1e-10, max_iter=20_000).fit(span.transform(x[:60]), y[:60])
        np.testing.assert_allclose(
            small.predict_proba(span.transform(x[60:])), full.predict_proba(x[60:]), atol=1e-5
        )
    narrow = x[:60, :20]
    assert RowSpace().fit(narrow).transform(narrow) is narrow  # fewer features than rows: unchanged


def test_sample_counts():
    assert sample_counts(1) == [1]
    assert sample_counts(100) == [1, 10, 100]
    assert sample_counts(250) == [1, 10, 100, 250]


def test_evaluate_rejects_latents_of_another_dimension(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    write_latents(tmp_path / "latents", [latent_batch("train", 5, 3), latent_batch("test", 5, 3)], 3, {})
    with pytest.raises(DataError, match="latent_dim 3, expected 4"):
        evaluate_all(
            pipeline_run["params"],
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            latents_dir=tmp_path / "latents",
            out_dir=tmp_path / "ev",
        )
    assert not (tmp_path / "ev" / "latent_metrics.json").exists()


def test_evaluate_rejects_latents_of_another_dataset(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    write_latents(
        tmp_path / "latents",
        [latent_batch("train", 5, 4), latent_batch("test", 5, 4)],
        4,
        {"dataset_fingerprint": "0" * 64},
    )
    with pytest.raises(DataError, match="encoded from another dataset"):
        evaluate_all(
            pipeline_run["params"],
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            latents_dir=tmp_path / "latents",
            out_dir=tmp_path / "ev",
        )


def test_encode_names_a_missing_or_foreign_model(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    with pytest.raises(DataError, match="model file not found"):
        encode(
            pipeline_run["params"],
            prepared_dir=paths["prepared"],
            model_path=tmp_path / "none.keras",
            out_dir=tmp_path / "l",
        )
    with pytest.raises(DataError, match="expected a saved VAE, got Functional"):
        encode(
            pipeline_run["params"],
            prepared_dir=paths["prepared"],
            model_path=paths["model_dir"] / "encoder.keras",
            out_dir=tmp_path / "l",
        )
    assert not (tmp_path / "l").exists()
