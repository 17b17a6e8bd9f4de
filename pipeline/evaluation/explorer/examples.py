"""The explorer's points as the page shows them (pipeline.evaluation.explorer.page's Shown):
images as PNG data URIs of each example beside its reconstruction (the decoder's mean at
z = μ_φ(x)); tables and vectors as the text of their first cells, the example's and the
reconstruction's."""

import base64
import html
import io
import math

import numpy as np

from pipeline.evaluation.explorer.page import Shown
from pipeline.latents.imputation import Completer, decoded_means

DETAIL_VALUES = 40  # a table's or vector's first values shown (the hover shows the first six of them)
HOVER_PIXELS = 56  # a picture's side in the hover, about (the click shows it twice as large)


def shown_examples(
    manifest, bundle, split, positions: np.ndarray, z: np.ndarray
) -> tuple[Shown, np.ndarray | None]:
    """How the points' examples are shown, and their pictures (uint8 (n, H, W, C)) for images:
    each beside its reconstruction, the decoder's mean at z = μ_φ(x)."""
    stored = np.asarray(split.x[positions])
    if manifest.columns is not None:
        guesses = Completer(bundle.vae, manifest.columns, bundle.preprocess).guesses(z, stored)
        return _values([c.name for c in manifest.columns], stored, guesses, manifest.columns), None
    covariates = bundle.vae.split(split.preprocess(stored))[1]
    means = decoded_means(bundle.vae, z, c=covariates)
    if manifest.pictured:
        inputs = split.preprocess(stored)
        low, high = (
            (0.0, 1.0) if manifest.value_type == "pixels" else (float(inputs.min()), float(inputs.max()))
        )
        pictures = _to_uint8(inputs, low, high)
        return pictures_shown(pictures, _to_uint8(means, low, high)), pictures
    unscaled = means * bundle.preprocess.scale + bundle.preprocess.offset  # back in the stored units
    names = [
        f"x{j}" for j in range(math.prod(manifest.feature_shape))
    ]  # a covariate's code is not shown as x
    stored = stored.reshape(len(stored), -1)[:, : len(names)]
    return _values(names, stored, unscaled.reshape(len(stored), -1), None), None


def pictures_shown(pictures: np.ndarray, reconstructions: np.ndarray) -> Shown:
    """Pictures and their reconstructions as PNG data URIs, shown at about HOVER_PIXELS a side."""
    height, width = pictures.shape[1:3]
    scale = max(1, HOVER_PIXELS // max(height, width))
    return Shown(
        pictures=([_data_uri(p) for p in pictures], [_data_uri(r) for r in reconstructions]),
        size=(height * scale, width * scale),
    )


def _values(names: list[str], stored: np.ndarray, guesses: np.ndarray, columns) -> Shown:
    """The first DETAIL_VALUES columns' cells as text, the example's and its reconstruction's."""

    def text(c: int, values: np.ndarray) -> list[str]:
        if columns is not None and columns[c].levels is not None:
            levels = [html.escape(str(level)) for level in columns[c].levels]
            return ["&mdash;" if np.isnan(v) else levels[int(v)] for v in values]
        return ["&mdash;" if np.isnan(v) else f"{v:.4g}" for v in values]

    return Shown(
        values={
            html.escape(names[c]): (text(c, stored[:, c]), text(c, guesses[:, c]))
            for c in range(min(DETAIL_VALUES, len(names)))
        }
    )


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.round((values - low) / ((high - low) or 1.0) * 255), 0, 255).astype(np.uint8)


def _data_uri(picture: np.ndarray) -> str:
    """A (H, W, 1 or 3) uint8 picture as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buffer, "PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
