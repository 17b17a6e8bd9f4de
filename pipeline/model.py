"""The VAE: p_θ(x|z) N(z; 0, I) with proxy q_φ(z|x), and the SUBO training step.

The VAE and its layers (pipeline.layers) are registered serialisable: after
`import pipeline.model`, `keras.saving.load_model("model.keras")` needs no custom_objects.
The encoder alone is a plain functional model of built-in layers, so `encoder.keras`
loads with Keras only.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pipeline import subo
from pipeline.config import LossConfig, ResolvedModel
from pipeline.layers import DISPERSION_FLOOR, PACKAGE, EncoderInput, LearnedSigma, Sampler
from pipeline.likelihoods import make_likelihood
from pipeline.networks import build_decoder, build_encoder


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """p_θ(x, z) = p_θ(x|z) N(z; 0, I) with proxy q_φ(z|x), trained by minimising Û.

    Logged metrics (nats per example): U (the SUBO, always with weight 1 on D), D, and
    reconstruction = (1/m) Σ_k log 1/p(x|z_k). The optimised objective is
    w·D' + reconstruction, where w is β (ramped up from 0 during KL warm-up) and D' is D
    with free bits; it is U when β = 1 and there is no warm-up and no free bits.

    gradient_estimator picks the φ-gradient estimator (see `subo.phi_surrogate`);
    phi_steps > 1 alternates k encoder (φ) steps with one decoder (θ) step per batch.
    likelihood "columns" (tables, count matrices): `groups` of features, each with its
    family (pipeline.likelihoods.Columns); the encoder reads `EncoderInput(x)`.
    """

    def __init__(self, encoder, decoder, likelihood="bernoulli", sigma=1.0, sigma_floor=0.05, mc_samples=1,
                 beta=1.0, free_bits=0.0, gradient_estimator="reparameterized", score_baseline=True,
                 phi_steps=1, seed=None, objective="subo", groups=None, log1p_features=(), mask_features=(),
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sigma_floor = float(sigma_floor)
        self.likelihood = self._likelihood(likelihood, sigma, groups)
        self.encoder_input = (EncoderInput(log1p_features, mask_features, name="encoder_input")
                              if likelihood == "columns" else None)
        self.mc_samples = mc_samples
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.gradient_estimator = gradient_estimator
        self.score_baseline = score_baseline
        self.phi_steps = phi_steps
        self.seed = seed
        self.objective_name = objective
        # float32 under mixed precision too: z feeds log q(z|x) and log p(z) in S_K.
        self.sampler = Sampler(samples=mc_samples, seed=seed, name="sampler", dtype="float32")
        # Weight on D in the objective; the KL warm-up callback ramps it from 0 to β.
        self.kl_weight = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.beta),
                                         trainable=False, name="kl_weight", dtype="float32")
        # Running mean of the reconstruction surprisal: the score-function baseline b.
        self.baseline = self.add_weight(shape=(), initializer="zeros", trainable=False, name="baseline",
                                        dtype="float32", aggregation="mean")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("U", "D", "reconstruction")}

    def _likelihood(self, likelihood: str, sigma, groups):
        """The likelihood object, with its learned per-feature σ and dispersion when it has them."""
        families = {family for family, _, _ in groups or ()} if likelihood == "columns" else {likelihood}
        features = self.decoder.outputs[0].shape[1:]
        self.learned_sigma = self.dispersion = None  # trainable σ (sigma "learned") and NB dispersion r
        if "gaussian" in families and sigma == "learned":
            self.learned_sigma = LearnedSigma(features, self.sigma_floor, name="sigma")
            sigma = self.learned_sigma.value
        if "negative_binomial" in families:
            self.dispersion = LearnedSigma(features, DISPERSION_FLOOR, name="dispersion")
        return make_likelihood(likelihood, sigma, groups, self.dispersion.value if self.dispersion else None)

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

    def objective(self, x, estimator: str | None = None, training=False):
        """The training objective (a scalar) and the per-example terms U, D, reconstruction.

        subo: w·D' + the reconstruction surrogate (see the class docstring). iwae: the batch
        mean of S_K over the same m = K samples, reparameterized (Burda et al.).
        """
        z_mean, z_log_var = self.posterior(x, training=training)
        z = self.sampler([z_mean, z_log_var])
        surrogate, reconstruction = subo.phi_surrogate(
            estimator or self.gradient_estimator, self.reconstruction_surprisal, x, z, z_mean, z_log_var,
            baseline=self.baseline if self.score_baseline else 0.0)
        kl_per_dim = subo.kl_to_prior_per_dim(z_mean, z_log_var)
        if self.objective_name == "iwae":
            log_weights = subo.log_importance_weights(reconstruction, z, z_mean, z_log_var)
            objective = ops.mean(subo.importance_weighted_surprisal(log_weights))
        else:
            objective = self.kl_weight * subo.free_bits_kl(kl_per_dim, self.free_bits) + ops.mean(surrogate)
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
            objective, terms = self.objective(x, training=True)
            scaled = self.optimizer.scale_loss(objective / replicas)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return terms

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        if not self.optimizer.built:  # φ and θ steps update subsets: build on all of them
            self.optimizer.build(self.trainable_weights)
        if self.phi_steps == 1:
            terms = self._step(x, self.trainable_weights)
        else:  # the article's "aggressive φ": k proxy steps, then one model step
            for _ in range(self.phi_steps):
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
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.num_replicas_in_sync > 1:
            # Keras reduces step outputs across workers with reduce(MEAN, axis=0), which
            # needs an axis: give each scalar one, which that reduction then removes (one
            # worker alone is not reduced, and would keep the axis).
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results

    @property
    def metrics(self):
        return list(self.trackers.values())

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            **self.likelihood.get_config(),
            **({"log1p_features": self.encoder_input.log1p_features,
                "mask_features": self.encoder_input.mask_features} if self.encoder_input else {}),
            "sigma_floor": self.sigma_floor,
            "mc_samples": self.mc_samples,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "gradient_estimator": self.gradient_estimator,
            "score_baseline": self.score_baseline,
            "phi_steps": self.phi_steps,
            "seed": self.seed,
            "objective": self.objective_name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder"):
            config[part] = keras.saving.deserialize_keras_object(config[part])
        return cls(**config)


def build_vae(example_shape, model: ResolvedModel, loss: LossConfig, phi_steps: int = 1,
              seed: int | None = None) -> VAE:
    """A fresh, built VAE for examples of `example_shape` (as the model reads them: the
    prepared data's input_shape), from a resolved model config (`pipeline.resolve.resolve_model`)
    and the loss config. A table's encoder also reads one observed flag per masked column."""
    if not isinstance(model, ResolvedModel):
        raise TypeError(f"model must be a ResolvedModel (pipeline.resolve.resolve_model). "
                        f"Got {type(model).__name__} instead.")
    shape = tuple(example_shape)
    arch = {"hidden": model.hidden, "architecture": model.architecture, "filters": model.filters,
            "activation": model.activation, "residual_blocks": model.residual_blocks}
    encoder_shape = (shape[0] + len(model.mask_features),) if model.mask_features else shape
    vae = VAE(build_encoder(encoder_shape, model.latent_dim, **arch),
              build_decoder(model.latent_dim, shape, **arch, decoder_top=model.decoder_top),
              likelihood=model.likelihood, sigma=model.sigma, sigma_floor=model.sigma_floor,
              mc_samples=loss.mc_samples, beta=loss.beta,
              free_bits=loss.free_bits, gradient_estimator=loss.gradient_estimator,
              score_baseline=loss.score_baseline, phi_steps=phi_steps, seed=seed, objective=loss.objective,
              groups=[list(g) for g in model.groups] or None, log1p_features=model.log1p_features,
              mask_features=model.mask_features, name="vae")
    vae.build(None)
    return vae
