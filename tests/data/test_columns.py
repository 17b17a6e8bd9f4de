"""Your data as it really is: typed table columns, missing cells, counts, colour images.

The likelihood families against scipy, the masked model against the exact linear-Gaussian
answer for the observed part, and prepare on generated tables of every column type.
"""

import json

import numpy as np
import pytest
from scipy import special, stats

from pipeline.model import subo
from pipeline.model.likelihoods import Bernoulli, Categorical, Columns, Gaussian, NegativeBinomial, Poisson
from pipeline.platform.errors import DataError
from pipeline.platform.params.load import parse_params
from tests.builders import (
    LinearGaussian,
    files_of,
    gaussian_kl,
    make_image_folder,
    make_mixed_table,
    np_,
    table_config,
)

RNG = np.random.default_rng(0)


# --- the families ---------------------------------------------------------------------


def test_categorical_surprisal_is_minus_log_softmax_of_the_level():
    logits = RNG.normal(size=(3, 5, 4))  # (m, B, levels)
    levels = RNG.integers(0, 4, size=5)
    x = np.eye(4)[levels]
    expected = -np.log(special.softmax(logits, axis=-1)[:, np.arange(5), levels])
    np.testing.assert_allclose(np_(Categorical().per_column(x, logits)), expected, rtol=1e-6)
    assert (np_(Categorical().per_column(x, 30 * logits)) >= 0).all()  # a mass: S ≥ 0


def test_negative_binomial_and_poisson_match_scipy():
    counts = RNG.integers(0, 40, size=(6, 3)).astype(np.float64)
    log_mean = RNG.normal(1.5, 1.0, size=(6, 3))
    r = RNG.uniform(0.2, 5.0, size=3)
    mean = np.exp(log_mean)
    expected = -stats.nbinom(r, r / (r + mean)).logpmf(counts)
    np.testing.assert_allclose(np_(NegativeBinomial().per_feature(counts, log_mean, r)), expected, rtol=1e-5)
    np.testing.assert_allclose(
        np_(Poisson().per_feature(counts, log_mean)), -stats.poisson(mean).logpmf(counts), rtol=1e-5
    )
    extreme = np_(NegativeBinomial().per_feature(counts, 25 * log_mean, np.full(3, 1e-3)))
    assert np.isfinite(extreme).all() and (extreme >= -1e-6).all()  # a mass: S ≥ 0, even at extremes


def _mixed():
    """A row layout: 2 real, 1 binary, a categorical of 3 levels, 2 counts (F = 8)."""
    groups = [("gaussian", 0, 2), ("bernoulli", 2, 1), ("categorical", 3, 3), ("negative_binomial", 6, 2)]
    x = np.array([[0.3, -1.2, 1.0, 0, 1, 0, 3.0, 0.0], [1.1, 0.4, 0.0, 0, 0, 1, 0.0, 12.0]])
    params = RNG.normal(size=(4, 2, 8))  # (m, B, F)
    sigma, r = np.array([0.5, 2.0] + [1.0] * 6), np.full(8, 1.7)
    return Columns(groups, lambda: sigma, lambda: r), x, params, sigma, r


def test_the_composite_is_the_sum_of_its_parts():
    likelihood, x, params, sigma, r = _mixed()
    parts = (
        np_(Gaussian(lambda: sigma[:2]).surprisal(x[:, :2], params[..., :2]))
        + np_(Bernoulli().surprisal(x[:, 2:3], params[..., 2:3]))
        + np_(Categorical().per_column(x[:, 3:6], params[..., 3:6]))
        + np_(NegativeBinomial().per_feature(x[:, 6:], params[..., 6:], r[6:])).sum(-1)
    )
    np.testing.assert_allclose(np_(likelihood.surprisal(x, params)), parts, rtol=1e-6)
    columns = np_(likelihood.per_column(x, params))  # one term per table column, in order
    assert columns.shape == (4, 2, 6)
    second = np_(Gaussian(lambda: sigma[1:2]).surprisal(x[:, 1:2], params[..., 1:2]))
    np.testing.assert_allclose(columns[..., 1], second, rtol=1e-6)
    np.testing.assert_allclose(
        columns[..., 3], np_(Categorical().per_column(x[:, 3:6], params[..., 3:6])), rtol=1e-6
    )
    np.testing.assert_allclose(columns.sum(-1), parts, rtol=1e-6)


def test_a_missing_cell_drops_its_factor_and_nothing_else():
    likelihood, x, params, sigma, r = _mixed()
    holed = x.copy()
    holed[0, 1] = np.nan  # a real cell
    holed[1, 3:6] = np.nan  # a categorical column
    full = np_(likelihood.surprisal(x, params))
    gaussian_1 = np_(Gaussian(lambda: sigma[1:2]).surprisal(x[:1, 1:2], params[:, :1, 1:2]))[:, 0]
    category_1 = np_(Categorical().per_column(x[1:, 3:6], params[:, 1:, 3:6]))[:, 0]
    np.testing.assert_allclose(
        np_(likelihood.surprisal(holed, params)), full - np.stack([gaussian_1, category_1], axis=1), rtol=1e-6
    )
    columns = np_(likelihood.per_column(holed, params))
    assert (columns[:, 0, 1] == 0).all() and (columns[:, 1, 3] == 0).all() and (columns[:, 0, 3] != 0).all()
    means = np_(likelihood.mean(params))
    np.testing.assert_allclose(means[..., 3:6].sum(-1), 1.0, rtol=1e-6)  # a categorical's probabilities
    assert (means[..., 6:] > 0).all() and ((means[..., 2] > 0) & (means[..., 2] < 1)).all()


# --- the masked model against the exact answer ---------------------------------------


class MaskedLinearGaussian(LinearGaussian):
    """LinearGaussian with entries of x missing: S and p(z|x_obs) of the observed part."""

    def __init__(self, missing, seed=1, **kwargs):
        super().__init__(seed=seed, **kwargs)
        rng = np.random.default_rng(seed + 1)
        o = self.observed = np.setdiff1d(np.arange(len(self.x)), missing)
        # The observed rows of W as LinearGaussian builds all of them: p(z|x_obs) is diagonal.
        q, _ = np.linalg.qr(rng.normal(size=(len(o), 2)))
        self.W[o] = (self.sigmas[o] / self.sigmas[o].min())[:, None] * q * np.array([2.0, 0.7])
        self.W[missing] = rng.normal(size=(len(missing), 2))
        self.x = self.b + self.W @ rng.normal(size=2) + self.sigmas * rng.normal(size=len(self.x))
        self.x_holed = self.x.copy()
        self.x_holed[missing] = np.nan

    def likelihood(self):
        return Columns(
            [("gaussian", 0, len(self.x))], self.sigma if np.isscalar(self.sigma) else lambda: self.sigmas
        )

    def surprisal(self):
        o = self.observed
        cov = self.W[o] @ self.W[o].T + np.diag(self.sigmas[o] ** 2)
        return -stats.multivariate_normal(self.b[o], cov).logpdf(self.x[o])

    def posterior(self):
        o = self.observed
        precision = np.diag(self.sigmas[o] ** -2.0)
        cov = np.linalg.inv(np.eye(self.W.shape[1]) + self.W[o].T @ precision @ self.W[o])
        return cov @ self.W[o].T @ precision @ (self.x[o] - self.b[o]), cov

    def log_weights(self, q_mean, q_var, samples):
        """log p(x_obs, z_k)/q(z_k | x) through the pipeline's Columns likelihood, and U's samples."""
        z_mean, z_log_var = q_mean[None], np.log(q_var)[None]
        z = np_(subo.reparameterize(z_mean, z_log_var, RNG.normal(size=(samples, 1, len(q_mean)))))
        reconstruction = np_(self.likelihood().surprisal(self.x_holed[None], z @ self.W.T + self.b))
        log_w = np_(
            subo.log_importance_weights(
                reconstruction,
                subo.standard_normal_log_density(z),
                subo.gaussian_log_density(z, z_mean, z_log_var),
            )
        )
        return log_w[:, 0], np_(subo.kl_to_prior(z_mean, z_log_var))[0] + reconstruction[:, 0]


@pytest.mark.parametrize("sigma", [0.5, np.array([0.3, 0.5, 0.8, 1.2, 0.4])], ids=["fixed", "per_feature"])
def test_the_masked_model_bounds_the_surprisal_of_the_observed_part(sigma):
    model = MaskedLinearGaussian(missing=[1, 3], sigma=sigma)
    s_obs = model.surprisal()
    assert abs(s_obs - LinearGaussian.surprisal(model)) > 1.0  # not the whole vector's S
    post_mean, post_cov = model.posterior()
    log_w, _ = model.log_weights(post_mean, np.diag(post_cov), 50)
    np.testing.assert_allclose(-log_w, s_obs, rtol=1e-9)  # the exact posterior: every weight is p(x_obs)
    q_mean, q_var = np.array([0.8, -0.6]), np.array([0.3, 2.0])  # a poor q
    log_w, u_samples = model.log_weights(q_mean, q_var, 400_000)
    kl = gaussian_kl(q_mean, np.diag(q_var), post_mean, post_cov)
    # U − S = KL(q ‖ p(z|x_obs))
    assert abs(u_samples.mean() - s_obs - kl) < 4 * u_samples.std() / np.sqrt(len(u_samples))
    s_k = np_(subo.importance_weighted_surprisal(log_w.reshape(400, 1000).T))  # 400 runs of K = 1000
    noise = 4 * s_k.std() / np.sqrt(len(s_k))
    assert s_k.mean() >= s_obs - noise and s_k.mean() - s_obs < 0.1 * kl  # S_K → S of the observed part


# --- tables as they are --------------------------------------------------------------


MIXED_TYPES = {
    "island": "categorical",
    "sex": "binary",
    "bill": "real",
    "mass": "real",
    "year": "real",
    "eggs": "count",
    "alive": "binary",
}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_mixed_table_is_typed_coded_and_masked(tmp_path, suffix):
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_split

    make_mixed_table(tmp_path / f"t{suffix}")
    manifest = prepare(table_config(tmp_path / f"t{suffix}"), seed=0, out_dir=tmp_path / "p")
    assert {c.name: c.type for c in manifest.columns} == MIXED_TYPES
    assert manifest.value_type == "columns" and manifest.input_shape == [9]  # island: 3 one-hot features
    assert manifest.choices["data.table.column_types.eggs"]["why"].startswith("non-negative integers from 0")
    missing = {c.name: c.missing for c in manifest.columns}
    assert 0.02 < missing["island"] < 0.09 and 0.05 < missing["bill"] < 0.16 and missing["mass"] == 0
    assert next(c for c in manifest.columns if c.name == "island").levels == ["Biscoe", "Dream", "Torgersen"]
    split = load_split(tmp_path / "p", "train")
    x, codes = split.inputs(), np.asarray(split.x)
    island = x[:, 0:3]
    gone = np.isnan(codes[:, 0])
    assert np.isnan(island[gone]).all() and (island[~gone].sum(axis=1) == 1).all()  # one-hot, or all NaN
    np.testing.assert_array_equal(island[~gone].argmax(axis=1), codes[~gone, 0])
    bill = x[:, 4]
    assert abs(np.nanmean(bill)) < 1e-5 and abs(np.nanstd(bill) - 1) < 1e-4  # standardized, NaN kept
    eggs = x[:, 7]
    np.testing.assert_array_equal(eggs[np.isfinite(eggs)], codes[np.isfinite(eggs), 5])  # counts as they are


def test_chunking_changes_no_byte_of_a_mixed_table(tmp_path):
    from pipeline.data.prepare import prepare

    make_mixed_table(tmp_path / "t.parquet")
    one = prepare(table_config(tmp_path / "t.parquet"), seed=0, out_dir=tmp_path / "one", step=10**9)
    tiny = prepare(table_config(tmp_path / "t.parquet"), seed=0, out_dir=tmp_path / "tiny", step=7)
    assert one == tiny and files_of(tmp_path / "one") == files_of(tmp_path / "tiny")


def test_column_types_can_be_overridden_and_impossible_ones_are_named(tmp_path):
    from pipeline.data.prepare import prepare

    make_mixed_table(tmp_path / "t.csv")
    manifest = prepare(
        table_config(tmp_path / "t.csv", column_types={"eggs": "real", "year": "categorical"}),
        seed=0,
        out_dir=tmp_path / "p",
    )
    types = {c.name: c.type for c in manifest.columns}
    assert types["eggs"] == "real" and types["year"] == "categorical" and manifest.input_shape == [11]
    assert manifest.choices["data.table.column_types.year"]["why"] == "set in params.yaml"
    for given, message in [
        (
            {"island": "count"},
            r"column_types.island is 'count', but count needs non-negative "
            r"whole numbers; it holds string values",
        ),
        ({"bill": "binary"}, r"column_types.bill is 'binary', but binary needs at most two"),
        ({"sex": "real"}, r"column_types.sex is 'real', but real needs numbers"),
        ({"weight": "real"}, r"column_types names \['weight'\], not feature columns"),
    ]:
        with pytest.raises(DataError, match=message):
            prepare(table_config(tmp_path / "t.csv", column_types=given), seed=0, out_dir=tmp_path / "p")
    assert json.loads((tmp_path / "p" / "manifest.json").read_text()) == manifest.to_dict()  # kept


def test_a_row_without_any_value_is_named(tmp_path):
    import pandas as pd

    from pipeline.data.prepare import prepare

    frame = pd.DataFrame(
        {"a": [1.0, np.nan, 3.0, 4.0], "b": [1.0, np.nan, 2.0, 5.0], "label": ["x", "y", "x", "y"]}
    )
    frame.to_csv(tmp_path / "empty_row.csv", index=False)
    with pytest.raises(DataError, match=r"row 1 has no value in any feature column"):
        prepare(
            table_config(tmp_path / "empty_row.csv", label_column="label"), seed=0, out_dir=tmp_path / "p"
        )
    assert not (tmp_path / "p").exists()


# --- colour, unlabelled arrays -------------------------------------------------------


def test_colour_images_keep_their_colour_and_grey_ones_stay_grey_by_default(tmp_path):
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_split

    make_image_folder(tmp_path / "rgb", mode="RGB")
    make_image_folder(tmp_path / "grey", mode="L")
    config = parse_params({"data": {"source": "image_folder", "path": str(tmp_path / "rgb")}}).data
    assert config.images.color == "auto"
    colour = prepare(config, seed=0, out_dir=tmp_path / "c")
    assert colour.example_shape == [10, 12, 3] and colour.choices["data.images.color"]["value"] == "rgb"
    grey = prepare(
        parse_params({"data": {"source": "image_folder", "path": str(tmp_path / "grey")}}).data,
        seed=0,
        out_dir=tmp_path / "g",
    )
    assert grey.example_shape == [10, 12, 1] and grey.choices["data.images.color"]["why"].startswith(
        "every pixel"
    )
    prepare(
        parse_params(
            {"data": {"source": "image_folder", "path": str(tmp_path / "grey"), "images": {"color": "grey"}}}
        ).data,
        seed=0,
        out_dir=tmp_path / "e",
    )
    np.testing.assert_array_equal(
        load_split(tmp_path / "g", "train").x, load_split(tmp_path / "e", "train").x
    )


def test_an_unlabelled_npz_error_says_how_to_declare_it(tmp_path):
    from pipeline.data.prepare import prepare

    np.savez(tmp_path / "x.npz", x=np.zeros((10, 3)))
    with pytest.raises(
        DataError,
        match=r"no array named 'y'; it holds \['x'\]; data without labels takes "
        r"data.npz.y_key: null",
    ):
        prepare(
            parse_params({"data": {"source": "npz", "path": str(tmp_path / "x.npz")}}).data, 0, tmp_path / "p"
        )


def test_a_count_matrix_resolves_to_counts_and_pixels_do_not(tmp_path):
    from pipeline.data.prepare import prepare
    from pipeline.model.resolve_model import resolve_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "counts.npz", x=rng.poisson(3.0, size=(60, 5)), y=np.arange(60) % 2)
    manifest = prepare(
        parse_params({"data": {"source": "npz", "path": str(tmp_path / "counts.npz")}}).data,
        seed=0,
        out_dir=tmp_path / "p",
    )
    assert (manifest.value_type, manifest.scaling) == ("count", "none")
    model, choices = resolve_model(
        parse_params({}).model,
        manifest.input_shape,
        manifest.value_range,
        manifest.value_type,
        manifest.columns,
    )
    assert model.likelihood == "columns" and model.groups == (("negative_binomial", 0, 5),)
    assert model.log1p_features == (0, 1, 2, 3, 4) and model.mask_features == ()
    np.savez(
        tmp_path / "pixels.npz", x=rng.integers(0, 256, size=(60, 4, 4), dtype=np.uint8), y=np.arange(60) % 2
    )
    pixels = prepare(
        parse_params({"data": {"source": "npz", "path": str(tmp_path / "pixels.npz")}}).data,
        seed=0,
        out_dir=tmp_path / "q",
    )
    assert pixels.value_type == "pixels"


def test_a_count_matrix_with_the_data_keys_only_learns_without_collapse(tmp_path):
    """Counts of a low-rank negative binomial model, 3 classes, with only data.* set (and a
    shorter training), through every stage: one likelihood per column, no collapse, and
    latents that separate the classes."""
    from pipeline import runner

    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    log_mean = 1.0 + (rng.normal(size=(300, 2)) + np.array([[2, 0], [-1, 1.5], [-1, -1.5]])[y]) @ rng.normal(
        scale=0.7, size=(2, 30)
    )
    np.savez(tmp_path / "counts.npz", x=rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(log_mean))), y=y)
    params = parse_params(
        {
            "data": {"source": "npz", "path": str(tmp_path / "counts.npz")},
            "train": {"epochs": 12},
            "model": {"latent_dim": 4},
            "evaluate": {
                "importance_samples": 5,
                "surprisal_examples": 50,
                "gradient_variance": {"repeats": 3, "batch_size": 16},
            },
        }
    )
    run = runner.run_all(params, tmp_path)
    manifest, metrics = run["manifest"], run["metrics"]
    assert manifest.example_shape == [30]
    assert (
        json.loads((tmp_path / "model" / "choices.json").read_text())["model.likelihood"]["value"]
        == "columns"
    )
    assert metrics["active_units"]["count"] >= 2
    assert metrics["probe"]["accuracy"] > metrics["baselines"]["majority_class_accuracy"] + 0.1


# --- a mixed table through the pipeline ---------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """prepare -> train -> encode -> evaluate on a mixed table with missing cells, in process."""
    from pipeline import runner

    root = tmp_path_factory.mktemp("mixed")
    make_mixed_table(root / "t.csv", n=400)
    params = parse_params(
        {
            "data": {"source": "table", "path": str(root / "t.csv"), "table": {"label_column": "species"}},
            "train": {"epochs": 30},
            "encode": {"batch_size": 128},
            "evaluate": {"importance_samples": 10, "gradient_variance": {"repeats": 4}},
        }
    )
    return {"root": root, **runner.run_all(params, root)}


def test_a_mixed_table_trains_with_one_likelihood_per_column(mixed_run):
    import keras

    import pipeline.model.vae  # noqa: F401 - registers the layers

    choices = json.loads((mixed_run["root"] / "model" / "choices.json").read_text())
    assert choices["model.likelihood"]["value"] == "columns"
    assert choices["data.table.column_types.eggs"]["value"] == "count"
    assert np.isfinite(mixed_run["history"]["U"]) and mixed_run["history"]["D"] > 0.5
    vae = keras.saving.load_model(mixed_run["paths"]["model"])
    assert [g[0] for g in vae.likelihood.groups] == [
        "categorical",
        "bernoulli",
        "gaussian",
        "negative_binomial",
        "bernoulli",
    ]
    assert vae.encoder.inputs[0].shape[-1] == 9 + 7  # the features, and an observed flag per column
    metrics = mixed_run["metrics"]
    assert metrics["active_units"]["count"] >= 2 and np.isfinite(metrics["subo"]["test"]["S_K"]["10"])
    baselines = metrics["baselines"]
    assert baselines["raw"]["dim"] == 9 + 4  # imputed features, and the 4 columns with missing cells flagged


def test_a_table_rows_most_surprising_cell_is_the_one_made_odd(mixed_run):
    """The report lists a table's most surprising test rows with the cells the model finds most
    surprising; a real cell moved 50 standard deviations away is its row's first."""
    from types import SimpleNamespace

    from pipeline.data.prepared import load_splits
    from pipeline.evaluation.odd_rows import odd_cells
    from pipeline.model.bundle import load_vae

    manifest, data = load_splits(mixed_run["paths"]["prepared"])
    real = next(c for c, column in enumerate(manifest.columns) if column.type == "real")
    test, train_values = data["test"], np.asarray(data["train"].x[:, real], float)
    x = np.array(test.x[:5], dtype=np.float32)
    x[2, real] = np.nanmean(train_values) + 50 * np.nanstd(train_values)
    split = SimpleNamespace(id=np.asarray(test.id[:5]), x=x, preprocess=test.preprocess)
    vae = load_vae(mixed_run["paths"]["model"])
    cells = odd_cells(vae, split, manifest.columns, [int(test.id[2]), int(test.id[0])])
    assert cells[0][0]["column"] == manifest.columns[real].name and cells[0][0]["value"] == pytest.approx(
        x[2, real]
    )
    assert cells[0][0]["nats"] > 100 * cells[1][0]["nats"] > 0  # 50 sd: about 50²/2 nats
    assert [c["nats"] for c in cells[1]] == sorted((c["nats"] for c in cells[1]), reverse=True)
    most = mixed_run["metrics"]["odd_rows"]["test"]["most"]
    assert all(len(r["cells"]) == 3 for r in most)
    columns = {column.name: column for column in manifest.columns}
    for cell in most[0]["cells"]:  # a level's value where the column has levels
        assert cell["value"] is None or cell["value"] in (columns[cell["column"]].levels or [cell["value"]])
    report = (mixed_run["paths"]["evaluation"] / "report.md").read_text()
    assert f"`{most[0]['cells'][0]['column']}` = " in report and "most surprising cells" in report


def test_new_rows_are_matched_by_name_and_an_unseen_category_is_named(mixed_run, tmp_path):
    import pandas as pd

    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.reader import latents_to_numpy, load_latents

    frame = pd.read_csv(mixed_run["root"] / "t.csv")
    reordered = frame[list(reversed(frame.columns))].head(50)
    reordered.to_csv(tmp_path / "new.csv", index=False)
    rows = encode_new_data(
        mixed_run["paths"]["model"], tmp_path / "new.csv", tmp_path / "out", label_column="species"
    )
    assert rows == 50
    z = latents_to_numpy(load_latents(tmp_path / "out", split="new").sort_by("id"))
    stage = load_latents(mixed_run["paths"]["latents"]).to_pandas().set_index("id").sort_index()
    np.testing.assert_allclose(z, np.stack(stage.loc[range(50), "z_mean"].to_numpy()), rtol=1e-5, atol=1e-5)
    frame.loc[3, "island"] = "Atlantis"
    frame.head(10).to_csv(tmp_path / "unseen.csv", index=False)
    with pytest.raises(
        DataError,
        match=r"unseen.csv: column 'island' holds 'Atlantis', a value its categorical "
        r"levels \['Biscoe', 'Dream', 'Torgersen'\] do not include",
    ):
        encode_new_data(
            mixed_run["paths"]["model"], tmp_path / "unseen.csv", tmp_path / "out2", label_column="species"
        )


def test_imputation_beats_the_column_mean_and_mode_on_latent_driven_columns(mixed_run):
    """Half of every test column's observed cells hidden: the model's posterior-mean imputation
    against the train mean/mode. bill, mass, island and sex all follow the 2-d latent."""
    import keras

    import pipeline.model.vae  # noqa: F401 - registers the layers
    from pipeline.data.prepared import load_splits
    from pipeline.latents.imputation import column_quality, fill_values

    manifest, data = load_splits(mixed_run["paths"]["prepared"])
    vae = keras.saving.load_model(mixed_run["paths"]["model"])
    fill = fill_values(data["train"], np.arange(len(data["train"])), manifest.columns)
    quality = column_quality(
        vae, data["test"], np.arange(len(data["test"])), manifest.columns, fill, seed=1, hide_fraction=0.5
    )
    imputed = {name: c["imputation"] for name, c in quality.items()}
    assert all(imputed[name]["cells"] >= 25 for name in ("bill", "mass", "island", "sex"))
    for name in ("bill", "mass"):  # RMSE at most 0.8 of the mean's
        assert imputed[name]["model"] <= 0.8 * imputed[name]["mean_or_mode"], (name, imputed[name])
    for name in ("island", "sex"):  # accuracy at least 0.1 above the mode's
        assert imputed[name]["model"] >= imputed[name]["mean_or_mode"] + 0.1, (name, imputed[name])
    assert mixed_run["metrics"]["columns"]["island"]["imputation"]["cells"] > 0  # and in the evaluate stage


def test_impute_writes_each_row_completed_beside_its_latents(mixed_run, tmp_path):
    import duckdb
    import pandas as pd
    import polars as pl

    from pipeline.latents.encode import encode
    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.reader import load_latents

    paths = mixed_run["paths"]
    encode(
        prepared_dir=paths["prepared"],
        model_path=paths["model"],
        out_dir=tmp_path / "stage",
        batch_size=64,
        impute=True,
    )
    frame = pd.read_parquet(tmp_path / "stage").sort_values("id")
    table = pd.read_csv(mixed_run["root"] / "t.csv").set_index(np.arange(400))
    completed = pd.DataFrame(list(frame["completed"]), index=frame["id"].to_numpy())
    imputed = pd.DataFrame(list(frame["imputed"]), index=frame["id"].to_numpy())
    source = table.loc[completed.index]
    for name in ("island", "sex", "bill", "eggs"):
        missing = source[name].isna().to_numpy()
        assert (imputed[name].to_numpy() == missing).all() and missing.any()
        assert completed[name].notna().all()  # every cell filled
        seen, given = completed[name][~missing], source[name][~missing]  # observed cells: kept as given
        if name in ("bill", "eggs"):
            np.testing.assert_allclose(seen.astype(float), given.astype(float), rtol=1e-5)
        else:
            assert (seen == given).all()
    assert set(completed["island"]) <= {"Biscoe", "Dream", "Torgersen"}
    completed = pl.read_parquet(tmp_path / "stage" / "split=test" / "part-0.parquet")["completed"]
    assert completed.struct.field("bill").null_count() == 0
    assert duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/stage/**/*.parquet') where imputed.island"
    ).fetchall()[0][0] == int(table["island"].isna().sum())
    assert load_latents(tmp_path / "stage").num_rows == 400  # the evaluation stages read them as any latents
    rows = encode_new_data(
        paths["model"], mixed_run["root"] / "t.csv", tmp_path / "new", impute=True, label_column="species"
    )
    new = pd.read_parquet(tmp_path / "new" / "split=new")
    assert rows == 400 and pd.DataFrame(list(new["imputed"]))["bill"].sum() == table["bill"].isna().sum()


def test_impute_on_a_model_of_images_is_a_clear_error(pipeline_run, tmp_path):
    from pipeline.latents.encode import encode
    from pipeline.platform.errors import ConfigError

    paths = pipeline_run["paths"]
    with pytest.raises(
        ConfigError, match="encode.impute fills in a table's missing cells, but .* holds pixels"
    ):
        encode(
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            out_dir=tmp_path / "l",
            batch_size=64,
            impute=True,
        )
    assert not (tmp_path / "l").exists()


def test_one_likelihood_for_every_feature_of_a_typed_table_is_refused(tmp_path):
    from pipeline.data.prepare import prepare
    from pipeline.model.resolve_model import check_model_fits_data, resolve_model
    from pipeline.platform.errors import PipelineError

    make_mixed_table(tmp_path / "t.csv")
    manifest = prepare(table_config(tmp_path / "t.csv"), seed=0, out_dir=tmp_path / "p")
    given = parse_params({"model": {"likelihood": "gaussian"}}).model
    model, _ = resolve_model(
        given, manifest.input_shape, manifest.value_range, manifest.value_type, manifest.columns
    )
    with pytest.raises(
        PipelineError,
        match="model.likelihood 'gaussian' models every feature alike, but .* holds a "
        "table of typed columns; leave model.likelihood at auto",
    ):
        check_model_fits_data(model, manifest, tmp_path / "p")
