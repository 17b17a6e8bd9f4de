"""The VAE's parts: seeded Sampler, training lowers U, saving loads anywhere."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.data import load_split
from pipeline.model import Sampler, build_vae


def test_sampler_is_seeded_and_serialisable():
    mean, log_var = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    a, b = Sampler(samples=4, seed=7), Sampler(samples=4, seed=7)
    first = a([mean, log_var])
    assert first.shape == (4, 3, 2)
    np.testing.assert_array_equal(first, b([mean, log_var]))  # same seed, same draws
    assert not np.allclose(a([mean, log_var]), first)  # the seed state advances per call
    assert not np.allclose(Sampler(samples=4, seed=8)([mean, log_var]), first)
    clone = Sampler.from_config(a.get_config())
    assert (clone.samples, clone.seed) == (4, 7)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        Sampler(samples=0)


def test_sampler_draws_from_q():
    mean = np.array([[1.0, -2.0]], np.float32)
    log_var = np.log(np.array([[0.25, 4.0]], np.float32))
    z = keras.ops.convert_to_numpy(Sampler(samples=20_000, seed=1)([mean, log_var]))[:, 0]  # (m, d)
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.var(axis=0), [0.25, 4.0], rtol=0.05)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_subo_terms_shapes_and_bound(likelihood):
    vae = build_vae((8, 8, 1), latent_dim=3, hidden=(16,), likelihood=likelihood, sigma=0.5,
                    mc_samples=5, beta=1.0, seed=0)
    x = np.random.default_rng(0).uniform(size=(7, 8, 8, 1)).astype(np.float32)
    terms = {k: keras.ops.convert_to_numpy(v) for k, v in vae.subo_terms(x).items()}
    assert {k: v.shape for k, v in terms.items()} == {"U": (7,), "D": (7,), "reconstruction": (7,)}
    np.testing.assert_allclose(terms["U"], terms["D"] + terms["reconstruction"], rtol=1e-5)
    assert (terms["D"] >= 0).all()


def test_training_lowers_u_and_reports_parts(pipeline_run):
    history = pipeline_run["history"]
    assert history["U"] == pytest.approx(history["D"] + history["reconstruction"], rel=1e-3)
    assert history["val_U"] >= history["val_reconstruction"] >= 0
    live = pipeline_run["paths"]["model_dir"] / "live" / "plots" / "metrics" / "train" / "U.tsv"
    u = np.loadtxt(live, delimiter="\t", skiprows=1, usecols=1)
    assert len(u) == pipeline_run["params"].train.epochs and u[-1] < u[0]


def test_model_round_trip_gives_identical_encodings(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    x = np.asarray(load_split(paths["prepared"], "test").x[:50])
    vae = keras.saving.load_model(paths["model"])
    z_mean, z_log_var = vae.encoder.predict_on_batch(x)
    vae.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    np.testing.assert_array_equal(again.encoder.predict_on_batch(x)[0], z_mean)
    assert again.get_config()["mc_samples"] == vae.mc_samples and again.latent_dim == 4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z_mean)
    # A fresh process: encoder.keras with plain Keras, model.keras once pipeline.model is imported.
    script = f"""
import sys, numpy as np, keras
x, z = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'z.npy')!r})
encoder = keras.saving.load_model({str(paths['model_dir'] / 'encoder.keras')!r})
assert 'pipeline' not in sys.modules
np.testing.assert_array_equal(encoder.predict_on_batch(x)[0], z)
import pipeline.model
vae = keras.saving.load_model({str(paths['model'])!r})
np.testing.assert_array_equal(vae.encoder.predict_on_batch(x)[0], z)
print("ok", type(vae).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok VAE"
