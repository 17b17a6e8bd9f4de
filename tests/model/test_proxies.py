"""The richer proxy (an inverse-autoregressive flow) and the learned prior (VampPrior),
checked against known answers: the flow's log q against a numerical change of variables,
its gap E on a linear-Gaussian model whose exact posterior is correlated (a diagonal
Gaussian must leave a known KL), the VampPrior's Monte Carlo D and the exact S by
quadrature in one dimension."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from pipeline.model import subo
from pipeline.model.networks import build_vae
from pipeline.model.posterior import Flow, made_masks
from pipeline.model.resolve_model import resolve_model
from pipeline.platform.params.load import parse_params
from tests.builders import fit_one_epoch


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _vae(
    shape, model: dict, loss: dict | None = None, value_range=(-3.0, 3.0), value_type="real", levels=None
):
    params = parse_params({"model": model, "loss": loss or {}})
    resolved, _ = resolve_model(params.model, shape, value_range, value_type, levels=levels)
    return build_vae(shape, resolved, params.loss, seed=0)


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_made_masks_are_autoregressive(latent_dim):
    """Output i reads input j only when j comes before i in the step's order (both orders)."""
    for reverse in (False, True):
        first, second = made_masks(latent_dim, 16, reverse)
        reach = (first @ second) > 0  # (inputs, outputs): some path from input j to output i
        order = np.arange(latent_dim)[::-1] if reverse else np.arange(latent_dim)
        rank = np.argsort(order)
        assert not any(
            reach[j, i] for i in range(latent_dim) for j in range(latent_dim) if rank[j] >= rank[i]
        )


def test_the_flow_log_determinant_is_the_change_of_variables():
    """log q(z_K) = log q_0(z_0) − log |det ∂z_K/∂z_0|, with the Jacobian taken numerically;
    the Jacobian is triangular up to the steps' orders, so the flow is invertible."""
    d = 4
    keras.utils.set_random_seed(0)
    flow = Flow(d, steps=3, hidden=32)
    flow.build(((None, d), (None, 8)))
    rng = np.random.default_rng(0)
    for step in flow.steps:  # move the steps away from their near-identity start, gates well inside (0, 1):
        for w in step.trainable_weights:  # a float32 Jacobian of a near-singular map loses log |det|
            w.assign(w.numpy() + rng.normal(0, 0.2, w.shape).astype(np.float32))
    z0 = tf.constant(rng.normal(size=(6, d)).astype(np.float32))
    context = tf.constant(rng.normal(size=(6, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z, log_det = flow([z0, context])
    jacobian = tape.batch_jacobian(z, z0).numpy().astype(np.float64)  # (6, d, d)
    assert np.all(_np(log_det) > -12)  # the case stays where float32 can check it
    np.testing.assert_allclose(_np(log_det), np.linalg.slogdet(jacobian)[1], rtol=1e-4)
    assert np.all(np.abs(np.linalg.det(jacobian)) > 0)


def _linear_gaussian(posterior: str, W, b, sigma, x, steps: int, seed=0):
    """A VAE whose decoder is p(x|z) = N(Wz + b, σ²I) held fixed; its proxy trained alone on x."""
    keras.utils.set_random_seed(seed)
    vae = _vae(
        (len(b),),
        {
            "hidden": [],
            "latent_dim": W.shape[1],
            "likelihood": "gaussian",
            "sigma": sigma,
            "posterior": posterior,
        },
        {"free_bits": 0.0},
    )
    vae.decoder.get_layer("params").set_weights([W.T.astype(np.float32), b.astype(np.float32)])
    optimizer = keras.optimizers.Adam(3e-3)
    batch = np.repeat(x[None].astype(np.float32), 256, axis=0)
    weights = vae.phi_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            objective = vae.objective(batch, kl_weight=1.0).loss
        optimizer.apply(tape.gradient(objective, weights), weights)

    for _ in range(steps):
        step()
    terms = vae.sample_posterior(batch[:1], samples=100_000)
    return float(_np(terms["kl"])[0] + _np(terms["reconstruction"]).mean())  # U, by Monte Carlo


def test_a_flow_closes_the_gap_a_diagonal_gaussian_must_leave():
    """p(z|x) is a correlated Gaussian (correlation ≈ −0.8): the best diagonal q has
    E* = ½ (Σ_j log Λ_jj − log det Λ), Λ the posterior precision; the flow is at most a
    quarter of it."""
    W = np.array([[1.0, 1.0], [1.0, 1.3], [0.6, 0.5]])
    b, sigma = np.array([0.1, -0.2, 0.3]), 0.5
    x = np.array([1.2, 0.8, 0.4])
    precision = np.eye(2) + W.T @ W / sigma**2
    best_diagonal = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    surprisal = -stats.multivariate_normal(b, W @ W.T + sigma**2 * np.eye(3)).logpdf(x)
    assert best_diagonal > 0.8  # the case is one where the family matters
    gap_gaussian = _linear_gaussian("gaussian", W, b, sigma, x, steps=1500) - surprisal
    gap_flow = _linear_gaussian("flow", W, b, sigma, x, steps=1500) - surprisal
    assert gap_gaussian == pytest.approx(best_diagonal, abs=0.05)  # the diagonal reaches its optimum
    assert -0.02 < gap_flow < 0.25 * best_diagonal, (gap_flow, best_diagonal)


def _vamp_1d(components=3, seed=0):
    """latent_dim 1, p(x|z) = N(wz + b, σ²), a VampPrior of 3 components at random pseudo-inputs."""
    keras.utils.set_random_seed(seed)
    vae = _vae(
        (2,),
        {
            "hidden": [8],
            "latent_dim": 1,
            "likelihood": "gaussian",
            "sigma": 0.7,
            "prior": "vamp",
            "prior_components": components,
        },
    )
    rng = np.random.default_rng(seed)
    vae.pseudo_inputs.assign(rng.normal(0, 2.0, (components, 2)).astype(np.float32))
    return vae


def _grid_prior(vae, grid):
    means, log_vars = (_np(v)[:, 0] for v in vae.encoder(keras.ops.convert_to_numpy(vae.pseudo_inputs))[:2])
    return np.mean([stats.norm(m, np.exp(0.5 * v)).pdf(grid) for m, v in zip(means, log_vars)], axis=0)


def test_the_vamp_prior_d_by_monte_carlo_agrees_with_quadrature():
    vae = _vamp_1d()
    x = np.array([[0.4, -1.0]], np.float32)
    mean, log_var = (_np(v)[0, 0] for v in vae.posterior(x))
    grid = np.linspace(-15, 15, 200_001)
    q, prior = stats.norm(mean, np.exp(0.5 * log_var)).pdf(grid), _grid_prior(vae, grid)
    keep = q > 1e-300
    exact = np.trapezoid(q[keep] * (np.log(q[keep]) - np.log(prior[keep])), grid[keep])
    terms = vae.sample_posterior(x, samples=200_000)
    samples = _np(terms["log_q"] - terms["log_prior"])[:, 0]
    assert _np(terms["kl"])[0] == pytest.approx(exact, abs=4 * samples.std() / np.sqrt(len(samples)) + 1e-4)
    assert terms["kl_per_dim"] is None and not vae.closed_form_kl


def test_under_a_vamp_prior_s_k_is_an_upper_bound_that_falls_towards_s():
    """S = −log ∫ p(x|z) p(z) dz by quadrature; E[S_K] ≥ S and falls with K."""
    from pipeline.model.diagnostics import subo_estimates

    vae = _vamp_1d()
    layer = vae.decoder.get_layer("params")  # a sharper p(x|z): a posterior the untrained proxy misses
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 6.0, bias])
    x = np.array([[0.4, -1.0]], np.float32)
    grid = np.linspace(-15, 15, 60_001)
    decoded = _np(vae.decoder(grid[:, None].astype(np.float32)))  # (G, 2)
    likelihood = stats.norm(decoded, 0.7).pdf(x).prod(axis=1)
    surprisal = -np.log(np.trapezoid(likelihood * _grid_prior(vae, grid), grid))
    figures = subo_estimates(vae, np.repeat(x, 400, axis=0), 100, seed=0)
    s = [figures["S_K"][k] for k in ("1", "10", "100")]
    assert s[0] - surprisal > 1.0, (s, surprisal)  # the case has a gap
    assert s[0] >= s[1] - 0.01 and s[1] >= s[2] - 0.01 and s[2] >= surprisal - 0.01, (s, surprisal)
    assert s[2] - surprisal < 0.5 * (s[0] - surprisal), (s, surprisal)
    assert figures["D_estimate"].startswith("Monte Carlo")


@pytest.mark.parametrize(
    "model",
    [
        {"posterior": "flow", "flow_steps": 3},
        {"prior": "vamp", "prior_components": 5},
        {"posterior": "flow", "prior": "vamp", "prior_components": 5, "likelihood": "discretized_logistic"},
    ],
    ids=["flow", "vamp", "flow-vamp-logistic"],
)
def test_every_proxy_and_prior_saves_and_loads(tmp_path, model):
    x = (np.random.default_rng(0).integers(0, 17, (16, 8, 8, 1)) / 16).astype(np.float32)
    vae = _vae((8, 8, 1), model, value_range=(0.0, 1.0), value_type="pixels", levels=17)
    vae.start_prior_at(x)
    fit_one_epoch(vae, x)
    vae.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.config == vae.config
    for a, b in zip(vae.predict_posterior(x), loaded.predict_posterior(x)):
        np.testing.assert_array_equal(a, b)
    z = vae.sample_prior(4, seed=1)
    np.testing.assert_array_equal(z, loaded.sample_prior(4, seed=1))
    np.testing.assert_allclose(_np(vae.log_prior(z)), _np(loaded.log_prior(z)), rtol=1e-6)
    np.testing.assert_allclose(
        _np(vae.reconstruction_surprisal(x, z[:, None].repeat(16, 1))),
        _np(loaded.reconstruction_surprisal(x, z[:, None].repeat(16, 1))),
        rtol=1e-6,
    )


def test_score_function_needs_the_closed_form_d():
    from pipeline.platform.errors import ConfigError

    with pytest.raises(ConfigError, match="'score_function' needs model.posterior 'gaussian'"):
        parse_params({"model": {"posterior": "flow"}, "loss": {"gradient_estimator": "score_function"}})


def test_subo_mixture_density_is_the_mean_of_its_components():
    z = np.array([[0.3, -1.0], [2.0, 0.5]], np.float32)
    means = np.array([[0.0, 0.0], [1.0, -1.0], [-2.0, 1.0]], np.float32)
    log_vars = np.log(np.array([[1.0, 0.5], [0.3, 2.0], [1.5, 1.5]], np.float32))
    expected = np.log(
        np.mean(
            [stats.multivariate_normal(m, np.diag(np.exp(v))).pdf(z) for m, v in zip(means, log_vars)], axis=0
        )
    )
    np.testing.assert_allclose(_np(subo.mixture_log_density(z, means, log_vars)), expected, rtol=1e-5)


def test_a_flow_and_vamp_run_end_to_end_and_the_encode_command_reads_it(tmp_path):
    """prepare → train → encode → evaluate with model.posterior flow and model.prior vamp; the
    latents' z_mean is the flow's image of the base mean, the same from the encode command;
    the report says D is a Monte Carlo estimate."""
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_split
    from pipeline.data.readers.sources import read_digits
    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.parquet import read_metadata
    from pipeline.latents.reader import latents_to_numpy, load_latents
    from pipeline.model.bundle import load_bundle
    from pipeline.runner import encode, evaluate_all, train
    from tests.conftest import tiny_params

    params = tiny_params(
        **{
            "model.likelihood": "auto",
            "model.posterior": "flow",
            "model.prior": "vamp",
            "model.prior_components": 10,
        }
    )
    prepared, model_dir, latents, evaluation = (
        tmp_path / name for name in ("prepared", "model", "latents", "eval")
    )
    prepare(params.data, seed=params.seed, out_dir=prepared)
    train(params, prepared_dir=prepared, model_dir=model_dir)
    encode(params, prepared_dir=prepared, model_path=model_dir / "model.keras", out_dir=latents)
    metrics = evaluate_all(
        params,
        prepared_dir=prepared,
        model_path=model_dir / "model.keras",
        latents_dir=latents,
        out_dir=evaluation,
    )
    vae = load_bundle(model_dir / "model.keras").vae
    model = vae.config.model
    assert (model.posterior, model.prior, model.likelihood) == ("flow", "vamp", "level_categorical")
    test = load_split(prepared, "test")
    stage = load_latents(latents, split="test").sort_by("id")
    np.testing.assert_allclose(
        latents_to_numpy(stage), vae.predict_posterior(test.inputs(slice(None)))[0], rtol=1e-5, atol=1e-5
    )
    digits = read_digits()
    np.savez(tmp_path / "new.npz", x=digits.x[test.id], y=digits.y[test.id])
    encode_new_data(model_dir / "model.keras", tmp_path / "new.npz", tmp_path / "out", y_key="y")
    new = load_latents(tmp_path / "out", split="new", latent_dim=4)
    np.testing.assert_allclose(latents_to_numpy(new), latents_to_numpy(stage), rtol=1e-5, atol=1e-6)
    for files in (latents, tmp_path / "out"):  # the files say what z_mean is under a flow
        columns = read_metadata(next(files.rglob("*.parquet")))["columns"]
        assert (
            columns["z_mean"].startswith("the flow's image of the base mean")
            and "base Gaussian" in columns["z_log_var"]
        )
    subo_test = metrics["subo"]["test"]
    assert (
        subo_test["D_estimate"].startswith("Monte Carlo") and subo_test["S_K"]["20"] <= subo_test["S_K"]["1"]
    )
    assert "skipped" in metrics["gradient_variance"] and "variance_of_mean_per_dim" in metrics["generative"]
    report = (evaluation / "report.md").read_text()
    assert (
        "has no closed form for this proxy and prior: Monte Carlo" in report
        and "kl_per_dim.png" not in report
    )
