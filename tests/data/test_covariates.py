"""Covariates (data.covariates): typed, checked, stored after x and left out of its features;
p(x|z, c) exact on a linear-Gaussian model with batch offsets; an .h5ad with batches end to
end (latents carry the covariates, new data needs them); batch mixing's math."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.data.covariates import covariate_codes, type_covariates
from pipeline.evaluation.mixing import clisi, ilisi, lisi, silhouette_batch
from pipeline.platform.errors import ConfigError, DataError
from pipeline.platform.params.load import parse_params
from tests.builders import LinearGaussian, make_cells, np_


def test_the_typing_rule_and_one_error_naming_every_problem():
    values = {
        "site": np.array(["a", "b", "a", "c"], dtype=object),
        "run": np.array([1.0, 2.0, 1.0, 2.0]),
        "age": np.array([20.5, 31.0, 40.25, 60.0]),
    }
    train = np.array([True, True, True, False])
    site, run, age = type_covariates("t.csv", values, train)
    assert (site.type, site.levels, run.type, run.levels) == (
        "categorical",
        ["a", "b", "c"],
        "categorical",
        [1, 2],
    )
    assert age.type == "real" and age.offset == pytest.approx(np.mean([20.5, 31.0, 40.25]))  # train rows only
    assert age.scale == pytest.approx(np.std([20.5, 31.0, 40.25]))
    codes = covariate_codes(
        "new.csv",
        {
            "site": np.array(["c", "a"], dtype=object),
            "run": np.array([2.0, 1.0]),
            "age": np.array([1.0, 2.0]),
        },
        (site, run, age),
    )
    np.testing.assert_array_equal(codes, [[2, 1, 1], [0, 0, 2]])
    with pytest.raises(
        DataError,
        match=r"new.csv: covariate 'site' holds 'z', a level never seen in training "
        r"\(its levels: \['a', 'b', 'c'\]\)",
    ):
        covariate_codes("new.csv", {"site": np.array(["z"], dtype=object)}, (site,))
    broken = {"donor": np.array(["x", None, "y", None], dtype=object), "lab": np.array([3.0, 3.0, 3.0, 3.0])}
    with pytest.raises(
        DataError,
        match=r"t.csv: data.covariates: 'donor' has no value for 2 of 4 examples .*; "
        r"'lab' takes one value \(3\) in every example: nothing to correct for",
    ):
        type_covariates("t.csv", broken, train)


def _table(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
    frame["label"] = np.where(np.arange(n) % 2, "yes", "no")
    frame["site"] = np.array(["north", "south", "east"])[np.arange(n) % 3]
    frame["age"] = rng.uniform(20, 80, n)
    frame.to_csv(path, index=False)
    return frame


def _data(path, source="table", **data):
    return parse_params({"data": {"source": source, "path": str(path), **data}}).data


def test_a_tables_covariates_are_stored_after_x_and_left_out_of_its_features(tmp_path):
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_splits

    frame = _table(tmp_path / "t.csv")
    manifest = prepare(_data(tmp_path / "t.csv", covariates=["site", "age"]), 0, tmp_path / "prepared")
    assert [c.name for c in manifest.columns] == [f"f{i}" for i in range(6)]  # not features
    assert [(c.name, c.type) for c in manifest.covariates] == [("site", "categorical"), ("age", "real")]
    assert (
        manifest.example_shape == [6 + 2]
        and manifest.input_shape == [6 + 3 + 1]
        and manifest.feature_shape == [6]
    )
    assert manifest.choices["data.covariates.site"]["value"] == "categorical"
    assert manifest.choices["data.table.column_types.site"]["why"] == "a covariate (data.covariates)"
    _, splits = load_splits(tmp_path / "prepared")
    train = splits["train"]
    inputs = train.inputs(slice(None))
    site = frame["site"].to_numpy()[train.id]
    np.testing.assert_array_equal(
        inputs[:, 6:9], (site[:, None] == np.array(["east", "north", "south"])) * 1.0
    )
    age = frame["age"].to_numpy()[train.id]
    # standardized on train
    np.testing.assert_allclose(inputs[:, 9], (age - age.mean()) / age.std(), atol=1e-5)
    json_manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert json_manifest["covariates"][0]["levels"] == ["east", "north", "south"]


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"covariates": ["label"]},
            r"data.covariates: 'label' is data.table.label_column; a covariate is neither",
        ),
        (
            {"covariates": ["sites"]},
            r"t.csv: data.covariates names \['sites'\], not columns of the table; .* "
            r"\(did you mean \['site'\]\?\)",
        ),
        ({"covariates": ["site"], "source": "digits"}, r"digits examples have no per-example columns"),
    ],
)
def test_covariates_the_data_cannot_give_are_one_clear_error(tmp_path, data, message):
    from pipeline.data.prepare import prepare

    _table(tmp_path / "t.csv")
    with pytest.raises(DataError, match=message):
        prepare(_data(tmp_path / "t.csv", **data), 0, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_a_vampprior_cannot_encode_covariates():
    with pytest.raises(ConfigError, match=r"model.prior 'vamp' .* needs model.encode_covariates: false"):
        parse_params(
            {"data": {"covariates": ["batch"]}, "model": {"prior": "vamp", "encode_covariates": True}}
        )


def test_a_linear_gaussian_model_with_batch_offsets_is_exact():
    """p(z) = N(0, I), p(x|z, c) = N(Wz + b + o_c, σ²I): p(x|c) = N(b + o_c, WWᵀ + σ²I) and the
    exact posterior is Gaussian, its mean linear in x and in c's one-hot. A VAE whose decoder and
    encoder (reading c) hold those maps has q = p(z|x, c), so every importance weight is p(x|c):
    S_K of each row is the exact surprisal given its batch, and given another batch it moves."""
    from pipeline.model.diagnostics import RowSurprisal
    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import resolve_model

    model = LinearGaussian(n=5, d=2, sigma=0.5)
    offsets = np.random.default_rng(3).normal(0, 2, size=(3, 5))  # o_c for three batches
    params = parse_params(
        {
            "model": {
                "hidden": [],
                "latent_dim": 2,
                "likelihood": "gaussian",
                "sigma": 0.5,
                "encode_covariates": True,
            },
            "loss": {"free_bits": 0.0},
        }
    )
    resolved, _ = resolve_model(params.model, (5,), (-3.0, 3.0), covariates=3)
    vae = build_vae((5,), resolved, params.loss, seed=0)
    vae.decoder.get_layer("params").set_weights(
        [np.vstack([model.W.T, offsets]).astype(np.float32), model.b.astype(np.float32)]
    )
    cov = np.linalg.inv(np.eye(2) + model.W.T @ model.W / 0.25)  # diagonal by construction
    gain = cov @ model.W.T / 0.25  # μ = gain (x − b − o_c)
    vae.encoder.get_layer("z_mean").set_weights(
        [np.vstack([gain.T, -(offsets @ gain.T)]).astype(np.float32), (-gain @ model.b).astype(np.float32)]
    )
    vae.encoder.get_layer("z_log_var").set_weights(
        [np.zeros((8, 2), np.float32), np.log(np.diag(cov)).astype(np.float32)]
    )
    rng = np.random.default_rng(0)
    batch = np.array([0, 1, 2, 1])
    x = model.b + offsets[batch] + rng.normal(size=(4, 2)) @ model.W.T + 0.5 * rng.normal(size=(4, 5))
    inputs = np.hstack([x, np.eye(3)[batch]]).astype(np.float32)
    exact = [
        -stats.multivariate_normal(model.b + offsets[c], model.W @ model.W.T + 0.25 * np.eye(5)).logpdf(row)
        for row, c in zip(x, batch)
    ]
    np.testing.assert_allclose(RowSurprisal(vae, 10)(inputs), exact, rtol=1e-4)
    terms = vae.sample_posterior(inputs, samples=20_000)
    u = np_(terms["kl"]) + np_(terms["reconstruction"]).mean(axis=0)  # U = S: no gap; Monte Carlo error ~0.01
    np.testing.assert_allclose(u, exact, atol=0.05)
    shifted = np.hstack([x, np.eye(3)[(batch + 1) % 3]]).astype(np.float32)
    # given the wrong batch, x surprises
    assert np.all(RowSurprisal(vae, 10)(shifted) > np.array(exact) + 1.0)


def _scib_lisi(x, groups, k=90, perplexity=30.0):
    """scib-metrics 0.5's LISI as written there (one row at a time, exp(-dβ) unshifted)."""
    from sklearn.neighbors import NearestNeighbors

    distance, index = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    out = []
    for i in range(len(x)):
        d, mask = distance[i], index[i] != i
        beta, low, high = 1.0, -np.inf, np.inf

        def entropy(beta, d=d, mask=mask):
            p = np.where(mask, np.exp(-d * beta), 0.0)
            total = p.sum()
            return np.log(total) + beta * np.sum(d * p) / total, p / total

        h, p = entropy(beta)
        for _ in range(50):
            if abs(h - np.log(perplexity)) < 1e-5:
                break
            if h > np.log(perplexity):
                low, beta = beta, beta * 2 if np.isinf(high) else (beta + high) / 2
            else:
                high, beta = beta, beta / 2 if np.isinf(low) else (beta + low) / 2
            h, p = entropy(beta)
        out.append(1 / np.sum(np.bincount(groups[index[i]], weights=p) ** 2))
    return np.array(out)


def test_lisi_is_scib_metrics_and_mixing_reads_as_it_should():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    batch = rng.integers(0, 2, 400)
    np.testing.assert_allclose(lisi(x, batch), _scib_lisi(x, batch), rtol=1e-4)
    assert ilisi(x, batch) > 0.9  # batches drawn alike: mixed
    labels = rng.integers(0, 2, 400)
    assert silhouette_batch(x, batch, labels) > 0.95
    apart = x + 20.0 * batch[:, None]
    assert ilisi(apart, batch) < 0.01 and silhouette_batch(apart, batch, labels) < 0.3
    assert clisi(apart, batch) > 0.99  # read as labels: each neighbourhood holds one


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    """prepare -> train -> encode -> evaluate on cells in two batches, in this process."""
    from pipeline import runner

    root = tmp_path_factory.mktemp("batched")
    make_cells(root / "cells.h5ad", n=400)
    params = parse_params(
        {
            "data": {
                "source": "anndata",
                "path": str(root / "cells.h5ad"),
                "covariates": ["batch"],
                "anndata": {"label_key": "cell_type"},
            },
            "model": {"latent_dim": 4},
            "train": {"epochs": 5},
            "evaluate": {
                "importance_samples": 10,
                "surprisal_examples": 100,
                "gradient_variance": {"repeats": 4},
            },
        }
    )
    return {"root": root, **runner.run_all(params, root)}


def test_an_h5ad_with_batches_runs_end_to_end_and_its_latents_carry_them(batched_run):
    import anndata as ad
    import duckdb
    import polars as pl

    from pipeline.latents.parquet import read_metadata

    obs = ad.read_h5ad(batched_run["root"] / "cells.h5ad").obs
    latents = batched_run["paths"]["latents"]
    frame = pd.read_parquet(latents)
    assert [row["batch"] for row in frame["covariates"]] == obs["batch"].to_numpy()[frame["id"]].tolist()
    through_duckdb = duckdb.sql(
        f"SELECT id, covariates.batch AS b FROM '{latents}/*/*.parquet' ORDER BY id"
    ).df()
    assert through_duckdb["b"].tolist() == obs["batch"].tolist()
    assert (
        pl.read_parquet(latents / "split=test" / "part-0.parquet")["covariates"].struct.field("batch").dtype
        == pl.Int64
    )
    meta = read_metadata(latents / "split=test" / "part-0.parquet")
    assert (
        meta["covariates"]["columns"][0]["levels"] == [0, 1]
        and meta["covariates"]["encoder_reads_them"] is False
    )
    assert "covariates" in meta["columns"]
    figures = batched_run["metrics"]["covariates"]["batch"]
    assert set(figures["embeddings"]) == {"latent", "raw", "pca", "pca_per_batch"}
    for name, f in figures["embeddings"].items():
        assert 0 <= f["ilisi"] <= 1 and 0 <= f["clisi"] <= 1 and 0 <= f["covariate_probe"] <= 1, name
    evaluation = batched_run["paths"]["evaluation"]
    report = (evaluation / "report.md").read_text()
    assert "## Covariates: the batch gone, the label kept?" in report and "(umap/covariate_0.png)" in report
    assert (evaluation / "umap" / "covariate_0.png").stat().st_size > 1000
    page = (evaluation / "explorer.html").read_text()
    assert "batch (covariate)" in page and "c_covariate_0" in page


def test_new_data_needs_the_covariates_the_model_was_trained_with(batched_run, tmp_path):
    import anndata as ad

    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.reader import latents_to_numpy, load_latents

    model, cells = batched_run["paths"]["model"], batched_run["root"] / "cells.h5ad"
    assert encode_new_data(model, cells, tmp_path / "out") == 400
    new = load_latents(tmp_path / "out", split="new").to_pandas().sort_values("id")
    stage = pd.read_parquet(batched_run["paths"]["latents"]).set_index("id").sort_index()
    np.testing.assert_allclose(np.stack(new["z_mean"]), np.stack(stage["z_mean"]), rtol=1e-5, atol=1e-5)
    assert [r["batch"] for r in new["covariates"]] == [r["batch"] for r in stage["covariates"]]
    assert latents_to_numpy(load_latents(tmp_path / "out", split="new")).shape == (400, 4)
    adata = ad.read_h5ad(cells)
    adata.obs.loc[adata.obs.index[5], "batch"] = 7
    adata.write_h5ad(tmp_path / "unseen.h5ad")
    with pytest.raises(
        DataError, match=r"unseen.h5ad: covariate 'batch' holds 7, a level never seen in training"
    ):
        encode_new_data(model, tmp_path / "unseen.h5ad", tmp_path / "out2")
    del adata.obs["batch"]
    adata.write_h5ad(tmp_path / "without.h5ad")
    with pytest.raises(DataError, match=r"without.h5ad: data.covariates names \['batch'\], not obs columns"):
        encode_new_data(model, tmp_path / "without.h5ad", tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_data_without_covariates_keeps_its_outputs_as_they_were(pipeline_run):
    import pyarrow.parquet as pq

    manifest = json.loads((pipeline_run["paths"]["prepared"] / "manifest.json").read_text())
    assert "covariates" not in manifest
    schema = pq.read_schema(pipeline_run["paths"]["latents"] / "split=test" / "part-0.parquet")
    assert "covariates" not in schema.names and b"vae_pipeline.covariates" not in schema.metadata
    assert "covariates" not in pipeline_run["metrics"]


def test_a_counterfactual_decode_reads_the_batch_it_is_given(batched_run):
    """decoded_means with as_if's inputs: rows of batch 0 decoded "as if from batch 0" are their
    own decode; as if from batch 1, another one; a level the model never saw is refused."""
    import keras

    from pipeline.data.covariates import as_if
    from pipeline.data.prepared import load_splits
    from pipeline.latents.imputation import decoded_means

    manifest, splits = load_splits(batched_run["paths"]["prepared"])
    vae = keras.saving.load_model(batched_run["paths"]["model"])
    inputs = splits["test"].inputs(slice(0, 60))
    z, own = np.asarray(vae.predict_posterior(inputs)[0]), vae.split(inputs)[1]
    first = np.asarray(splits["test"].x[:60])[:, -1] == 0
    preprocess = splits["test"].preprocess
    as_first = decoded_means(vae, z, c=as_if(manifest.covariates, preprocess, 60, batch=0))
    np.testing.assert_allclose(as_first[first], decoded_means(vae, z, c=own)[first], rtol=1e-5)
    as_second = decoded_means(vae, z, c=as_if(manifest.covariates, preprocess, 60, batch=1))
    assert np.abs(np.log1p(as_second) - np.log1p(as_first)).mean() > 1e-3
    with pytest.raises(DataError, match=r"covariate 'batch' holds 5, a level never seen in training"):
        as_if(manifest.covariates, preprocess, 3, batch=5)


def test_a_table_with_a_site_and_an_age_runs_end_to_end(tmp_path):
    """Only the data keys and data.covariates set: the latents carry the site (text) and the age
    (a number); the figures are of the categorical site alone."""
    import pyarrow.parquet as pq

    from pipeline import runner

    frame = _table(tmp_path / "t.csv", n=200)
    params = parse_params(
        {
            "data": {"source": "table", "path": str(tmp_path / "t.csv"), "covariates": ["site", "age"]},
            "model": {"latent_dim": 4},
            "train": {"epochs": 3},
            "evaluate": {
                "importance_samples": 10,
                "surprisal_examples": 40,
                "gradient_variance": {"repeats": 2},
            },
        }
    )
    run = runner.run_all(params, tmp_path / "run")
    table = pq.read_table(run["paths"]["latents"] / "split=train" / "part-0.parquet")
    assert str(table.schema.field("covariates").type) == "struct<site: string, age: double>"
    rows = table.to_pylist()
    assert all(row["covariates"]["site"] == frame["site"][row["id"]] for row in rows)
    np.testing.assert_allclose(
        [row["covariates"]["age"] for row in rows], frame["age"][table["id"].to_numpy()], rtol=1e-6
    )
    assert list(run["metrics"]["covariates"]) == ["site"]


def test_an_npz_covariate_needs_one_value_per_example(tmp_path):
    from pipeline.data.prepare import prepare

    x = np.random.default_rng(0).normal(size=(50, 10)).astype(np.float32)
    np.savez(
        tmp_path / "a.npz", x=x, y=np.arange(50) % 2, batch=np.arange(40) % 2, site=np.array(["a", "b"] * 25)
    )
    with pytest.raises(
        DataError,
        match=r"a.npz: each covariate needs one value per example \(50\); 'batch' has shape "
        r"\[40\]",
    ):
        prepare(_data(tmp_path / "a.npz", source="npz", covariates=["batch"]), 0, tmp_path / "prepared")
    manifest = prepare(_data(tmp_path / "a.npz", source="npz", covariates=["site"]), 0, tmp_path / "prepared")
    assert manifest.covariates[0].levels == ["a", "b"] and manifest.example_shape == [11]


def test_mixing_says_none_where_a_figure_cannot_be_had():
    from pipeline.evaluation.mixing import mixing
    from pipeline.evaluation.probes import ProbeProtocol
    from pipeline.platform.params.config import ProbeConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    protocol = ProbeProtocol.of(ProbeConfig(), knn_k=5, seed=0)
    one_batch = mixing((x, x), (np.zeros(200, int), np.zeros(200, int)), None, protocol)
    assert one_batch == {"ilisi": None, "covariate_probe": None}
    rare = np.r_[np.zeros(197, int), np.ones(3, int)]  # 3 rows of a level: too few to probe
    assert mixing((x, x), (rare, rare), None, protocol)["covariate_probe"] is None
