"""The floating-point operations (2 per multiply-add) of one example's forward pass through the
encoder and decoder pipeline.model.networks builds, counted from the resolved model alone:
each Dense layer, convolution and transposed convolution, residual blocks included.
pipeline.model.resolve_model.forward_flops adds them up for either kind of network."""

import math

from pipeline.model.resolved.strides import spatial_strides
from pipeline.model.vae_config import ResolvedModel


def dense_flops(widths) -> int:
    """Dense layers from widths[0] through each next width: 2·a·b for a layer of a inputs and b outputs."""
    return sum(2 * a * b for a, b in zip(widths, widths[1:]))


def mlp_flops(shape, model: ResolvedModel, params_per_value: int) -> int:
    """An mlp's encoder (x's values and a table's mask flags, through the hidden layers, to both
    heads) and its decoder (z back through the hidden layers to every value's parameters)."""
    inputs = math.prod(shape) + len(model.mask_features)
    code = [model.latent_dim, *reversed(model.hidden)]
    return dense_flops([inputs, *model.hidden, 2 * model.latent_dim]) + dense_flops(
        [*code, math.prod(shape) * params_per_value]
    )


def conv_flops(shape, model: ResolvedModel, params_per_value: int) -> int:
    """A conv or conv1d model's: the encoder's convolutions, the Dense layers between the
    smallest feature map and z (both ways), and the decoder's transposed convolutions."""
    dims = list(shape)
    spatial = dims[:2] if model.architecture == "conv" else dims[:1]
    channels = dims[len(spatial)] if len(dims) > len(spatial) else 1
    taps = 3 ** len(spatial)  # size-3 kernels
    positions = feature_map_positions(dims, model)
    small = positions[-1] * model.filters[-1]
    code = [model.latent_dim, *reversed(model.hidden)]
    return (
        _encoder_convolution_flops(channels, positions, taps, model)
        + dense_flops([small, *model.hidden, 2 * model.latent_dim])
        + dense_flops([*code, small])
        + _decoder_convolution_flops(channels * params_per_value, positions, math.prod(spatial), taps, model)
    )


def feature_map_positions(shape, model: ResolvedModel) -> list[int]:
    """The positions (H'·W', or L') of each encoder convolution's output, after its strides."""
    at = list(shape[:2] if model.architecture == "conv" else shape[:1])
    positions = []
    for strides in spatial_strides(shape, model.architecture, len(model.filters)):
        at = [side // stride for side, stride in zip(at, strides)]
        positions.append(math.prod(at))
    return positions


def _encoder_convolution_flops(channels: int, positions: list[int], taps: int, model: ResolvedModel) -> int:
    """Each encoder convolution at its output positions, and its residual blocks (two stride-1
    convolutions of its c_out channels each) after it."""
    return sum(
        2 * where * taps * c_in * c_out + model.residual_blocks * 4 * where * taps * c_out**2
        for c_in, c_out, where in zip([channels, *model.filters], model.filters, positions)
    )


def _decoder_convolution_flops(
    outputs: int, positions: list[int], full_positions: int, taps: int, model: ResolvedModel
) -> int:
    """Each transposed convolution at its input positions, the encoder's in reverse (a transposed
    convolution costs per input position what a convolution does per output one), down to
    the `outputs` parameter channels; decoder_top "full" adds a stride-1 layer at full
    resolution (`full_positions`) for them."""
    c_in, flops = model.filters[-1], 0
    widths = list(reversed(model.filters))
    for c_out, where in zip(
        [*widths[1:], outputs] if model.decoder_top == "strided" else widths, reversed(positions)
    ):
        # the residual blocks come before each transposed convolution, at its input
        flops += 2 * where * taps * c_in * c_out + model.residual_blocks * 4 * where * taps * c_in**2
        c_in = c_out
    return flops + (2 * full_positions * taps * c_in * outputs if model.decoder_top == "full" else 0)
