"""The VAE: p_θ(x|z) N(z; 0, I) with proxy q_φ(z|x), and the SUBO training step.

The VAE and its layers (pipeline.model.layers) are registered serialisable: after
`import pipeline.model.vae`, `keras.saving.load_model("model.keras")` needs no custom_objects.
The encoder alone is a plain functional model of built-in layers, so `encoder.keras`
loads with Keras only.
"""

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pipeline.model import subo
from pipeline.model.layers import (DISPERSION_FLOOR, LOGISTIC_SCALE_FLOOR, PACKAGE, EncoderInput, LearnedSigma,
                                   Sampler)
from pipeline.model.likelihoods import make_likelihood
from pipeline.model.networks import build_decoder, build_encoder
from pipeline.model.vae_config import ResolvedModel, VAEConfig
from pipeline.platform.config import LossConfig
from pipeline.platform.hardware import step_outputs


@dataclass(frozen=True)
class TrainingPlan:
    """What the training side decides for each train step, read by `VAE.train_step`:
    the weight on D' in the objective (a number, or a scalar variable the trainer's schedule
    moves; None: the config's β) and the φ steps per θ step (the article's "aggressive φ")."""

    kl_weight: object = None
    phi_steps: int = 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """p_θ(x, z) = p_θ(x|z) N(z; 0, I) with proxy q_φ(z|x), trained by minimising Û.

    Built from its two networks and one `VAEConfig` (the likelihood and the loss); what
    changes during training (the KL warm-up's weight, φ steps) comes from the trainer's
    `TrainingPlan`, which the trainer sets as `vae.plan` before fitting.

    Logged metrics (nats per example): U (the SUBO, always with weight 1 on D), D, and
    reconstruction = (1/m) Σ_k log 1/p(x|z_k). The optimised objective is
    w·D' + reconstruction, where w is the plan's weight (β, or ramped up to it) and D' is D
    with free bits; it is U when w = 1 and there are no free bits.

    likelihood "columns" (tables, count matrices): groups of features, each with its
    family (pipeline.model.likelihoods.Columns); the encoder reads `EncoderInput(x)`.
    """

    def __init__(self, encoder, decoder, config: VAEConfig | dict | None = None, **kwargs):
        super().__init__(**kwargs)
        config = config or VAEConfig()
        self.config = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = self._likelihood(self.config)
        self.encoder_input = (EncoderInput(self.config.log1p_features, self.config.mask_features,
                                           name="encoder_input") if self.config.likelihood == "columns" else None)
        # float32 under mixed precision too: z feeds log q(z|x) and log p(z) in S_K.
        self.sampler = Sampler(samples=self.config.mc_samples, seed=self.config.seed, name="sampler",
                               dtype="float32")
        # Running mean of the reconstruction surprisal: the score-function baseline b.
        self.baseline = self.add_weight(shape=(), initializer="zeros", trainable=False, name="baseline",
                                        dtype="float32", aggregation="mean")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("U", "D", "reconstruction")}
        # The trainer's plan for each step, set by the trainer (default: weight β, joint steps).
        self.plan = TrainingPlan()

    def _likelihood(self, config: VAEConfig):
        """The likelihood object, with its learned per-feature σ and dispersion when it has them."""
        likelihood, sigma, groups = config.likelihood, config.sigma, [list(g) for g in config.groups] or None
        families = {family for family, _, _ in groups or ()} if likelihood == "columns" else {likelihood}
        features = self.decoder.outputs[0].shape[1:]
        self.learned_sigma = self.dispersion = None  # trainable σ (sigma "learned") and NB dispersion r
        if "gaussian" in families and sigma == "learned":
            self.learned_sigma = LearnedSigma(features, config.sigma_floor, name="sigma")
            sigma = self.learned_sigma.value
        if likelihood == "discretized_logistic":  # its scale s, one per feature, as a learned σ
            self.learned_sigma = LearnedSigma(features, LOGISTIC_SCALE_FLOOR, initial=0.1, name="scale")
            sigma = self.learned_sigma.value
        if "negative_binomial" in families:
            self.dispersion = LearnedSigma(features, DISPERSION_FLOOR, name="dispersion")
        return make_likelihood(likelihood, sigma, groups, self.dispersion.value if self.dispersion else None,
                               config.levels)

    @property
    def theta_weights(self) -> list:
        """The model's parameters θ: the decoder's, and a learned σ and dispersion."""
        return self.decoder.trainable_weights + [w for layer in (self.learned_sigma, self.dispersion) if layer
                                                 for w in layer.trainable_weights]

    @property
    def latent_dim(self) -> int:
        return self.encoder.outputs[0].shape[-1]

    def build(self, input_shape=None):
        # Encoder and decoder are functional models, built when constructed.
        self.built = True

    def call(self, x, training=False):
        """The representation μ_φ(x): (B, latent_dim)."""
        z_mean, _ = self.posterior(x, training=training)
        return z_mean

    def posterior(self, x, training=False):
        """q_φ(z|x) as (z_mean, z_log_var), each (B, latent_dim)."""
        return self.encoder(self.encoder_input(x) if self.encoder_input else x, training=training)

    def predict_posterior(self, x: np.ndarray):
        """`posterior` of one batch of numpy inputs, compiled (the encoder's predict_on_batch)."""
        if self.encoder_input is not None:
            x = ops.convert_to_numpy(self.encoder_input(x))
        return self.encoder.predict_on_batch(x)

    def decode(self, z):
        """Likelihood parameters for z of shape (..., B, d): returns (..., B, *F)."""
        lead = ops.shape(z)[:-1]
        params = self.decoder(ops.reshape(z, (-1, self.latent_dim)))
        return ops.reshape(params, (*lead, *self.decoder.outputs[0].shape[1:]))

    def reconstruction_surprisal(self, x, z):
        """log 1/p_θ(x | z) for x (B, *F) and z (m, B, d): returns (m, B)."""
        return self.likelihood.surprisal(x, self.decode(z))

    def sample_posterior(self, x, samples: int, training=False, seed_generator=None):
        """Draw z_k ~ q(z|x). Returns z (m, B, d), reconstruction (m, B), z_mean, z_log_var.

        seed_generator: a keras.random.SeedGenerator of its own, so that scoring the model
        (S_K every epoch) does not move the seed stream that training draws from.
        """
        z_mean, z_log_var = self.posterior(x, training=training)
        z = self.sampler([z_mean, z_log_var], samples=samples, seed_generator=seed_generator)
        return z, self.reconstruction_surprisal(x, z), z_mean, z_log_var

    def objective(self, x, estimator: str | None = None, training=False, kl_weight=None):
        """The training objective (a scalar) and the per-example terms U, D, reconstruction.

        subo: w·D' + the reconstruction surrogate (see the class docstring), w = kl_weight
        (None: β). iwae: the batch mean of S_K over the same m = K samples, reparameterized
        (Burda et al.).
        """
        config = self.config
        z_mean, z_log_var = self.posterior(x, training=training)
        z = self.sampler([z_mean, z_log_var])
        surrogate, reconstruction = subo.phi_surrogate(
            estimator or config.gradient_estimator, self.reconstruction_surprisal, x, z, z_mean, z_log_var,
            baseline=self.baseline if config.score_baseline else 0.0)
        kl_per_dim = subo.kl_to_prior_per_dim(z_mean, z_log_var)
        if config.objective == "iwae":
            log_weights = subo.log_importance_weights(reconstruction, z, z_mean, z_log_var)
            objective = ops.mean(subo.importance_weighted_surprisal(log_weights))
        else:
            weight = config.beta if kl_weight is None else kl_weight
            objective = weight * subo.free_bits_kl(kl_per_dim, config.free_bits) + ops.mean(surrogate)
        kl = ops.sum(kl_per_dim, axis=-1)
        terms = {"U": subo.subo(kl, reconstruction), "D": kl, "reconstruction": ops.mean(reconstruction, axis=0)}
        return objective, terms

    def subo_terms(self, x, training=False) -> dict:
        """Per-example U, D and reconstruction with m = mc_samples. Each (B,)."""
        return self.objective(x, training=training)[1]

    def _step(self, x, variables):
        # Replicas' gradients are summed, so each replica's mean is divided by their number;
        # scale_loss is mixed_float16's loss scaling (a no-op otherwise).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            objective, terms = self.objective(x, training=True, kl_weight=self.plan.kl_weight)
            scaled = self.optimizer.scale_loss(objective / replicas)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return terms

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        if not self.optimizer.built:  # φ and θ steps update subsets: build on all of them
            self.optimizer.build(self.trainable_weights)
        if self.plan.phi_steps == 1:
            terms = self._step(x, self.trainable_weights)
        else:  # the article's "aggressive φ": k proxy steps, then one model step
            for _ in range(self.plan.phi_steps):
                self._step(x, self.encoder.trainable_weights)
            terms = self._step(x, self.theta_weights)
        self.baseline.assign(0.9 * self.baseline + 0.1 * ops.mean(terms["reconstruction"]))
        return self._update_trackers(terms)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._update_trackers(self.subo_terms(x))

    def _update_trackers(self, terms) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return step_outputs({name: tracker.result() for name, tracker in self.trackers.items()})

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "config": self.config.as_dict(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder"):
            config[part] = keras.saving.deserialize_keras_object(config[part])
        own = {f.name for f in dataclasses.fields(VAEConfig)} | {"phi_steps"}
        if "config" not in config:  # saved before VAEConfig: its fields were the keyword arguments
            config["config"] = {key: config.pop(key) for key in list(config) if key in own}
        return cls(**config)


def build_vae(example_shape, model: ResolvedModel, loss: LossConfig, seed: int | None = None) -> VAE:
    """A fresh, built VAE.

    Args:
        example_shape: one example as the model reads it (the prepared data's input_shape).
        model: the resolved model config (`pipeline.model.resolve_model.resolve_model`).
        loss: the loss config.
        seed: the sampler's seed.

    Returns:
        The VAE; a table's encoder also reads one observed flag per masked column.
    """
    if not isinstance(model, ResolvedModel):
        raise TypeError(f"model must be a ResolvedModel (pipeline.model.resolve_model.resolve_model). "
                        f"Got {type(model).__name__} instead.")
    shape = tuple(example_shape)
    arch = {"hidden": model.hidden, "architecture": model.architecture, "filters": model.filters,
            "activation": model.activation, "residual_blocks": model.residual_blocks}
    encoder_shape = (shape[0] + len(model.mask_features),) if model.mask_features else shape
    vae = VAE(build_encoder(encoder_shape, model.latent_dim, **arch),
              build_decoder(model.latent_dim, shape, **arch, decoder_top=model.decoder_top),
              VAEConfig.of(model, loss, seed), name="vae")
    vae.build(None)
    return vae
