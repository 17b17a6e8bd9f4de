"""The encoder q_φ(z|x) and decoder p_θ(x|z) networks: plain functional Keras models of
built-in layers, MLP, conv (H×W×C images) or conv1d (series of (L,) or (L, C) values), the
decoder mirroring the encoder; and `build_vae`, the VAE built from them."""

import math

import keras
from keras import layers

from pipeline.model.likelihoods import make_likelihood
from pipeline.model.posterior import flow_width
from pipeline.model.resolved.strides import spatial_strides
from pipeline.model.vae import VAE
from pipeline.model.vae_config import ResolvedModel, VAEConfig
from pipeline.platform.params.config import LossConfig

# The layers of each convolutional architecture: (convolution, its transpose).
CONVOLUTIONS = {
    "conv": (layers.Conv2D, layers.Conv2DTranspose),
    "conv1d": (layers.Conv1D, layers.Conv1DTranspose),
}


def residual_block(h, activation: str, name: str):
    """h + Conv(act(Conv(act(h)))): two stride-1 size-3 convs beside an identity path (pre-activation)."""
    n, conv = h.shape[-1], layers.Conv2D if len(h.shape) == 4 else layers.Conv1D
    r = layers.Activation(activation)(h)
    r = conv(n, 3, padding="same", activation=activation, name=f"{name}_a")(r)
    r = conv(n, 3, padding="same", name=f"{name}_b")(r)
    return layers.Add(name=name)([h, r])


def build_encoder(
    input_shape,
    latent_dim: int,
    hidden=(),
    architecture="mlp",
    filters=(),
    activation="relu",
    residual_blocks: int = 0,
    context: int = 0,
    covariates: int = 0,
) -> keras.Model:
    """Encoder x -> (z_mean, z_log_var), each (B, latent_dim), and a context (B, context)
    for a flow proxy when context > 0: conv or conv1d, its convolutions (`_convolutions`);
    then Flatten, a Dense layer for each of `hidden` and the heads (`_heads`).

    Args:
        input_shape: one example as the encoder reads it.
        latent_dim: d.
        hidden: Dense widths.
        architecture: mlp, conv or conv1d.
        filters: convolution widths (conv, conv1d).
        activation: of every hidden and conv layer.
        residual_blocks: residual blocks per resolution (conv).
        context: the width of a third output the flow's steps read (0: none).
        covariates: the width of a second input c (q(z|x, c)), joined to every Dense layer's input.

    Returns:
        A functional keras.Model of built-in layers.
    """
    x = keras.Input(shape=tuple(input_shape), name="x")
    c = keras.Input(shape=(covariates,), name="c") if covariates else None
    h = x
    if architecture in CONVOLUTIONS:
        h = _convolutions(x, input_shape, architecture, filters, activation, residual_blocks)
    h = _dense_layers(layers.Flatten()(h), hidden, activation, c)
    return keras.Model(
        [x, c] if covariates else x, _heads(h, latent_dim, context, activation), name="encoder"
    )


def _convolutions(x, input_shape, architecture: str, filters, activation: str, residual_blocks: int):
    """The encoder's convolutions on x: a Conv2D (conv, H×W×C images) or Conv1D (conv1d, a
    series of (L,) or (L, C) values) for each of `filters`, with strides from
    `pipeline.model.resolved.strides.conv_strides`, each followed by `residual_blocks` residual
    blocks."""
    _check_shape(input_shape, architecture)
    h = x
    if architecture == "conv1d" and len(input_shape) == 1:
        h = layers.Reshape((input_shape[0], 1), name="channels")(h)  # a series of one channel
    convolution = CONVOLUTIONS[architecture][0]
    for i, (n, strides) in enumerate(zip(filters, spatial_strides(input_shape, architecture, len(filters)))):
        h = convolution(n, 3, strides=strides, padding="same", activation=activation, name=f"conv_{i}")(h)
        for j in range(residual_blocks):
            h = residual_block(h, activation, f"conv_{i}_res_{j}")
    return h


def _dense_layers(h, widths, activation: str, c):
    """A Dense layer for each of `widths` (hidden_0, hidden_1, ...), each reading its input with
    the covariates c joined, and c joined to the last one's output: what the heads, or the
    decoder's output layers, read."""
    for i, units in enumerate(widths):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(_joined(h, c))
    return _joined(h, c)


def _heads(h, latent_dim: int, context: int, activation: str) -> list:
    """The encoder's outputs: z_mean and z_log_var, and the flow's context when context > 0.
    The heads read the last wide layer directly: a narrow ReLU bottleneck before them (as in
    the canonical Keras example) kills units and collapses the posterior."""
    # Heads in float32 under mixed precision: the SUBO is computed in float32.
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(h)
    outputs = [z_mean, z_log_var]
    if context:
        outputs.append(layers.Dense(context, activation=activation, name="context", dtype="float32")(h))
    return outputs


def _joined(h, c):
    """h with the covariates c after its features (scVI's deep injection), or h alone."""
    return h if c is None else layers.Concatenate()([h, c])  # cast to the layer's compute dtype


def build_decoder(
    latent_dim: int,
    output_shape,
    hidden=(),
    architecture="mlp",
    filters=(),
    activation="relu",
    residual_blocks: int = 0,
    decoder_top: str = "strided",
    params_per_value: int = 1,
    covariates: int = 0,
) -> keras.Model:
    """Decoder z -> likelihood parameters (logits or means) of shape (B, *output_shape), or
    (B, *output_shape, k) with k = params_per_value > 1 (e.g. a location and a scale).

    Mirrors the encoder: Dense layers in reverse, then (conv, conv1d) residual blocks and a
    transposed convolution undoing each of the encoder's strides (`_transposed_convolutions`).

    Args:
        latent_dim: d.
        output_shape: one example's shape.
        hidden, architecture, filters, activation, residual_blocks: as the encoder's.
        decoder_top: strided or full (conv).
        params_per_value: k, the likelihood's parameters for each value of x.
        covariates: the width of a second input c (p(x|z, c)), joined to every Dense layer's input.

    Returns:
        A functional keras.Model.
    """
    z = keras.Input(shape=(latent_dim,), name="z")
    c = keras.Input(shape=(covariates,), name="c") if covariates else None
    h = _dense_layers(z, reversed(hidden), activation, c)
    if architecture in CONVOLUTIONS:
        h = _transposed_convolutions(
            h, output_shape, architecture, filters, activation, residual_blocks, decoder_top, params_per_value
        )
    else:
        h = layers.Dense(math.prod(output_shape) * params_per_value, name="params", dtype="float32")(h)
    outputs = _shaped_params(h, output_shape, architecture, params_per_value)
    return keras.Model([z, c] if covariates else z, outputs, name="decoder")


def _shaped_params(h, output_shape, architecture: str, params_per_value: int):
    """The decoder's output as (B, *output_shape), or (B, *output_shape, k) when k > 1."""
    # conv's output is (H, W, C·k) and needs no reshape when k = 1; a series' (L, C·k) always does
    if architecture != "conv" or params_per_value > 1:
        extra = (params_per_value,) if params_per_value > 1 else ()
        h = layers.Reshape((*output_shape, *extra), name="params_shape", dtype="float32")(h)
    return h


def _transposed_convolutions(
    h,
    output_shape,
    architecture: str,
    filters,
    activation: str,
    residual_blocks: int,
    decoder_top: str,
    params_per_value: int,
):
    """The conv decoder from its Dense input h: project to the encoder's last feature map,
    then undo each stride, the last layer (or a stride-1 one, decoder_top full) giving the
    parameters: (*spatial, channels · params_per_value).

    decoder_top "full": the transposed convolutions keep the encoder's widths in reverse and a
    final stride-1 layer maps to the channel count; "strided": the exact mirror (widths shifted
    by one, so the last upsampling outputs the parameters), with no layer at full resolution,
    where most of the compute is."""
    _check_shape(output_shape, architecture)
    spatial = list(output_shape[:2] if architecture == "conv" else output_shape[:1])
    channels = (output_shape[len(spatial)] if len(output_shape) > len(spatial) else 1) * params_per_value
    strides = spatial_strides(output_shape, architecture, len(filters))
    h = _projected(h, spatial, strides, filters[-1], activation)
    transpose = CONVOLUTIONS[architecture][1]
    widths = list(reversed(filters))
    if decoder_top == "strided":
        widths = [*widths[1:], None]  # None: the output layer
    for i, (n, stride) in enumerate(zip(widths, reversed(strides))):
        for j in range(residual_blocks):
            h = residual_block(h, activation, f"deconv_{i}_res_{j}")
        h = (
            _params_layer(transpose, channels, stride)
            if n is None
            else transpose(n, 3, strides=stride, padding="same", activation=activation, name=f"deconv_{i}")
        )(h)
    if decoder_top == "full":
        h = _params_layer(transpose, channels, (1,) * len(spatial))(h)
    return h


def _projected(h, spatial: list, strides: list, width: int, activation: str):
    """h through a Dense layer onto the encoder's last feature map: (*sides after every stride, width)."""
    small = (*(side // math.prod(s[axis] for s in strides) for axis, side in enumerate(spatial)), width)
    h = layers.Dense(math.prod(small), activation=activation, name="project")(h)
    return layers.Reshape(small)(h)


def _params_layer(transpose, channels: int, strides) -> layers.Layer:
    # float32 under mixed precision: the likelihood, and so the SUBO, is computed in float32.
    return transpose(channels, 3, strides=strides, padding="same", name="params", dtype="float32")


def _check_shape(shape, architecture: str) -> None:
    if architecture == "conv" and len(shape) != 3:
        raise ValueError(
            f"architecture 'conv' needs H×W×C images. Got examples of shape {tuple(shape)} instead."
        )
    if architecture == "conv1d" and len(shape) not in (1, 2):
        raise ValueError(
            f"architecture 'conv1d' needs series of shape (L,) or (L, C). Got {tuple(shape)} instead."
        )


def build_vae(example_shape, model: ResolvedModel, loss: LossConfig, seed: int | None = None) -> VAE:
    """A fresh, built VAE.

    Args:
        example_shape: one example of x as the model reads it (the prepared data's feature_shape;
            the covariates, model.covariates of them, come after it in the inputs).
        model: the resolved model config (`pipeline.model.resolve_model.resolve_model`).
        loss: the loss config.
        seed: the sampler's seed.

    Returns:
        The VAE; a table's encoder also reads one observed flag per masked column.
    """
    if not isinstance(model, ResolvedModel):
        raise TypeError(
            f"model must be a ResolvedModel (pipeline.model.resolve_model.resolve_model). "
            f"Got {type(model).__name__} instead."
        )
    shape = tuple(example_shape)
    per_value = make_likelihood(model.likelihood, levels=model.levels).params_per_value
    encoder = _encoder_of(shape, model)
    decoder = _decoder_of(shape, model, per_value)
    vae = VAE(encoder, decoder, VAEConfig.of(model, loss, seed), name="vae")
    vae.build(None)
    return vae


def _architecture(model: ResolvedModel) -> dict:
    """The keyword arguments the encoder and the decoder share: their layers' sizes and kinds."""
    return {
        "hidden": model.hidden,
        "architecture": model.architecture,
        "filters": model.filters,
        "activation": model.activation,
        "residual_blocks": model.residual_blocks,
    }


def _encoder_of(shape: tuple, model: ResolvedModel) -> keras.Model:
    """The resolved model's encoder: x's features and a table's observed flags (mask_features) in;
    the flow's context out under posterior flow; the covariates in too under encode_covariates."""
    encoder_shape = (shape[0] + len(model.mask_features),) if model.mask_features else shape
    context = flow_width(model.latent_dim) if model.posterior == "flow" else 0
    encoded = model.covariates if model.encode_covariates else 0
    return build_encoder(
        encoder_shape, model.latent_dim, **_architecture(model), context=context, covariates=encoded
    )


def _decoder_of(shape: tuple, model: ResolvedModel, per_value: int) -> keras.Model:
    """The resolved model's decoder: the likelihood's per_value parameters for each value of x,
    given the covariates (p(x|z, c)) when there are any."""
    return build_decoder(
        model.latent_dim,
        shape,
        **_architecture(model),
        decoder_top=model.decoder_top,
        params_per_value=per_value,
        covariates=model.covariates,
    )
