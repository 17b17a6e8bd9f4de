"""The VAE: p_θ(x|z) p(z) with proxy q_φ(z|x), and its objective, the SUBO.

The VAE and its layers (pipeline.model.layers) are registered serialisable: after
`import pipeline.model.vae`, `keras.saving.load_model("model.keras")` needs no custom_objects.
The encoder alone is a plain functional model of built-in layers, so `encoder.keras`
loads with Keras only.
"""

import functools

import keras
import numpy as np
from keras import ops

from pipeline.model import posterior, subo
from pipeline.model.layers import PACKAGE, EncoderInput, Sampler
from pipeline.model.likelihoods import learned_likelihood
from pipeline.model.posterior import Flow, flow_width
from pipeline.model.vae_config import VAEConfig


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """p_θ(x, z) = p_θ(x|z) p(z) with proxy q_φ(z|x), whose objective is Û.

    p(z) is N(0, I) or a VampPrior (`pseudo_inputs`); q is the encoder's diagonal Gaussian,
    or that followed by an inverse-autoregressive `flow` (both: pipeline.model.posterior). D
    has its closed form only for the Gaussian proxy and N(0, I); otherwise it is the Monte
    Carlo mean of log q − log p over the same samples (unbiased, so Û and S_K stay exactly what
    they are; subo.kl_terms).

    Built from its two networks and one `VAEConfig` (the resolved model and the loss); how
    it is fitted (the KL warm-up's weight, φ steps, the score baseline) is the trainer's
    (pipeline.training.trainer).

    Its terms (nats per example): U (the SUBO, always with weight 1 on D), D, and
    reconstruction = (1/m) Σ_k log 1/p(x|z_k). The objective minimised is
    w·D' + reconstruction, where w is the trainer's weight (β, or ramped up to it) and D' is D
    with free bits; it is U when w = 1 and there are no free bits.

    likelihood "columns" (tables, count matrices): groups of features, each with its
    family (pipeline.model.likelihoods.Columns); the encoder reads `EncoderInput(x)`.

    Covariates (model.covariates > 0 in the config): the inputs are x's features followed by
    the covariates c (`split`); the decoder is p_θ(x|z, c), the encoder q_φ(z|x, c) under
    model.encode_covariates, else q_φ(z|x). U, D, S_K and E_K are then of x given c.
    """

    def __init__(self, encoder, decoder, config: VAEConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)
        model = self.config.model
        self.encoder = encoder
        self.decoder = decoder
        # σ (sigma "learned") and the NB dispersion r take one parameter per value of x: the
        # decoder's output shape
        params_shape = tuple(self.decoder.outputs[0].shape[1:])
        self.likelihood, self.learned_sigma, self.dispersion = learned_likelihood(model, params_shape)
        self.flow = self.pseudo_inputs = None
        if model.posterior == "flow":
            width = flow_width(self.latent_dim)
            self.flow = Flow(self.latent_dim, model.flow_steps, width, name="flow")
            self.flow.build(((None, self.latent_dim), (None, width)))
        if model.prior == "vamp":  # u_c in the encoder's input space; `start_prior_at` puts them on data
            inputs = self.encoder.inputs[0].shape[1:]
            self.pseudo_inputs = posterior.add_pseudo_inputs(self, model.prior_components, inputs)
        self.encoder_input = (
            EncoderInput(model.log1p_features, model.mask_features, name="encoder_input")
            if model.likelihood == "columns"
            else None
        )
        # float32 under mixed precision too: z feeds log q(z|x) and log p(z) in S_K.
        self.sampler = Sampler(
            samples=self.config.loss.mc_samples, seed=self.config.seed, name="sampler", dtype="float32"
        )

    @property
    def theta_weights(self) -> list:
        """The model's parameters θ: the decoder's, a learned σ and dispersion, the VampPrior's
        pseudo-inputs."""
        return (
            self.decoder.trainable_weights
            + [w for layer in (self.learned_sigma, self.dispersion) if layer for w in layer.trainable_weights]
            + ([self.pseudo_inputs] if self.pseudo_inputs is not None else [])
        )

    @property
    def phi_weights(self) -> list:
        """The proxy's parameters φ: the encoder's and the flow's."""
        return self.encoder.trainable_weights + (self.flow.trainable_weights if self.flow is not None else [])

    def start_prior_at(self, x: np.ndarray) -> None:
        """Put the VampPrior's pseudo-inputs on training rows x (prior_components of them,
        repeated when fewer): the prior starts as the proxy's mixture over real examples."""
        if self.pseudo_inputs is not None:
            x = posterior.pseudo_input_rows(np.asarray(self.split(x)[0]), self.config.model.prior_components)
            self.pseudo_inputs.assign(
                ops.convert_to_numpy(self.encoder_input(x)) if self.encoder_input else x
            )

    @property
    def example_shape(self) -> tuple:
        """One example of x (the decoder's output, less a trailing axis of parameters per value)."""
        shape = tuple(self.decoder.outputs[0].shape[1:])
        return shape[:-1] if self.likelihood.params_per_value > 1 else shape

    @property
    def input_example_shape(self) -> tuple:
        """One example of the inputs: x's shape, its covariates after its features where it has them."""
        shape, k = self.example_shape, self.config.model.covariates
        return (*shape[:-1], shape[-1] + k) if k else shape

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

    def split(self, inputs):
        """(x, c): the inputs' features, and the covariates after them (None without covariates)."""
        k = self.config.model.covariates
        return (inputs, None) if not k else (inputs[..., :-k], inputs[..., -k:])

    def _encoder_inputs(self, inputs):
        """What the encoder reads of the inputs: x (or `EncoderInput(x)`), and c when it encodes
        covariates."""
        x, c = self.split(inputs)
        x = self.encoder_input(x) if self.encoder_input else x
        return [x, c] if self.config.model.encode_covariates else x

    def _encode(self, x, training=False):
        """The encoder's outputs: q_0's z_mean and z_log_var, and the flow's context (or None)."""
        outputs = self.encoder(self._encoder_inputs(x), training=training)
        return outputs[0], outputs[1], outputs[2] if self.flow is not None else None

    def posterior(self, x, training=False):
        """q_φ(z|x) summarised as (z_mean, z_log_var), each (B, latent_dim): the Gaussian's,
        or under a flow the flow's image of the base mean (its z at ε = 0) and the base's
        log-variance (the spread before the flow)."""
        z_mean, z_log_var, context = self._encode(x, training=training)
        if self.flow is not None:
            z_mean = self.flow([z_mean, context])[0]
        return z_mean, z_log_var

    def predict_posterior(self, x: np.ndarray):
        """`posterior` of one batch of numpy inputs, compiled (the encoder's predict_on_batch)."""
        outputs = self.encoder.predict_on_batch(
            keras.tree.map_structure(ops.convert_to_numpy, self._encoder_inputs(x))
        )
        if self.flow is None:
            return outputs
        z_mean, z_log_var, context = outputs
        return ops.convert_to_numpy(self.flow([z_mean, context])[0]), z_log_var

    def decode(self, z, c=None):
        """Likelihood parameters for z of shape (..., B, d), given covariates c (B, k) when the
        model has them: returns (..., B, *F) (or (..., B, *F, k))."""
        lead = ops.shape(z)[:-1]
        flat = ops.reshape(z, (-1, self.latent_dim))
        k = self.config.model.covariates
        if k:  # each of the samples of an example reads its c
            if c is None:
                raise ValueError(
                    "this model decodes given covariates c (B, k): pass them, e.g. "
                    "pipeline.data.covariates.as_if for every row as if from one batch"
                )
            c = ops.reshape(ops.broadcast_to(ops.cast(c, flat.dtype), (*lead, k)), (-1, k))
        params = self.decoder([flat, c] if k else flat)
        return ops.reshape(params, (*lead, *self.decoder.outputs[0].shape[1:]))

    def reconstruction_surprisal(self, x, z, c=None):
        """log 1/p_θ(x | z, c) for x (B, *F) and z (m, B, d): returns (m, B)."""
        return self.likelihood.surprisal(x, self.decode(z, c))

    @property
    def closed_form_kl(self) -> bool:
        """D has its closed form: a Gaussian proxy and the standard prior."""
        return self.flow is None and self.pseudo_inputs is None

    def log_prior(self, z):
        """log p(z) (`pipeline.model.posterior.log_prior`). z: (..., d). Returns (...,)."""
        return posterior.log_prior(z, self.encoder, self.pseudo_inputs)

    def sample_prior(self, n: int, seed: int) -> np.ndarray:
        """n draws of z ~ p(z), (n, d) (`pipeline.model.posterior.sample_prior`)."""
        return posterior.sample_prior(n, seed, self.latent_dim, self.encoder, self.pseudo_inputs)

    def sample_posterior(
        self,
        x,
        samples: int | None = None,
        training=False,
        seed_generator=None,
        estimator: str = "reparameterized",
        epsilon=None,
        baseline=0.0,
    ) -> dict:
        """Draw z_k ~ q(z|x) with what the bound needs of them, each (m, B) unless stated:
        z (m, B, d), reconstruction = log 1/p(x|z_k), surrogate (its φ-gradient is the
        estimator's, subo.phi_surrogate), log_q, log_prior, kl = D (B,) (closed form, or the
        Monte Carlo mean over the m samples), kl_per_dim (B, d) (closed form) or None.

        samples: m (None: mc_samples). seed_generator: a keras.random.SeedGenerator of its
        own, so that scoring the model (S_K every epoch) leaves training's seed stream alone.
        epsilon: the m standard-normal draws of each example instead, (m, B, d).
        baseline: the score-function estimator's b (the trainer's running mean).
        """
        z_mean, z_log_var, context = self._encode(x, training=training)
        x, c = self.split(x)
        z = self.sampler([z_mean, z_log_var], samples=samples, seed_generator=seed_generator, epsilon=epsilon)
        z, log_q = self._through_flow(z, z_mean, z_log_var, context)
        reconstruction, surrogate = self._reconstruction(x, c, z, z_mean, z_log_var, estimator, baseline)
        log_prior = self.log_prior(z)
        kl, kl_per_dim = subo.kl_terms(z_mean, z_log_var, log_q, log_prior, self.closed_form_kl)
        return {
            "z": z,
            "reconstruction": reconstruction,
            "surrogate": surrogate,
            "log_q": log_q,
            "log_prior": log_prior,
            "kl": kl,
            "kl_per_dim": kl_per_dim,
        }

    def _through_flow(self, z, z_mean, z_log_var, context):
        """z_k ~ q(z|x) (m, B, d) and log q(z_k|x) (m, B), from the Gaussian's draws z: those
        and their density, or their image through the flow and its density."""
        log_q = subo.gaussian_log_density(z, z_mean, z_log_var)
        if self.flow is None:
            return z, log_q
        # log q(z_K|x) = log q_0(z_0|x) − Σ log |det ∂z_k/∂z_k−1|
        z, log_det = self.flow([z, context])
        return z, log_q - log_det

    def _reconstruction(self, x, c, z, z_mean, z_log_var, estimator: str, baseline):
        """reconstruction = log 1/p(x|z_k, c), (m, B), and the surrogate whose φ-gradient is the
        estimator's (subo.phi_surrogate); under a flow z is reparameterized through it, so the
        surrogate is the reconstruction itself."""
        surprisal = functools.partial(self.reconstruction_surprisal, c=c)
        if self.flow is not None:
            reconstruction = surprisal(x, z)
            return reconstruction, reconstruction
        surrogate, reconstruction = subo.phi_surrogate(
            estimator,
            surprisal,
            x,
            z,
            z_mean,
            z_log_var,
            baseline=baseline,
        )
        return reconstruction, surrogate

    def objective(self, x, estimator: str | None = None, training=False, kl_weight=None, baseline=0.0):
        """The training objective of batch x, with its per-example terms U, D, reconstruction.

        subo: w·D' + the reconstruction surrogate (see the class docstring), w = kl_weight
        (None: β); D' has free bits per dimension, or one budget of λ·d for the whole D
        where D has no closed form. iwae: the batch mean of S_K over the same m = K samples,
        reparameterized (Burda et al.). Both: subo.training_objective. baseline: the
        score-function estimator's b.
        """
        loss = self.config.loss
        estimator = estimator or loss.gradient_estimator
        terms = self.sample_posterior(x, training=training, estimator=estimator, baseline=baseline)
        weight = loss.beta if kl_weight is None else kl_weight
        objective = subo.training_objective(terms, loss.objective, weight, loss.free_bits, self.latent_dim)
        reconstruction, kl = terms["reconstruction"], terms["kl"]
        return subo.Objective(objective, subo.subo(kl, reconstruction), kl, ops.mean(reconstruction, axis=0))

    def subo_terms(self, x, training=False) -> dict:
        """Per-example U, D and reconstruction with m = mc_samples. Each (B,)."""
        return self.objective(x, training=training).terms

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
        return cls(**config)
