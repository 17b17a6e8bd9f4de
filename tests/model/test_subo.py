"""The article's quantities checked against cases with known answers.

The linear-Gaussian model p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) has an exact
p(x) = N(b, WWᵀ + σ²I) and an exact Gaussian posterior p(z|x), so U − S = KL(q ‖ p(z|x))
can be checked for any Gaussian q, and S_K can be compared with the true S.
"""

import numpy as np
import pytest
from scipy import stats

from pipeline.model import subo
from pipeline.model.likelihoods import Bernoulli, Gaussian, make_likelihood
from tests.builders import LinearGaussian, gaussian_kl, np_

RNG = np.random.default_rng(0)


# One σ for every feature, and one per feature (what model.sigma: learned gives).
SIGMAS = pytest.mark.parametrize(
    "sigma", [0.5, np.array([0.3, 0.5, 0.8, 1.2, 0.4])], ids=["fixed", "per_feature"]
)


def test_kl_to_prior_matches_monte_carlo():
    mean, log_var = np.array([0.5, -1.0, 2.0]), np.array([0.1, -0.5, 0.3])
    z = mean + np.exp(0.5 * log_var) * RNG.normal(size=(400_000, 3))
    samples = np_(subo.gaussian_log_density(z, mean, log_var)) - np_(subo.standard_normal_log_density(z))
    closed = float(np_(subo.kl_to_prior(mean[None], log_var[None]))[0])
    assert abs(samples.mean() - closed) < 4 * samples.std() / np.sqrt(len(samples))
    assert closed == pytest.approx(0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var))


def test_kl_to_prior_is_zero_at_the_prior_and_positive_elsewhere():
    assert np_(subo.kl_to_prior(np.zeros((2, 4)), np.zeros((2, 4)))) == pytest.approx([0, 0])
    assert (np_(subo.kl_to_prior(RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4)))) > 0).all()


def test_gaussian_log_density_matches_scipy():
    z, mean, log_var = RNG.normal(size=(6, 3)), RNG.normal(size=3), RNG.normal(size=3)
    expected = stats.norm(mean, np.exp(0.5 * log_var)).logpdf(z).sum(axis=1)
    np.testing.assert_allclose(np_(subo.gaussian_log_density(z, mean, log_var)), expected, rtol=1e-10)


def test_bernoulli_surprisal_matches_direct_computation():
    x = np.concatenate([RNG.uniform(size=(4, 7)), np.zeros((1, 7)), np.ones((1, 7))]).reshape(6, 7, 1)
    logits = RNG.normal(scale=3, size=(2, 6, 7, 1))  # two samples per example
    p = 1 / (1 + np.exp(-logits))
    direct = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(2, 3))  # (2, 6)
    np.testing.assert_allclose(np_(Bernoulli().surprisal(x, logits)), direct, rtol=1e-10)


def test_bernoulli_surprisal_is_stable_for_extreme_logits():
    x = np.array([[1.0, 0.0]])
    out = np_(Bernoulli().surprisal(x, np.array([[-200.0, 200.0]])))
    assert np.isfinite(out).all() and out[0] == pytest.approx(400.0)


def test_gaussian_surprisal_matches_scipy():
    x, mean = RNG.normal(size=(3, 5)), RNG.normal(size=(4, 3, 5))
    expected = -stats.norm(mean, 0.3).logpdf(x).sum(axis=-1)
    np.testing.assert_allclose(np_(Gaussian(0.3).surprisal(x, mean)), expected, rtol=1e-10)


def test_gaussian_surprisal_with_a_sigma_per_feature_matches_scipy():
    sigmas = RNG.uniform(0.1, 2.0, size=(5, 2))
    x, mean = RNG.normal(size=(3, 5, 2)), RNG.normal(size=(4, 3, 5, 2))
    expected = -stats.norm(mean, sigmas).logpdf(x).sum(axis=(-2, -1))
    likelihood = Gaussian(lambda: sigmas)
    np.testing.assert_allclose(np_(likelihood.surprisal(x, mean)), expected, rtol=1e-10)
    assert likelihood.get_config() == {"likelihood": "gaussian", "sigma": "learned"}


def test_make_likelihood_rejects_unknown_and_bad_sigma():
    assert make_likelihood("gaussian", 2.0).sigma == 2.0
    with pytest.raises(ValueError, match="likelihood must be"):
        make_likelihood("poisson")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Gaussian(0.0)


@SIGMAS
def test_subo_minus_surprisal_is_kl_to_the_exact_posterior(sigma):
    model = LinearGaussian(sigma=sigma)
    post_mean, post_cov = model.posterior()
    for _ in range(3):
        q_mean, q_var = RNG.normal(size=2), RNG.uniform(0.1, 2.0, size=2)
        gap = model.subo_exact(q_mean, q_var) - model.surprisal()
        assert gap == pytest.approx(gaussian_kl(q_mean, np.diag(q_var), post_mean, post_cov), rel=1e-8)
        assert gap > 0


@SIGMAS
def test_monte_carlo_subo_is_unbiased(sigma):
    model = LinearGaussian(sigma=sigma)
    q_mean, q_var = np.array([0.3, -0.2]), np.array([0.5, 1.5])
    reconstruction, _, z_mean, z_log_var = model.sample_terms(q_mean, q_var, 200_000, RNG)
    per_sample = np_(subo.kl_to_prior(z_mean, z_log_var)) + reconstruction[:, 0]
    estimate = float(np_(subo.subo(subo.kl_to_prior(z_mean, z_log_var), reconstruction))[0])
    assert estimate == pytest.approx(per_sample.mean())
    assert abs(estimate - model.subo_exact(q_mean, q_var)) < 4 * per_sample.std() / np.sqrt(len(per_sample))


@SIGMAS
def test_exact_posterior_closes_the_gap(sigma):
    model = LinearGaussian(sigma=sigma)
    post_mean, post_cov = model.posterior()
    q_var = np.diag(post_cov)
    assert model.subo_exact(post_mean, q_var) == pytest.approx(model.surprisal(), abs=1e-9)  # E = 0
    reconstruction, log_w, z_mean, z_log_var = model.sample_terms(post_mean, q_var, 50, RNG)
    # every sample's log p(x, z)/q(z|x) is log p(x): each one-sample U estimate equals S
    np.testing.assert_allclose(-log_w[:, 0], model.surprisal(), rtol=1e-9)
    for k in (1, 7, 50):
        assert float(np_(subo.importance_weighted_surprisal(log_w[:k]))[0]) == pytest.approx(
            model.surprisal()
        )


@SIGMAS
def test_importance_weighted_surprisal_tightens_towards_s(sigma):
    model = LinearGaussian(sigma=sigma)
    q_mean, q_var = np.array([0.8, -0.6]), np.array([0.3, 2.0])  # a poor q: a large gap
    s, u = model.surprisal(), model.subo_exact(q_mean, q_var)
    repeats, ks = 400, (1, 10, 100, 1000)
    _, log_w, _, _ = model.sample_terms(q_mean, q_var, repeats * ks[-1], RNG)
    log_w = log_w.reshape(repeats, ks[-1]).T  # (K, repeats): each column an independent run
    estimates = [np_(subo.importance_weighted_surprisal(log_w[:k])) for k in ks]  # each (repeats,)
    means = [e.mean() for e in estimates]
    assert abs(means[0] - u) < 4 * estimates[0].std() / np.sqrt(repeats)  # S_1 estimates U
    assert all(a > b for a, b in zip(means, means[1:]))  # decreasing in K
    assert means[-1] >= s - 1e-3  # still an upper bound on average
    assert means[-1] - s < 0.1 * (u - s)  # and close to S


def test_importance_weighted_surprisal_is_log_sum_exp_stable():
    log_w = np.array([[-1000.0], [-1001.0]])
    expected = np.log(2) - np.logaddexp(-1000.0, -1001.0)
    assert float(np_(subo.importance_weighted_surprisal(log_w))[0]) == pytest.approx(expected)


def test_free_bits_kl_floors_each_dimension_at_lambda():
    kl = np.array([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]])  # (B, d): batch means 0.2, 3.0, 0.0
    assert float(np_(subo.free_bits_kl(kl, 0.0))) == pytest.approx(3.2)  # the batch mean of D
    assert float(np_(subo.free_bits_kl(kl, 0.5))) == pytest.approx(0.5 + 3.0 + 0.5)


ESTIMATORS = [("reparameterized", False), ("score_function", False), ("score_function", True)]


@pytest.fixture(scope="module")
def gradient_draws():
    """R independent draws of ∇_φ Û per estimator, and the analytic ∇_φ U, on the linear-Gaussian model.

    Each of the R rows holds its own copy of φ = (μ, log σ²) and its own ε, so one tape
    gives R per-draw gradients. The baseline, where used, is the exact E_q[log 1/p(x|z)].
    """
    import tensorflow as tf

    model, repeats = LinearGaussian(), 20_000
    q_mean, q_var = np.array([0.3, -0.2]), np.array([0.5, 1.5])
    x = np.tile(model.x, (repeats, 1))  # (R, n)
    eps = np.random.default_rng(5).normal(size=(1, repeats, 2))  # (m=1, R, d)
    likelihood = Gaussian(model.sigma)
    expected_reconstruction = model.subo_exact(q_mean, q_var) - float(
        np_(subo.kl_to_prior(q_mean, np.log(q_var)))
    )

    def reconstruction_of(x, z):
        return likelihood.surprisal(x, z @ model.W.T + model.b)  # (1, R)

    draws = {}
    for estimator, with_baseline in ESTIMATORS:
        mean = tf.Variable(np.tile(q_mean, (repeats, 1)))  # (R, d)
        log_var = tf.Variable(np.tile(np.log(q_var), (repeats, 1)))
        with tf.GradientTape() as tape:
            z = subo.reparameterize(mean, log_var, eps)
            surrogate, _ = subo.phi_surrogate(
                estimator,
                reconstruction_of,
                x,
                z,
                mean,
                log_var,
                baseline=expected_reconstruction if with_baseline else 0.0,
            )
            objective = tf.reduce_sum(subo.kl_to_prior(mean, log_var) + surrogate[0])
        gradients = tape.gradient(objective, [mean, log_var])
        draws[estimator, with_baseline] = np.concatenate([g.numpy() for g in gradients], axis=1)  # (R, 2d)

    residual = model.x - model.W @ q_mean - model.b
    analytic = np.concatenate(
        [
            q_mean - model.W.T @ residual / model.sigma**2,
            0.5 * (q_var - 1) + q_var * (model.W**2).sum(axis=0) / (2 * model.sigma**2),
        ]
    )
    return draws, analytic


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_phi_gradient_estimators_are_unbiased(gradient_draws, estimator):
    draws, analytic = gradient_draws
    standard_error = draws[estimator].std(axis=0) / np.sqrt(len(draws[estimator]))
    assert np.all(np.abs(draws[estimator].mean(axis=0) - analytic) < 3 * standard_error)


def test_score_function_variance_is_the_larger(gradient_draws):
    variance = {key: d.var(axis=0) for key, d in gradient_draws[0].items()}
    reparameterized, plain, with_baseline = (variance[key] for key in ESTIMATORS)
    assert np.all(plain > 3 * reparameterized)
    assert np.all(with_baseline > reparameterized)
    assert np.all(with_baseline < plain)  # the baseline reduces variance, as REINFORCE's does
