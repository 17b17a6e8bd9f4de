"""The VAE's parts: seeded Sampler, training lowers U, saving loads anywhere."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.data.prepared import load_split
from pipeline.model import subo
from pipeline.model.layers import Sampler
from pipeline.model.networks import build_vae
from pipeline.model.subo import free_bits_kl
from pipeline.training.trainer import Trainer
from tests.builders import fit_one_epoch
from tests.conftest import resolved, tiny_params


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
    params = tiny_params(
        **{
            "model.latent_dim": 3,
            "model.hidden": [16],
            "model.likelihood": likelihood,
            "model.sigma": 0.5,
            "loss.mc_samples": 5,
        }
    )
    vae = build_vae((8, 8, 1), resolved(params.model, (8, 8, 1)), params.loss, seed=0)
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
    x = load_split(paths["prepared"], "test").inputs(slice(50))
    vae = keras.saving.load_model(paths["model"])
    z_mean, z_log_var = vae.encoder.predict_on_batch(x)
    vae.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    np.testing.assert_array_equal(again.encoder.predict_on_batch(x)[0], z_mean)
    assert again.config == vae.config and again.latent_dim == 4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z_mean)
    # A fresh process: encoder.keras with plain Keras, model.keras once pipeline.model.vae is imported.
    script = f"""
import sys, numpy as np, keras
x, z = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "z.npy")!r})
encoder = keras.saving.load_model({str(paths["model_dir"] / "encoder.keras")!r})
assert 'pipeline' not in sys.modules
np.testing.assert_array_equal(encoder.predict_on_batch(x)[0], z)
import pipeline.model.vae
vae = keras.saving.load_model({str(paths["model"])!r})
np.testing.assert_array_equal(vae.encoder.predict_on_batch(x)[0], z)
print("ok", type(vae).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok VAE"


@pytest.mark.parametrize(
    "size, strides", [(28, [2, 2]), (8, [2, 2]), (7, [1, 1]), (6, [2, 1]), (32, [2, 2, 2])]
)
def test_conv_strides_follow_the_input_size(size, strides):
    from pipeline.model.resolved.strides import conv_strides

    assert conv_strides(size, len(strides)) == strides


def _graph_flops(vae, shape) -> int:
    """2 × the multiply-adds of the convolutions and matrix products TensorFlow runs for one
    example's encoder and decoder forward pass (a transposed convolution is Conv2DBackpropInput)."""
    import math

    import tensorflow as tf

    graph = (
        tf.function(lambda x: vae.decoder(vae.encoder(x)[0]))
        .get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
        .graph
    )
    flops = 0
    for op in graph.get_operations():
        dims = [t.shape.as_list() for t in op.inputs]
        if op.type == "Conv2D":  # per output position: the kernel's taps × input channels
            flops += 2 * math.prod(op.outputs[0].shape.as_list()) * math.prod(dims[1][:-1])
        elif op.type == "Conv2DBackpropInput":  # per input position: taps × output channels
            flops += 2 * math.prod(dims[2]) * math.prod(dims[1][:-1])
        elif op.type == "MatMul":
            flops += 2 * math.prod(op.outputs[0].shape.as_list()) * dims[0][-1]
    return flops


@pytest.mark.parametrize(
    "likelihood, levels",
    [("bernoulli", None), ("gaussian", None), ("level_categorical", 17), ("discretized_logistic", 256)],
)
def test_the_budget_knows_each_likelihoods_outputs_per_value(likelihood, levels):
    import dataclasses

    from pipeline.model.likelihoods import make_likelihood
    from pipeline.model.resolve_model import params_per_value

    model = dataclasses.replace(resolved(tiny_params().model), likelihood=likelihood, levels=levels)
    assert params_per_value(model) == make_likelihood(likelihood, levels=levels).params_per_value


def test_every_value_of_model_likelihood_is_one_family_and_every_family_one_value():
    """The registry (pipeline.platform.families) and params.yaml's choices name the same families,
    and the masses on pixel levels are exactly the families that need L to be built."""
    import typing

    from pipeline.model.likelihoods import FAMILY_CLASSES, make_likelihood
    from pipeline.platform.families import FAMILIES, LEVEL_FAMILIES
    from pipeline.platform.params.config import ModelConfig

    values = set(typing.get_args(ModelConfig.__annotations__["likelihood"])) - {"auto"}
    assert set(FAMILIES) == values == set(FAMILY_CLASSES)  # each family's facts and its class
    assert set(LEVEL_FAMILIES) == {"level_categorical", "discretized_logistic"}
    for name in LEVEL_FAMILIES:
        with pytest.raises(ValueError):
            make_likelihood(name)  # without L
    assert FAMILIES["gaussian"].describe(None).startswith("a density")
    assert FAMILIES["level_categorical"].describe(17).startswith("a mass on the data's 17 levels")


@pytest.mark.parametrize(
    "shape, overrides, per_value",
    [
        ((64,), {"model.architecture": "mlp", "model.hidden": [256, 128]}, 19),
        ((28, 28, 1), {"model.filters": [32, 64]}, 2),
        ((64, 64, 3), {"model.filters": [32, 64, 128, 256], "model.residual_blocks": 1}, 2),
        ((28, 28, 1), {"model.filters": [16, 32], "model.hidden": [64], "model.decoder_top": "full"}, 1),
        ((40,), {"model.architecture": "conv1d", "model.filters": [32, 64, 128]}, 1),
        ((64, 2), {"model.architecture": "conv1d", "model.filters": [8, 16], "model.residual_blocks": 2}, 3),
    ],
)
def test_the_counted_flops_are_those_tensorflow_runs(shape, overrides, per_value):
    """forward_flops (what train.epochs' compute budget reads) against the ops of the built model."""
    from pipeline.model.networks import build_decoder, build_encoder
    from pipeline.model.resolve_model import forward_flops
    from pipeline.model.vae import VAE
    from pipeline.model.vae_config import VAEConfig

    overrides = {"model.architecture": "conv", "model.latent_dim": 8, "model.hidden": [], **overrides}
    model = resolved(tiny_params(**overrides).model, shape)
    arch = {
        "hidden": model.hidden,
        "architecture": model.architecture,
        "filters": model.filters,
        "residual_blocks": model.residual_blocks,
    }
    vae = VAE(
        build_encoder(shape, model.latent_dim, **arch),
        build_decoder(
            model.latent_dim, shape, **arch, decoder_top=model.decoder_top, params_per_value=per_value
        ),
        VAEConfig.of(model, tiny_params().loss, seed=0),
    )
    assert forward_flops(shape, model, per_value) == _graph_flops(vae, shape) > 0


def test_the_vae_config_comes_from_the_params_whole_and_round_trips():
    """VAEConfig is the resolved model, the loss and the seed, with no defaults of its own (they
    once disagreed with params.yaml's): it is what a saved model reloads; a config missing a
    field of the model (an older save) is a clear error, not a default."""
    from pipeline.model.vae_config import VAEConfig

    params = tiny_params(**{"loss.free_bits": 0.25, "loss.mc_samples": 3})
    model = resolved(params.model, (8, 8, 1))
    config = VAEConfig.of(model, params.loss, seed=7)
    assert (config.loss.free_bits, config.loss.mc_samples, config.model.likelihood, config.seed) == (
        0.25,
        3,
        "bernoulli",
        7,
    )
    assert VAEConfig.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    with pytest.raises(TypeError):
        VAEConfig()
    saved = config.as_dict()
    older = {**saved, "model": {key: value for key, value in saved["model"].items() if key != "covariates"}}
    with pytest.raises(
        ValueError, match=r"a model saved by an older version of the pipeline; train it again"
    ):
        VAEConfig.from_dict(older)
    flat = {**saved["model"], **saved["loss"], "seed": 7}  # the layout before the config was one
    with pytest.raises(ValueError, match=r"an older version"):
        VAEConfig.from_dict(flat)


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1), (12, 10, 3), (7, 9, 2)])
def test_conv_decoder_mirrors_the_encoder(shape):
    params = tiny_params(**{"model.architecture": "conv", "model.latent_dim": 5})
    vae = build_vae(shape, resolved(params.model, shape), params.loss, seed=0)
    x = np.random.default_rng(0).uniform(size=(3, *shape)).astype(np.float32)
    z_mean, z_log_var = vae.encoder.predict_on_batch(x)
    assert z_mean.shape == z_log_var.shape == (3, 5)
    assert tuple(vae.decoder.outputs[0].shape[1:]) == shape
    assert keras.ops.convert_to_numpy(vae.subo_terms(x)["U"]).shape == (3,)


def test_conv_on_28x28_matches_the_usual_32_64_filter_layout():
    params = tiny_params(**{"model.architecture": "conv", "model.latent_dim": 16, "model.filters": [32, 64]})
    vae = build_vae((28, 28, 1), resolved(params.model, (28, 28, 1)), params.loss, seed=0)
    assert vae.encoder.get_layer("conv_0").output.shape[1:] == (14, 14, 32)
    assert vae.encoder.get_layer("conv_1").output.shape[1:] == (7, 7, 64)
    # the mirror (decoder_top strided)
    assert vae.decoder.get_layer("deconv_0").output.shape[1:] == (
        14,
        14,
        32,
    )
    assert vae.decoder.get_layer("params").output.shape[1:] == (28, 28, 1)


def test_conv_needs_images():
    params = tiny_params(**{"model.architecture": "conv"})
    with pytest.raises(ValueError, match="needs H×W×C images"):
        build_vae((64,), resolved(params.model, (64,)), params.loss, seed=0)


def test_kl_warmup_ramps_the_weight_on_d():
    from pipeline.training.callbacks import KLWarmup

    params = tiny_params(**{"loss.beta": 2.0})
    vae = build_vae((8, 8, 1), resolved(params.model, (8, 8, 1)), params.loss, seed=0)
    warmup = KLWarmup(params.loss.beta, epochs=4)
    warmup.set_model(vae)
    warmup.set_params({"steps": 10})
    weights = []
    for epoch in range(6):
        warmup.on_epoch_begin(epoch)
        weights.append(float(warmup.weight.numpy()))
        warmup.on_train_batch_begin(5)  # half-way through the epoch
        weights.append(float(warmup.weight.numpy()))
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.0, 2.0, 2.0]
    assert not any(w is warmup.weight for w in vae.weights)  # the schedule is the trainer's, not the model's
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    kl = keras.ops.mean(vae.subo_terms(x)["D"])
    free = free_bits_kl(subo.kl_to_prior_per_dim(*vae.posterior(x)), params.loss.free_bits)
    state = vae.sampler.seed_generator.state.numpy()

    def objective(weight):  # the same draws of z for every weight
        vae.sampler.seed_generator.state.assign(state)
        return float(vae.objective(x, kl_weight=weight).loss)

    assert objective(warmup.weight) - objective(0.0) == pytest.approx(2.0 * float(free), rel=1e-4)
    assert float(kl) > 0


def test_free_bits_changes_the_objective_not_the_reported_u():
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    objectives, reported = [], []
    for free_bits in (0.0, 50.0):
        params = tiny_params(**{"loss.free_bits": free_bits})
        vae = build_vae((8, 8, 1), resolved(params.model, (8, 8, 1)), params.loss, seed=0)
        keras.utils.set_random_seed(0)
        # same weights, same draws
        vae = build_vae((8, 8, 1), resolved(params.model, (8, 8, 1)), params.loss, seed=0)
        objective = vae.objective(x)
        objectives.append(float(objective.loss))
        reported.append(float(keras.ops.mean(objective.U)))
    assert reported[0] == pytest.approx(reported[1], rel=1e-6)
    d = 4  # tiny latent_dim: every dimension sits below 50 nats, so D' = 4 × 50
    recon = reported[1] - float(keras.ops.mean(objective.D))
    assert objectives[1] == pytest.approx(d * 50.0 + recon, rel=1e-5)


def _fit_once(**overrides):
    params = tiny_params(**overrides)
    keras.utils.set_random_seed(0)
    vae = build_vae((8, 8, 1), resolved(params.model), params.loss, seed=0)
    trainer = Trainer(vae, phi_steps=params.train.phi_steps)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype(np.float32)
    return trainer, x


def test_phi_steps_update_encoder_then_decoder():
    trainer, x = _fit_once(**{"train.phi_steps": 3})
    trainer.fit(x, batch_size=64, epochs=1, verbose=0)  # builds the optimizer on every variable
    assert int(trainer.optimizer.iterations.numpy()) == 4  # 3 φ steps + 1 θ step for one batch
    vae = trainer.vae
    decoder_before = [w.numpy().copy() for w in vae.decoder.weights]
    encoder_before = [w.numpy().copy() for w in vae.encoder.weights]
    trainer._step(x, vae.encoder.trainable_weights)  # a φ step leaves θ alone
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(decoder_before, vae.decoder.weights))
    assert not all(np.array_equal(a, b.numpy()) for a, b in zip(encoder_before, vae.encoder.weights))


def test_score_function_training_runs_and_tracks_a_baseline():
    trainer, x = _fit_once(**{"loss.gradient_estimator": "score_function"})
    history = trainer.fit(x, batch_size=16, epochs=3, verbose=0).history
    assert np.isfinite(history["U"]).all()
    assert float(trainer.baseline.numpy()) > 0  # a running mean of the reconstruction surprisal
    assert not any("baseline" in w.path for w in trainer.vae.weights)  # the trainer's, not the model's


def test_learned_sigma_starts_at_one_and_never_goes_below_the_floor():
    from pipeline.model.layers import LearnedSigma

    sigma = LearnedSigma((3, 2), floor=0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sigma.value()), np.ones((3, 2)), rtol=1e-6)
    sigma.rho.assign(np.full((3, 2), -50.0, np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sigma.value()), 0.05, rtol=1e-6)
    # so S is bounded below: even a perfect mean costs at least n (log floor + ½ log 2π)
    from pipeline.model.likelihoods import Gaussian

    x = np.zeros((1, 3, 2), np.float32)
    bound = 6 * (np.log(0.05) + 0.5 * np.log(2 * np.pi))
    assert float(Gaussian(sigma.value).surprisal(x, x)[0]) == pytest.approx(bound, rel=1e-5)


def test_learned_sigma_converges_to_each_features_residual_scale():
    """argmin_σ E[(x − m)²/2σ² + log σ] = RMS residual, or the floor when that is smaller."""
    from pipeline.model.layers import LearnedSigma
    from pipeline.model.likelihoods import Gaussian

    residual_scale = np.array([0.01, 0.3, 1.0, 2.5], np.float32)  # the first lies below the floor
    x = (np.random.default_rng(0).normal(size=(4096, 4)) * residual_scale).astype(np.float32)
    sigma = LearnedSigma((4,), floor=0.05)
    likelihood, optimizer = Gaussian(sigma.value), keras.optimizers.Adam(0.05)
    import tensorflow as tf

    for _ in range(600):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(likelihood.surprisal(x, np.zeros_like(x)))
        optimizer.apply(tape.gradient(loss, sigma.trainable_weights), sigma.trainable_weights)
    expected = np.maximum(np.sqrt((x**2).mean(axis=0)), 0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sigma.value()), expected, rtol=0.03)


def test_a_learned_sigma_is_part_of_theta_and_survives_saving(tmp_path):
    params = tiny_params(
        **{
            "model.likelihood": "gaussian",
            "model.sigma": "learned",
            "model.sigma_floor": 0.1,
            "train.phi_steps": 2,
        }
    )
    vae = build_vae((6,), resolved(params.model, (6,)), params.loss, seed=0)
    rho = vae.learned_sigma.rho
    assert any(w is rho for w in vae.theta_weights) and not any(w is rho for w in vae.encoder.weights)
    vae.learned_sigma.rho.assign(np.linspace(-2, 2, 6).astype(np.float32))
    trainer = Trainer(vae, phi_steps=2)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    before = keras.ops.convert_to_numpy(vae.learned_sigma.value()).copy()
    trainer.fit(x, batch_size=32, epochs=1, verbose=0)  # the θ step moves σ too
    after = keras.ops.convert_to_numpy(vae.learned_sigma.value())
    assert not np.allclose(before, after)
    vae.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.config.model.sigma == "learned" and loaded.config.model.sigma_floor == 0.1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.learned_sigma.value()), after)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.subo_terms(x)["D"]),
        keras.ops.convert_to_numpy(vae.subo_terms(x)["D"]),
        rtol=1e-5,
    )


def test_a_mixed_precision_model_scores_s_k_in_float32():
    """z feeds log q(z|x) and log p(z): the sampler stays float32 under a bf16 policy."""
    from pipeline.model.diagnostics import subo_estimates

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        vae = build_vae((8, 8, 1), resolved(tiny_params().model, (8, 8, 1)), tiny_params().loss, seed=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert (
        vae.encoder.get_layer("hidden_0").compute_dtype == "bfloat16"
        and vae.sampler.compute_dtype == "float32"
    )
    x = np.random.default_rng(0).uniform(size=(12, 8, 8, 1)).astype(np.float32)
    figures = subo_estimates(vae, x, importance_samples=10)
    assert np.isfinite(figures["U"]) and figures["S_K"]["10"] <= figures["U"] + 1.0


def test_residual_blocks_and_activation_build_train_and_survive_saving(tmp_path):
    params = tiny_params(
        **{
            "model.architecture": "conv",
            "model.latent_dim": 4,
            "model.filters": [8, 16],
            "model.residual_blocks": 2,
            "model.activation": "silu",
        }
    )
    vae = build_vae((16, 16, 1), resolved(params.model, (16, 16, 1)), params.loss, seed=0)
    names = [layer.name for layer in vae.encoder.layers]
    # the skip additions
    assert [n for n in names if n.endswith("_res_0") or n.endswith("_res_1")] == [
        "conv_0_res_0",
        "conv_0_res_1",
        "conv_1_res_0",
        "conv_1_res_1",
    ]
    assert vae.encoder.get_layer("conv_1_res_1").output.shape[1:] == (4, 4, 16)  # stride 1: size kept
    assert vae.decoder.get_layer("deconv_0_res_0").output.shape[1:] == (4, 4, 16)
    assert vae.encoder.get_layer("conv_0").get_config()["activation"] == "silu"
    x = (np.random.default_rng(0).uniform(size=(16, 16, 16, 1)) > 0.5).astype(np.float32)
    fit_one_epoch(vae, x, batch_size=8)
    vae.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded.encoder.predict_on_batch(x)[0], vae.encoder.predict_on_batch(x)[0], rtol=1e-5
    )


def test_strided_decoder_top_is_the_encoders_mirror_with_no_full_resolution_layer(tmp_path):
    params = tiny_params(
        **{
            "model.architecture": "conv",
            "model.latent_dim": 4,
            "model.filters": [8, 16],
            "model.decoder_top": "strided",
        }
    )
    vae = build_vae((16, 12, 1), resolved(params.model, (16, 12, 1)), params.loss, seed=0)
    convs = [layer for layer in vae.decoder.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    # 4×3×16 -> 8×6×8 -> 16×12×1: widths 16, 8, 1 reversed from the encoder's 1, 8, 16
    assert [(c.name, c.output.shape[1:]) for c in convs] == [("deconv_0", (8, 6, 8)), ("params", (16, 12, 1))]
    assert convs[-1].strides == (2, 2) and convs[-1].dtype_policy.compute_dtype == "float32"
    full_top = tiny_params(
        **{
            "model.architecture": "conv",
            "model.latent_dim": 4,
            "model.filters": [8, 16],
            "model.decoder_top": "full",
        }
    )
    full = build_vae((16, 12, 1), resolved(full_top.model, (16, 12, 1)), params.loss, seed=0)
    assert [
        c.output.shape[1:] for c in full.decoder.layers if isinstance(c, keras.layers.Conv2DTranspose)
    ] == [(8, 6, 16), (16, 12, 8), (16, 12, 1)]
    x = (np.random.default_rng(0).uniform(size=(16, 16, 12, 1)) > 0.5).astype(np.float32)
    fit_one_epoch(vae, x, batch_size=8)
    vae.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    z = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.decoder.predict_on_batch(z), vae.decoder.predict_on_batch(z), rtol=1e-5)


def test_the_iwae_objective_is_s_k_and_sits_below_u(pipeline_run):
    """loss.objective iwae minimises S_K (K = mc_samples): on a trained model its value is S_50."""
    from pipeline.model.bundle import load_vae
    from pipeline.model.diagnostics import subo_estimates

    trained = load_vae(pipeline_run["paths"]["model"])
    x = load_split(pipeline_run["paths"]["prepared"], "test").inputs(slice(200))
    params = tiny_params(**{"loss.objective": "iwae", "loss.mc_samples": 50})
    iwae = build_vae((8, 8, 1), resolved(params.model, (8, 8, 1)), params.loss, seed=1)
    iwae.set_weights(trained.get_weights())
    objective = iwae.objective(x)
    reference = subo_estimates(trained, x, 50, seed=0)
    assert float(objective.loss) == pytest.approx(reference["S_K"]["50"], abs=0.3)  # MC noise of two draws
    # E[S_K] <= U
    assert float(objective.loss) < float(np.mean(keras.ops.convert_to_numpy(objective.U))) - 0.2


def test_warmup_cosine_ramps_up_over_the_first_epoch_then_decays():
    from pipeline.training.trainer import learning_rate

    params = tiny_params(
        **{"train.lr_schedule": "warmup_cosine", "train.epochs": 4, "train.learning_rate": 0.01}
    )
    schedule = learning_rate(params.train, updates_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == 0 and rates[1] == pytest.approx(0.005) and rates[2] == pytest.approx(0.01)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0, abs=1e-9)
