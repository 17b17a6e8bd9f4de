"""The VAE: encoder q_φ(z|x), decoder p_θ(x|z), and the SUBO training step.

Every class here is registered serialisable: after `import pipeline.model`,
`keras.saving.load_model("model.keras")` needs no custom_objects. The encoder alone is a
plain functional model of built-in layers, so `encoder.keras` loads with Keras only.
"""

import math

import keras
import tensorflow as tf
from keras import layers, ops

from pipeline import subo
from pipeline.likelihoods import make_likelihood

PACKAGE = "vae_pipeline"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampler(layers.Layer):
    """Draws m samples z = μ + σ ε of q(z|x) = N(μ, diag σ²), seeded.

    Call with [z_mean, z_log_var], each (B, d); returns (m, B, d).
    """

    def __init__(self, samples: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(samples, int) and samples >= 1):
            raise ValueError(f"samples must be an integer >= 1. Got {samples!r} instead.")
        self.samples = samples
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, samples: int | None = None):
        z_mean, z_log_var = inputs
        shape = (samples or self.samples, *ops.shape(z_mean))
        epsilon = keras.random.normal(shape, dtype=z_mean.dtype, seed=self.seed_generator)
        return subo.reparameterize(z_mean, z_log_var, epsilon)

    def compute_output_shape(self, input_shape):
        return (self.samples, *input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "samples": self.samples, "seed": self.seed}


def build_encoder(input_shape: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int) -> keras.Model:
    """MLP encoder x -> (z_mean, z_log_var), each (B, latent_dim).

    The heads read the last wide hidden layer directly: a narrow ReLU bottleneck before
    them (as in the canonical Keras example) kills units and collapses the posterior.
    """
    x = keras.Input(shape=input_shape, name="x")
    h = layers.Flatten()(x)
    for i, units in enumerate(hidden):
        h = layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim: int, hidden: tuple[int, ...], output_shape: tuple[int, ...]) -> keras.Model:
    """MLP decoder z -> likelihood parameters (logits or means) of shape (B, *output_shape)."""
    z = keras.Input(shape=(latent_dim,), name="z")
    h = z
    for i, units in enumerate(reversed(hidden)):
        h = layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    h = layers.Dense(math.prod(output_shape), name="params")(h)
    return keras.Model(z, layers.Reshape(output_shape)(h), name="decoder")


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """p_θ(x, z) = p_θ(x|z) N(z; 0, I) with proxy q_φ(z|x), trained by minimising Û.

    Logged metrics (nats per example): U (the SUBO, always with weight 1 on D), D, and
    reconstruction = (1/m) Σ_k log 1/p(x|z_k). The optimised objective is
    β·D + reconstruction, which is U when β = 1.
    """

    def __init__(self, encoder, decoder, likelihood="bernoulli", sigma=1.0,
                 mc_samples=1, beta=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = make_likelihood(likelihood, sigma)
        self.mc_samples = mc_samples
        self.beta = float(beta)
        self.seed = seed
        self.sampler = Sampler(samples=mc_samples, seed=seed, name="sampler")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("U", "D", "reconstruction")}

    @property
    def latent_dim(self) -> int:
        return self.encoder.outputs[0].shape[-1]

    def build(self, input_shape=None):
        # Encoder and decoder are functional models, built when constructed.
        self.built = True

    def call(self, x, training=False):
        """The representation μ_φ(x): (B, latent_dim)."""
        z_mean, _ = self.encoder(x, training=training)
        return z_mean

    def decode(self, z):
        """Likelihood parameters for z of shape (..., B, d): returns (..., B, *F)."""
        lead = ops.shape(z)[:-1]
        params = self.decoder(ops.reshape(z, (-1, self.latent_dim)))
        return ops.reshape(params, (*lead, *self.decoder.outputs[0].shape[1:]))

    def sample_posterior(self, x, samples: int, training=False):
        """Draw z_k ~ q(z|x). Returns z (m, B, d), reconstruction (m, B), z_mean, z_log_var."""
        z_mean, z_log_var = self.encoder(x, training=training)
        z = self.sampler([z_mean, z_log_var], samples=samples)
        reconstruction = self.likelihood.surprisal(x, self.decode(z))
        return z, reconstruction, z_mean, z_log_var

    def subo_terms(self, x, training=False) -> dict:
        """Per-example D, reconstruction and Û with m = mc_samples. Each (B,)."""
        _, reconstruction, z_mean, z_log_var = self.sample_posterior(x, self.mc_samples, training)
        kl = subo.kl_to_prior(z_mean, z_log_var)
        return {"U": subo.subo(kl, reconstruction), "D": kl,
                "reconstruction": ops.mean(reconstruction, axis=0)}

    def _objective(self, terms):
        return ops.mean(self.beta * terms["D"] + terms["reconstruction"])

    def _update_trackers(self, terms) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            terms = self.subo_terms(x, training=True)
            objective = self._objective(terms)
        gradients = tape.gradient(objective, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._update_trackers(terms)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._update_trackers(self.subo_terms(x, training=False))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            **self.likelihood.get_config(),
            "mc_samples": self.mc_samples,
            "beta": self.beta,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder"):
            config[part] = keras.saving.deserialize_keras_object(config[part])
        return cls(**config)


def build_vae(example_shape, *, latent_dim, hidden, likelihood, sigma, mc_samples, beta, seed) -> VAE:
    """A fresh, built VAE for examples of `example_shape`."""
    encoder = build_encoder(tuple(example_shape), tuple(hidden), latent_dim)
    decoder = build_decoder(latent_dim, tuple(hidden), tuple(example_shape))
    vae = VAE(encoder, decoder, likelihood=likelihood, sigma=sigma,
              mc_samples=mc_samples, beta=beta, seed=seed, name="vae")
    vae.build(None)
    return vae
