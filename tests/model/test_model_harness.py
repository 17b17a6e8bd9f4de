"""One harness for every architecture × likelihood × proxy × prior × precision (as Keras'
`run_layer_test` is for a layer): each model is built from a resolved config, takes one fit
step under the trainer's plan, encodes, decodes means of z = μ and of prior samples, scores
S_K by importance sampling and a float32 SUBO, and saves and loads to the same model.

It runs on whatever kernel path this process has (TensorFlow's oneDNN kernels on or off,
as the CPU and TF_ENABLE_ONEDNN_OPTS decide); tests/model/test_kernel_paths.py runs it again on
the other one, so every case is proven on both paths on any CPU."""

import dataclasses

import keras
import numpy as np
import pytest

from pipeline.latents.imputation import decoded_means
from pipeline.model.diagnostics import BoundEstimator
from pipeline.model.networks import build_vae
from pipeline.model.vae import VAE
from pipeline.model.vae_config import ResolvedModel
from pipeline.platform.params.config import LossConfig
from pipeline.training.trainer import Trainer

BASE = ResolvedModel(
    architecture="mlp",
    latent_dim=3,
    hidden=(16,),
    filters=(),
    likelihood="bernoulli",
    count_likelihood="negative_binomial",
    sigma=0.5,
    sigma_floor=0.05,
    activation="relu",
    residual_blocks=0,
    decoder_top="strided",
)
# (family, first feature, width): a table of 2 real, 1 binary, a 3-level categorical and 2 count features
TABLE = (("gaussian", 0, 2), ("bernoulli", 2, 1), ("categorical", 3, 3), ("negative_binomial", 6, 2))
ROWS = 16


def _pixels(shape, rng):
    return rng.uniform(size=(ROWS, *shape)).astype(np.float32)


def _levels(levels):
    return lambda shape, rng: (rng.integers(0, levels, (ROWS, *shape)) / (levels - 1)).astype(np.float32)


def _table(rng, missing: bool):
    x = np.concatenate(
        [
            rng.normal(size=(ROWS, 2)),
            rng.integers(0, 2, (ROWS, 1)),
            np.eye(3)[rng.integers(0, 3, ROWS)],
            rng.poisson(3.0, (ROWS, 2)),
        ],
        axis=1,
    ).astype(np.float32)
    if missing:
        x[::4, 0] = np.nan  # a missing real cell
        x[1::4, 3:6] = np.nan  # a missing categorical cell: every feature of its column
    return x


def _with_covariates(data, levels: int = 3):
    """The inputs of data with covariates (data.covariates): x's features, then a one-hot c."""
    return lambda shape, rng: np.hstack(
        [data(shape, rng), np.eye(levels, dtype=np.float32)[np.arange(ROWS) % levels]]
    )


CONV = dataclasses.replace(BASE, architecture="conv", filters=(8,), hidden=())
CASES = {
    "mlp-bernoulli": (BASE, (8, 8, 1), _pixels),
    "mlp-gaussian-fixed": (dataclasses.replace(BASE, likelihood="gaussian"), (6,), _pixels),
    "mlp-gaussian-learned": (
        dataclasses.replace(BASE, likelihood="gaussian", sigma="learned"),
        (6,),
        _pixels,
    ),
    "conv-bernoulli": (dataclasses.replace(CONV, filters=(8, 16)), (16, 16, 1), _pixels),
    "conv-gaussian-residual-full-top": (
        dataclasses.replace(
            CONV, likelihood="gaussian", sigma="learned", residual_blocks=1, decoder_top="full"
        ),
        (8, 8, 3),
        _pixels,
    ),
    # the default run's model (digits: 17 levels): K × B × H × W × C × L logits are rank 6
    "conv-level-categorical": (
        dataclasses.replace(CONV, likelihood="level_categorical", levels=17),
        (8, 8, 1),
        _levels(17),
    ),
    "conv-discretized-logistic": (
        dataclasses.replace(CONV, likelihood="discretized_logistic", levels=256),
        (8, 8, 3),
        _levels(256),
    ),
    "conv1d-gaussian": (
        dataclasses.replace(CONV, architecture="conv1d", likelihood="gaussian", sigma="learned"),
        (16, 2),
        lambda shape, rng: rng.normal(size=(ROWS, *shape)).astype(np.float32),
    ),
    "columns": (
        dataclasses.replace(BASE, likelihood="columns", sigma="learned", groups=TABLE, log1p_features=(6, 7)),
        (8,),
        lambda shape, rng: _table(rng, missing=False),
    ),
    "columns-missing-poisson": (
        dataclasses.replace(
            BASE,
            likelihood="columns",
            sigma="learned",
            groups=TABLE[:3] + (("poisson", 6, 2),),
            log1p_features=(6, 7),
            mask_features=(0, 1, 2, 3, 6, 7),
        ),
        (8,),
        lambda shape, rng: _table(rng, missing=True),
    ),
    # p(x|z, c): c at every decoder Dense layer (an mlp Gaussian whose encoder reads c too, exact:
    # test_covariates.py)
    "columns-missing-covariates": (
        dataclasses.replace(
            BASE,
            likelihood="columns",
            sigma="learned",
            groups=TABLE,
            log1p_features=(6, 7),
            mask_features=(0, 1, 2, 3, 6, 7),
            covariates=3,
        ),
        (8,),
        _with_covariates(lambda shape, rng: _table(rng, missing=True)),
    ),
}
# q: the diagonal Gaussian or a flow after it; p(z): N(0, I) or a VampPrior
PROXIES = {
    "gaussian-standard": {},
    "flow-standard": {"posterior": "flow"},
    "gaussian-vamp": {"prior": "vamp"},
    "flow-vamp": {"posterior": "flow", "prior": "vamp"},
}
PRECISIONS = ("float32", "mixed_bfloat16")


@pytest.fixture
def precision():
    """Keras' global dtype policy for one test, restored after it."""
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


# Every case with the plain proxy and prior and with both richer ones, in the two precisions in
# turn (each case meets both, each proxy both); the flow alone and the VampPrior alone on the
# default run's model in both. A proxy's ops and a likelihood's meet only in the decoder's
# input and output shapes: the 80 triples would take minutes on each kernel path for nothing.
COMBINATIONS = [
    (name, proxy, PRECISIONS[(i + j) % 2])
    for i, name in enumerate(sorted(CASES))
    for j, proxy in enumerate(("gaussian-standard", "flow-vamp"))
]
COMBINATIONS += [
    ("conv-level-categorical", proxy, policy)
    for proxy in ("flow-standard", "gaussian-vamp")
    for policy in PRECISIONS
]


@pytest.mark.parametrize(("name", "proxy", "policy"), COMBINATIONS)
def test_every_model_fits_encodes_decodes_scores_saves_and_loads(name, proxy, policy, precision, tmp_path):
    model, shape, data = CASES[name]
    model = dataclasses.replace(model, prior_components=3, **PROXIES[proxy])
    x = data(shape, np.random.default_rng(0))
    precision(policy)
    keras.utils.set_random_seed(0)
    vae = build_vae(shape, model, LossConfig(mc_samples=2, free_bits=0.1), seed=0)
    vae.start_prior_at(x)
    trainer = Trainer(vae, kl_weight=0.5)  # φ steps: tests/model/test_model.py
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy().copy() for w in vae.trainable_weights]
    history = trainer.fit(x, batch_size=len(x), epochs=1, verbose=0).history
    assert np.isfinite(history["U"]).all() and int(trainer.optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, vae.trainable_weights))

    terms = vae.subo_terms(x)
    assert {k: (keras.backend.standardize_dtype(v.dtype), tuple(v.shape)) for k, v in terms.items()} == {
        k: ("float32", (len(x),)) for k in ("U", "D", "reconstruction")
    }
    terms = {k: keras.ops.convert_to_numpy(v) for k, v in terms.items()}
    np.testing.assert_allclose(terms["U"], terms["D"] + terms["reconstruction"], rtol=1e-5)
    assert np.isfinite(terms["U"]).all()
    assert (terms["D"] >= 0).all() or not vae.closed_form_kl  # a Monte Carlo D may dip below 0 per example

    z_mean, z_log_var = (np.asarray(v) for v in vae.predict_posterior(x))
    assert z_mean.shape == z_log_var.shape == (len(x), model.latent_dim) and np.isfinite(z_mean).all()
    c = vae.split(x)[1]  # the covariates, None without
    for z, given in (
        (z_mean, c),
        (vae.sample_prior(5, seed=0), None if c is None else c[:5]),
    ):  # the pictures'
        means = decoded_means(vae, z, c=given)
        assert means.shape == (len(z), *vae.example_shape) and np.isfinite(means).all()
    bound = BoundEstimator(vae, importance_samples=4)(x)
    assert np.isfinite(list(bound["S_K"].values())).all() and np.isfinite(bound["U"])

    vae.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, VAE) and loaded.config == vae.config
    np.testing.assert_array_equal(loaded.predict_posterior(x)[0], z_mean)
    assert [w.name for w in loaded.weights] == [w.name for w in vae.weights]
