"""The latent side beyond the standard Gaussians ("posteriors and priors"): a richer proxy
q_φ(z|x), and a learned prior p(z) made of the proxy.

The proxy: the diagonal Gaussian followed by K inverse-autoregressive
steps (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive
Flow"), each conditioned on a context the encoder computes from x.

One step maps z to z' = g ⊙ z + (1 − g) ⊙ m, with m and g = sigmoid(s) autoregressive in z
(m_i and s_i read z_<i only, in the step's order: a MADE network) and in the context. Its
Jacobian is triangular with diagonal g, so log q(z_K|x) = log N(z_0; μ, σ²) − Σ_k Σ_i log g_k,i
exactly, and sampling is one pass: q stays what the article asks of a proxy, easy to
sample and to score. Successive steps reverse the order, so every coordinate reads every
other one after two steps.

The prior: N(0, I), or the VampPrior (Tomczak & Welling 2018), p(z) = (1/C) Σ_c q_0(z | u_c),
the mixture of the proxy's Gaussians at C pseudo-inputs u_c, weights of the VAE trained with θ.
"""

import keras
import numpy as np
from keras import layers, ops

from pipeline.model import subo
from pipeline.model.layers import PACKAGE

# g starts near sigmoid(2) ≈ 0.88: each step starts close to the identity (Kingma et al.).
GATE_BIAS = 2.0


def flow_width(latent_dim: int) -> int:
    """The width of the encoder's context and of each step's hidden layer: 4·d, at least 32."""
    return max(32, 4 * latent_dim)


def made_masks(latent_dim: int, hidden: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """MADE's masks (Germain et al. 2015) for inputs z (d) -> hidden -> outputs (d).

    Degrees: input and output i has degree i+1 (reversed when `reverse`), hidden unit k
    degree 1 + k mod (d−1). A hidden unit reads inputs of degree ≤ its own; an output reads
    hidden units of degree < its own, so output i depends on z_<i only.
    Returns (input → hidden mask (d, hidden), hidden → output mask (hidden, d)).
    """
    degrees = np.arange(1, latent_dim + 1)
    degrees = degrees[::-1] if reverse else degrees
    hidden_degrees = 1 + np.arange(hidden) % max(1, latent_dim - 1)
    first = (hidden_degrees[None, :] >= degrees[:, None]).astype("float32")
    second = (degrees[None, :] > hidden_degrees[:, None]).astype("float32")
    return first, second


@keras.saving.register_keras_serializable(package=PACKAGE)
class IAFStep(layers.Layer):
    """One inverse-autoregressive step: (z, context) -> (z', log |det ∂z'/∂z|).

    z: (..., d); context: broadcastable to (..., c). Returns z' (..., d) and (...,).
    """

    def __init__(self, latent_dim: int, hidden: int, reverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.hidden, self.reverse = int(latent_dim), int(hidden), bool(reverse)
        first, second = made_masks(self.latent_dim, self.hidden, self.reverse)
        self.first_mask, self.second_mask = ops.convert_to_tensor(first), ops.convert_to_tensor(second)

    def build(self, input_shape):
        d, n, c = self.latent_dim, self.hidden, input_shape[1][-1]
        glorot = keras.initializers.GlorotUniform
        self.w_in = self.add_weight(shape=(d, n), initializer=glorot(), name="w_in")
        self.w_context = self.add_weight(shape=(c, n), initializer=glorot(), name="w_context")
        self.b_hidden = self.add_weight(shape=(n,), initializer="zeros", name="b_hidden")
        self.w_shift = self.add_weight(shape=(n, d), initializer=glorot(), name="w_shift")
        self.b_shift = self.add_weight(shape=(d,), initializer="zeros", name="b_shift")
        # The gate starts independent of z and near GATE_BIAS: small initial weights.
        self.w_gate = self.add_weight(
            shape=(n, d), initializer=keras.initializers.RandomNormal(stddev=0.01), name="w_gate"
        )
        self.b_gate = self.add_weight(
            shape=(d,), initializer=keras.initializers.Constant(GATE_BIAS), name="b_gate"
        )
        self.built = True

    def call(self, inputs):
        z, context = inputs
        h = ops.relu(
            ops.matmul(z, self.w_in * self.first_mask) + ops.matmul(context, self.w_context) + self.b_hidden
        )
        shift = ops.matmul(h, self.w_shift * self.second_mask) + self.b_shift
        gate_logit = ops.matmul(h, self.w_gate * self.second_mask) + self.b_gate
        gate = ops.sigmoid(gate_logit)
        return gate * z + (1.0 - gate) * shift, ops.sum(ops.log_sigmoid(gate_logit), axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "reverse": self.reverse,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class Flow(layers.Layer):
    """K IAF steps, alternating the order: (z_0, context) -> (z_K, Σ_k log |det|).

    z_0: (m, B, d) samples of the base Gaussian (or (B, d)); context: (B, c).
    """

    def __init__(self, latent_dim: int, steps: int, hidden: int, **kwargs):
        # float32 under mixed precision too, as the sampler: z_K and log |det| feed log q(z|x) in S_K.
        super().__init__(**{"dtype": "float32", **kwargs})
        self.latent_dim, self.steps_count, self.hidden = int(latent_dim), int(steps), int(hidden)
        self.steps = [
            IAFStep(latent_dim, hidden, reverse=k % 2 == 1, name=f"iaf_{k}", dtype=self.dtype_policy)
            for k in range(self.steps_count)
        ]

    def build(self, input_shape):
        z_shape, context_shape = input_shape
        for step in self.steps:
            step.build((z_shape, context_shape))
        self.built = True

    def call(self, inputs):
        z, context = inputs
        log_det = ops.zeros(ops.shape(z)[:-1], dtype=z.dtype)
        for step in self.steps:
            z, step_log_det = step([z, context])
            log_det = log_det + step_log_det
        return z, log_det

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "steps": self.steps_count,
            "hidden": self.hidden,
        }


def add_pseudo_inputs(layer: layers.Layer, components: int, input_shape) -> keras.Variable:
    """The VampPrior's pseudo-inputs u_c, a weight of `layer` of shape (components, *input_shape)
    in the encoder's input space, near 0.5 until `pseudo_input_rows` puts them on data."""
    return layer.add_weight(
        shape=(components, *input_shape),
        initializer=keras.initializers.RandomNormal(0.5, 0.1),
        name="pseudo_inputs",
        dtype="float32",
    )


def pseudo_input_rows(x: np.ndarray, components: int) -> np.ndarray:
    """The rows of x the pseudo-inputs start on: the first `components`, repeated when fewer."""
    return x[np.resize(np.arange(len(x)), components)]


def log_prior(z, encoder, pseudo_inputs=None):
    """log p(z): the standard normal, or (pseudo_inputs given) the VampPrior's mixture of the
    encoder's Gaussians at the pseudo-inputs. z: (..., d). Returns (...,)."""
    if pseudo_inputs is None:
        return subo.standard_normal_log_density(z)
    means, log_vars = encoder(pseudo_inputs)[:2]
    return subo.mixture_log_density(z, means, log_vars)


def sample_prior(n: int, seed: int, latent_dim: int, encoder, pseudo_inputs=None) -> np.ndarray:
    """n draws of z ~ p(z), (n, d): N(0, I), or (pseudo_inputs given) a VampPrior component
    chosen uniformly, then its Gaussian."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, latent_dim)).astype(np.float32)
    if pseudo_inputs is None:
        return noise
    means, log_vars = (
        np.asarray(v) for v in encoder.predict_on_batch(ops.convert_to_numpy(pseudo_inputs))[:2]
    )
    chosen = rng.integers(0, len(means), n)
    return means[chosen] + np.exp(0.5 * log_vars[chosen]) * noise
