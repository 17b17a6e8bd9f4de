"""A lossless compressor's code length of each picture, in nats: the complexity correction of
Serrà et al. (2020, "Input complexity and out-of-distribution detection with likelihood-based
generative models"). A likelihood model finds simple pictures unsurprising whatever they
show (Nalisnick et al. 2019); S(x) - L(x) asks how much more surprising x is to the model than
to a generic compressor, which knows nothing of the training data. PNG: its filters predict a
pixel from its neighbours, the generic prior of pictures (benchmarks/novelty.py measures it).
"""

import io
import math

import numpy as np

NATS_PER_BYTE = 8 * math.log(2)


def png_nats(pixels: np.ndarray) -> np.ndarray:
    """L(x): each example's PNG size in nats.

    Args:
        pixels: (n, H, W, C), (n, H, W) or (n, F) stored pixel levels, integers in 0..255.

    Returns:
        (n,) float64.
    """
    from PIL import Image

    lengths = np.empty(len(pixels))
    for i, example in enumerate(pixels):
        out = io.BytesIO()
        Image.fromarray(picture(example)).save(out, format="PNG")
        lengths[i] = len(out.getvalue()) * NATS_PER_BYTE
    return lengths


def picture(example: np.ndarray) -> np.ndarray:
    """One example as an 8-bit grey or RGB picture PNG takes: a row of values for a flat
    example, other channel counts as their planes side by side (lossless either way)."""
    example = np.asarray(example).astype(np.uint8)
    if example.ndim == 3 and example.shape[-1] in (1, 3):
        return example[..., 0] if example.shape[-1] == 1 else example
    if example.ndim == 3:
        return np.concatenate(np.moveaxis(example, -1, 0), axis=1)
    return example.reshape(1, -1) if example.ndim == 1 else example
