"""The VAE: p_θ(x|z) p(z) with proxy q_φ(z|x), and the SUBO training step.

The VAE and its layers (pipeline.model.layers) are registered serialisable: after
`import pipeline.model.vae`, `keras.saving.load_model("model.keras")` needs no custom_objects.
The encoder alone is a plain functional model of built-in layers, so `encoder.keras`
loads with Keras only.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pipeline.model import subo
from pipeline.model.layers import DISPERSION_FLOOR, PACKAGE, EncoderInput, LearnedSigma, Sampler
from pipeline.model.likelihoods import make_likelihood
from pipeline.model.posterior import Flow, flow_width
from pipeline.model.vae_config import ResolvedModel, TrainingPlan, VAEConfig
from pipeline.platform.hardware import step_outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """p_θ(x, z) = p_θ(x|z) p(z) with proxy q_φ(z|x), trained by minimising Û.

    p(z) is N(0, I) or a VampPrior (`pseudo_inputs`); q is the encoder's diagonal Gaussian,
    or that followed by an inverse-autoregressive `flow`. D has its closed form only for the
    Gaussian proxy and N(0, I); otherwise it is the Monte Carlo mean of log q − log p over
    the same samples (unbiased, so Û and S_K stay exactly what they are).

    Built from its two networks and one `VAEConfig` (the resolved model and the loss); what
    changes during training (the KL warm-up's weight, φ steps) comes from the trainer's
    `TrainingPlan`, which the trainer sets as `vae.plan` before fitting.

    Logged metrics (nats per example): U (the SUBO, always with weight 1 on D), D, and
    reconstruction = (1/m) Σ_k log 1/p(x|z_k). The optimised objective is
    w·D' + reconstruction, where w is the plan's weight (β, or ramped up to it) and D' is D
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
        self.likelihood = self._likelihood(model)
        self.flow = self.pseudo_inputs = None
        if model.posterior == "flow":
            width = flow_width(self.latent_dim)
            self.flow = Flow(self.latent_dim, model.flow_steps, width, name="flow")
            self.flow.build(((None, self.latent_dim), (None, width)))
        if model.prior == "vamp":  # u_c in the encoder's input space; `start_prior_at` puts them on data
            shape = (model.prior_components, *self.encoder.inputs[0].shape[1:])
            self.pseudo_inputs = self.add_weight(
                shape=shape,
                initializer=keras.initializers.RandomNormal(0.5, 0.1),
                name="pseudo_inputs",
                dtype="float32",
            )
        self.encoder_input = (
            EncoderInput(model.log1p_features, model.mask_features, name="encoder_input")
            if model.likelihood == "columns"
            else None
        )
        # float32 under mixed precision too: z feeds log q(z|x) and log p(z) in S_K.
        self.sampler = Sampler(
            samples=self.config.loss.mc_samples, seed=self.config.seed, name="sampler", dtype="float32"
        )
        # Running mean of the reconstruction surprisal: the score-function baseline b.
        self.baseline = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="baseline",
            dtype="float32",
            aggregation="mean",
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("U", "D", "reconstruction")}
        # The trainer's plan for each step, set by the trainer (default: weight β, joint steps).
        self.plan = TrainingPlan()

    def _likelihood(self, model: ResolvedModel):
        """The likelihood object, with its learned per-feature σ and dispersion when it has them."""
        likelihood, sigma, groups = model.likelihood, model.sigma, [list(g) for g in model.groups] or None
        families = {family for family, _, _ in groups or ()} if likelihood == "columns" else {likelihood}
        self.learned_sigma = self.dispersion = None  # trainable σ (sigma "learned") and NB dispersion r
        shape = tuple(self.decoder.outputs[0].shape[1:])  # these families take one parameter per value
        if "gaussian" in families and sigma == "learned":
            self.learned_sigma = LearnedSigma(shape, model.sigma_floor, name="sigma")
            sigma = self.learned_sigma.value
        if "negative_binomial" in families:
            self.dispersion = LearnedSigma(shape, DISPERSION_FLOOR, name="dispersion")
        return make_likelihood(
            likelihood, sigma, groups, self.dispersion.value if self.dispersion else None, model.levels
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
            x = np.asarray(self.split(x)[0])[np.resize(np.arange(len(x)), self.config.model.prior_components)]
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
        """log p(z): the standard normal, or the VampPrior's mixture of the proxy's Gaussians
        at the pseudo-inputs. z: (..., d). Returns (...,)."""
        if self.pseudo_inputs is None:
            return subo.standard_normal_log_density(z)
        means, log_vars = self.encoder(self.pseudo_inputs)[:2]
        return subo.mixture_log_density(z, means, log_vars)

    def sample_prior(self, n: int, seed: int) -> np.ndarray:
        """n draws of z ~ p(z), (n, d): N(0, I), or a VampPrior component chosen uniformly,
        then its Gaussian."""
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, self.latent_dim)).astype(np.float32)
        if self.pseudo_inputs is None:
            return noise
        means, log_vars = (
            np.asarray(v) for v in self.encoder.predict_on_batch(ops.convert_to_numpy(self.pseudo_inputs))[:2]
        )
        chosen = rng.integers(0, len(means), n)
        return means[chosen] + np.exp(0.5 * log_vars[chosen]) * noise

    def sample_posterior(
        self,
        x,
        samples: int | None = None,
        training=False,
        seed_generator=None,
        estimator: str = "reparameterized",
        epsilon=None,
    ) -> dict:
        """Draw z_k ~ q(z|x) with what the bound needs of them, each (m, B) unless stated:
        z (m, B, d), reconstruction = log 1/p(x|z_k), surrogate (its φ-gradient is the
        estimator's, subo.phi_surrogate), log_q, log_prior, kl = D (B,) (closed form, or the
        Monte Carlo mean over the m samples), kl_per_dim (B, d) (closed form) or None.

        samples: m (None: mc_samples). seed_generator: a keras.random.SeedGenerator of its
        own, so that scoring the model (S_K every epoch) leaves training's seed stream alone.
        epsilon: the m standard-normal draws of each example instead, (m, B, d).
        """
        z_mean, z_log_var, context = self._encode(x, training=training)
        x, c = self.split(x)
        surprisal = functools.partial(self.reconstruction_surprisal, c=c)
        z = self.sampler([z_mean, z_log_var], samples=samples, seed_generator=seed_generator, epsilon=epsilon)
        log_q = subo.gaussian_log_density(z, z_mean, z_log_var)
        if self.flow is None:
            surrogate, reconstruction = subo.phi_surrogate(
                estimator,
                surprisal,
                x,
                z,
                z_mean,
                z_log_var,
                baseline=self.baseline if self.config.loss.score_baseline else 0.0,
            )
        else:  # log q(z_K|x) = log q_0(z_0|x) − Σ log |det ∂z_k/∂z_k−1|
            z, log_det = self.flow([z, context])
            log_q = log_q - log_det
            surrogate = reconstruction = surprisal(x, z)
        log_prior = self.log_prior(z)
        kl_per_dim = subo.kl_to_prior_per_dim(z_mean, z_log_var) if self.closed_form_kl else None
        kl = ops.sum(kl_per_dim, axis=-1) if self.closed_form_kl else subo.monte_carlo_kl(log_q, log_prior)
        return {
            "z": z,
            "reconstruction": reconstruction,
            "surrogate": surrogate,
            "log_q": log_q,
            "log_prior": log_prior,
            "kl": kl,
            "kl_per_dim": kl_per_dim,
        }

    def objective(self, x, estimator: str | None = None, training=False, kl_weight=None):
        """The training objective (a scalar) and the per-example terms U, D, reconstruction.

        subo: w·D' + the reconstruction surrogate (see the class docstring), w = kl_weight
        (None: β); D' has free bits per dimension, or one budget of λ·d for the whole D
        where D has no closed form. iwae: the batch mean of S_K over the same m = K samples,
        reparameterized (Burda et al.).
        """
        loss = self.config.loss
        terms = self.sample_posterior(x, training=training, estimator=estimator or loss.gradient_estimator)
        reconstruction, kl = terms["reconstruction"], terms["kl"]
        if loss.objective == "iwae":
            log_weights = subo.log_importance_weights(reconstruction, terms["log_prior"], terms["log_q"])
            objective = ops.mean(subo.importance_weighted_surprisal(log_weights))
        else:
            weight = loss.beta if kl_weight is None else kl_weight
            per_dim = terms["kl_per_dim"]
            free = (
                subo.free_bits_kl(per_dim, loss.free_bits)
                if per_dim is not None
                else subo.free_bits_kl(kl[:, None], loss.free_bits * self.latent_dim)
            )
            objective = weight * free + ops.mean(terms["surrogate"])
        return objective, {
            "U": subo.subo(kl, reconstruction),
            "D": kl,
            "reconstruction": ops.mean(reconstruction, axis=0),
        }

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
                self._step(x, self.phi_weights)
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
        return cls(**config)
