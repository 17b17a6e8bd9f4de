"""Masses on the data's levels: the discretized logistic sums to 1 over the L levels of a
pixel, matches a direct computation, and lets a model of a few fixed patterns reach the
surprisal of choosing among them (a Bernoulli on grey levels cannot go below the pixels'
binary entropies)."""

import math

import keras
import numpy as np
import pytest
from scipy.special import expit

from pipeline.model.likelihoods import Bernoulli, DiscretizedLogistic


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("loc, scale", [(0.5, 0.1), (-3.0, 0.01), (4.0, 2.0), (0.37, 1e-4), (0.0, 50.0),
                                        (1.0, 1e-3), (0.5, 1e-4)])
def test_the_masses_of_every_level_sum_to_one(levels, loc, scale):
    """Extreme locations (far outside [0, 1]) and scales (narrower than a bin, wider than the range)."""
    likelihood = DiscretizedLogistic(levels, scale)
    x = (np.arange(levels) / (levels - 1)).astype(np.float32)[:, None]  # every level of one feature
    surprisal = _np(likelihood.surprisal(x, np.full_like(x, loc)))
    assert np.all(np.isfinite(surprisal)) and np.all(surprisal >= 0)
    assert np.exp(-surprisal.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_the_mass_of_a_level_is_the_logistic_cdf_across_its_bin():
    levels, loc, scale = 17, 0.4, 0.07
    h = 0.5 / (levels - 1)
    x = np.array([[0.0], [3 / 16], [0.4375], [1.0]], np.float32)
    cdf = lambda v: expit((v - loc) / scale)  # noqa: E731
    expected = [cdf(h), cdf(3 / 16 + h) - cdf(3 / 16 - h), cdf(0.4375 + h) - cdf(0.4375 - h), 1 - cdf(1 - h)]
    surprisal = _np(DiscretizedLogistic(levels, scale).surprisal(x, np.full_like(x, loc)))
    np.testing.assert_allclose(np.exp(-surprisal), expected, rtol=1e-5)


def test_a_learned_scale_and_per_feature_surprisals_sum_over_features():
    x = np.array([[[0.0, 0.5], [1.0, 0.25]]], np.float32)  # (B=1, 2, 2): levels of L = 5
    scale = np.array([[0.1, 0.2], [0.05, 0.3]], np.float32)
    likelihood = DiscretizedLogistic(5, lambda: scale)
    loc = np.zeros((3, 1, 2, 2), np.float32) + 0.3  # three samples of z: (m, B, 2, 2)
    total = _np(likelihood.surprisal(x, loc))
    assert total.shape == (3, 1)
    parts = sum(_np(DiscretizedLogistic(5, float(scale[i, j])).per_feature(x[:, i, j], loc[:, :, i, j]))
                for i in range(2) for j in range(2))
    np.testing.assert_allclose(total, parts, rtol=1e-5)


def test_a_bernoulli_on_grey_levels_is_not_a_mass_but_on_two_levels_it_is():
    grey = (np.arange(17) / 16).astype(np.float32)[:, None]
    logits = np.zeros_like(grey)
    assert np.exp(-_np(Bernoulli().surprisal(grey, logits))).sum() > 1.5  # 17 × ½: not a distribution
    binary = np.array([[0.0], [1.0]], np.float32)
    assert np.exp(-_np(Bernoulli().surprisal(binary, np.zeros_like(binary)))).sum() == pytest.approx(1.0)


def test_the_scale_can_make_a_level_certain():
    """S ≥ 0 and reaches 0: a well-predicted pixel costs nothing (no floor below zero)."""
    x = np.array([[7 / 16]], np.float32)
    surprisal = _np(DiscretizedLogistic(17, 1e-4).surprisal(x, x))
    assert 0 <= surprisal[0] < 1e-6 and math.isfinite(surprisal[0])


def test_pixel_levels_get_a_mass_and_binary_pixels_a_bernoulli(caplog):
    from pipeline.model.resolve_model import resolve_model
    from pipeline.platform.config import parse_params

    auto = parse_params({}).model
    model, choices = resolve_model(auto, (28, 28, 1), [0.0, 1.0], "pixels", levels=256)
    assert (model.likelihood, model.levels) == ("discretized_logistic", 256)
    assert choices["model.likelihood"].why == "pixel levels 0..255 scaled to [0, 1]: a mass on the 256 levels"
    model, choices = resolve_model(auto, (28, 28, 1), [0.0, 1.0], "pixels", levels=2)
    assert model.likelihood == "bernoulli" and "binary pixels" in choices["model.likelihood"].why
    forced = parse_params({"model": {"likelihood": "bernoulli"}}).model
    with caplog.at_level("WARNING"):
        model, _ = resolve_model(forced, (28, 28, 1), [0.0, 1.0], "pixels", levels=256)
    assert model.likelihood == "bernoulli" and "S, S_K and E_K are not surprisals" in caplog.text


def test_levels_come_from_the_manifest(pipeline_run):
    from dataclasses import replace

    from pipeline.model.resolve_model import levels_of

    manifest = pipeline_run["manifest"]  # digits: levels 0..16, divided into [0, 1]
    assert levels_of(manifest) == 17
    assert levels_of(replace(manifest, preprocessing={**manifest.preprocessing, "binarize": "dynamic"})) == 2
    assert levels_of(replace(manifest, preprocessing={**manifest.preprocessing, "scaling": "standardize"})) is None


def test_the_report_says_which_likelihood_and_gives_bits_per_dimension(pipeline_run):
    """The tiny run forces a Bernoulli on digits' 17 grey levels: the report must say S is not a surprisal."""
    metrics = pipeline_run["metrics"]
    assert metrics["likelihood"]["family"] == "bernoulli"
    assert metrics["likelihood"]["kind"].startswith("not a distribution over the data")
    test = metrics["subo"]["test"]
    bits = test["bits_per_dim"]
    assert bits["U"] == pytest.approx(test["U"] / (64 * math.log(2)))
    assert bits["S_K"]["20"] == pytest.approx(test["S_K"]["20"] / (64 * math.log(2)))
    report = (pipeline_run["paths"]["evaluation"] / "report.md").read_text()
    assert "Likelihood p(x|z): `bernoulli`, not a distribution over the data" in report
    assert f"U {bits['U']:.3f}, S_20 {bits['S_K']['20']:.3f}" in report
