"""The surprisal of every row, in the latents beside z: which examples are odd.

    surprisal           S_K in nats (RowSurprisal: K importance samples keyed by the row)
    bits_per_dim        S_K / (D ln 2) where the values are pixels, else null
    surprisal_quantile  the fraction of the training rows that are less surprising: a
                        calibrated score for new data (null without a reference)
    novelty             the score to rank rows by when looking for odd ones (NOVELTY): the sum
                        of three parts, each measured from the training rows' median in units of
                        their 99th percentile's distance from it, and the sum measured the same
                        way, so 0 is the training rows' median and 1 their 99th percentile; null
                        without a reference.

The parts, each catching what the others miss (benchmarks/novelty.py measures each):
    fit         S_K, for pixels S_K - L (L the lossless WebP code length, pipeline.latents.
                complexity): a likelihood finds simple pictures unsurprising, odd or not (Nalisnick
                et al. 2019); what a generic compressor pays for them corrects that (Serrà et al.)
    error       the squared error of E[x | z = mu] with each feature in its training sd's units
                (1 where a feature never varies), as PyOD's detectors standardize: noise on a
                quiet border weighs where it is unusual, not where pixels are loud anyway
    neighbours  the mean distance of z_mean to its NEIGHBOURS nearest among up to
                NEIGHBOUR_ROWS training rows' z_means: rows of an unseen kind land away from
                the training rows even when the decoder reproduces them well

The reference holds what these need of the train split: the S_K of up to REFERENCE_ROWS rows,
spread evenly over it, at QUANTILES; each feature's sd; the sample of z_means; each part's and
the sum's median and 99th percentile. The encode stage computes it once and every latents file
records it (metadata "surprisal"), where `vae-pipeline encode` and the Ray actors find it.
"""

import base64
import math
from dataclasses import dataclass

import numpy as np

from pipeline.latents.complexity import COMPRESSOR, code_nats
from pipeline.latents.imputation import decoded_means
from pipeline.latents.parquet import RowScores
from pipeline.model.diagnostics import Moments, RowSurprisal, rows_per_batch

REFERENCE_ROWS = 10_000
# S_K at every 0.1% of the reference rows: 1,001 numbers in each file's metadata, enough
# to tell the 99.9th percentile from the 99th.
QUANTILES = np.linspace(0.0, 1.0, 1001)
TAIL = 990  # the position of 0.99 in QUANTILES
SPREAD_AT = [0.5, 0.99]  # a part is measured from its median, in units of its distance to the 99th percentile
# 2,000 z_means of d floats in every file's metadata (64 KiB at d = 8); on Fashion-MNIST novelty
# scored as with every training z_mean on three sets, 0.014 lower on flips (benchmarks/RESULTS.md).
NEIGHBOUR_ROWS, NEIGHBOURS = 2_000, 5
SAME = 1e-6  # z_means closer than this are one row's (its z_mean, from two batches' float rounding)
PARTS = ("fit", "error", "neighbours", "novelty")  # the spreads' rows: the three parts, their sum
NOVELTY = {
    pixels: f"the sum of {fit}, the squared error of E[x | z = mu] in units of each feature's training "
    f"sd, and the mean distance of z_mean to its {NEIGHBOURS} nearest training z_means, each as "
    "(v - m) / (q99 - m), m and q99 its training rows' median and 99th percentile; the sum measured "
    "the same way"
    for pixels, fit in ((False, "S_K"), (True, "S_K - L (L the pixels' lossless WebP code length in nats)"))
}


@dataclass(frozen=True)
class Reference:
    """What scores rows against the training rows (`reference_of`): their S_K at QUANTILES,
    whether the fit part is S_K - L, each feature's sd (1 where it never varies), a sample of
    their z_means, and the training rows' median and 99th percentile of each of PARTS."""

    importance_samples: int
    rows: int
    quantiles: np.ndarray
    pixels: bool
    scale: np.ndarray  # (F,) float32
    neighbours: np.ndarray  # (<= NEIGHBOUR_ROWS, d) float32
    spreads: np.ndarray  # (4, 2): PARTS' median and 99th percentile

    def quantile(self, surprisal: np.ndarray) -> np.ndarray:
        """The fraction of reference rows less surprising than each value (0 below all, 1 above)."""
        return np.interp(surprisal, self.quantiles, QUANTILES)

    def novelty(self, parts: np.ndarray) -> np.ndarray:
        """NOVELTY of rows' parts (n, 3): fit, error, neighbours (`parts`)."""
        return _beyond(_summed(parts, self.spreads), self.spreads[3])

    def as_dict(self) -> dict:
        return {
            "importance_samples": self.importance_samples,
            "rows": self.rows,
            "quantiles": [float(v) for v in self.quantiles],
            "pixels": self.pixels,
            "compressor": COMPRESSOR if self.pixels else None,  # L's, in the fit part's spreads
            "spreads": {name: [float(v) for v in row] for name, row in zip(PARTS, self.spreads)},
            "scale": _packed(self.scale),
            "neighbours": _packed(self.neighbours),
        }

    @classmethod
    def of(cls, record: dict) -> "Reference":
        return cls(
            int(record["importance_samples"]),
            int(record["rows"]),
            np.asarray(record["quantiles"], float),
            bool(record["pixels"]),
            _unpacked(record["scale"]),
            _unpacked(record["neighbours"]),
            np.array([record["spreads"][name] for name in PARTS], float),
        )


def _beyond(values: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(values - median) / (99th percentile - median), spread = (median, 99th percentile)."""
    median, tail = spread
    return (values - median) / (tail - median if tail > median else 1.0)


def _summed(parts: np.ndarray, spreads) -> np.ndarray:
    """The sum of the three parts (n, 3), each `_beyond` its own spread."""
    return sum(_beyond(parts[:, i], spreads[i]) for i in range(3))


def _packed(values: np.ndarray) -> dict:
    """A float32 array as JSON: its shape and little-endian bytes in base64 (exact, a third of
    the size of a list of numbers)."""
    data = np.ascontiguousarray(values, "<f4")
    return {"shape": list(data.shape), "float32": base64.b64encode(data.tobytes()).decode("ascii")}


def _unpacked(record: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(record["float32"]), "<f4").reshape(record["shape"]).copy()


class Scorer:
    """The score columns of model inputs.

    Args:
        vae: the model (its decoder's mean for the error part).
        surprisal: each row's S_K (RowSurprisal, of the model and K).
        pixel_dims: D, the values per example where they are pixels (bits per dimension), else None.
        reference: the training rows' scores, for surprisal_quantile and novelty (None: both null).
    """

    def __init__(self, vae, surprisal: RowSurprisal, pixel_dims: int | None, reference: Reference | None):
        if reference is not None and reference.importance_samples != surprisal.samples:
            raise ValueError(
                f"a reference of K = {reference.importance_samples} scores rows with that K, "
                f"not {surprisal.samples}"
            )
        self.vae, self.surprisal, self.pixel_dims, self.reference = vae, surprisal, pixel_dims, reference

    @classmethod
    def of(cls, vae, record: dict, pixel_dims: int | None) -> "Scorer":
        """The scorer whose `record()` this is (a Ray actor's, from the stage's metadata)."""
        reference = record["reference"] and Reference.of(record["reference"])
        return cls(vae, RowSurprisal(vae, record["importance_samples"]), pixel_dims, reference)

    def __call__(self, x: np.ndarray, stored: np.ndarray, z_mean: np.ndarray) -> RowScores:
        """The scores of model inputs x, whose stored rows (pixel levels for L) are `stored`
        and whose posterior means are z_mean."""
        s, reference = self.surprisal(x), self.reference
        return RowScores(
            s,
            s / (self.pixel_dims * math.log(2)) if self.pixel_dims else None,
            reference.quantile(s) if reference else None,
            reference.novelty(parts(self.vae, reference, s, x, stored, z_mean)) if reference else None,
        )

    def record(self) -> dict:
        """What the files' metadata says of the scores."""
        return {
            "importance_samples": self.surprisal.samples,
            "novelty": NOVELTY[bool(self.pixel_dims)],
            "bits_per_dim": "S_K / (D ln 2), D values per example"
            if self.pixel_dims
            else "null: the values are not pixels",
            "reference": self.reference.as_dict() if self.reference else None,
        }


def parts(vae, reference: Reference, s, x, stored, z_mean) -> np.ndarray:
    """Rows' fit, error and neighbours (n, 3), novelty's parts before they are scaled, of their
    S_K s, model inputs x, stored rows and z_mean."""
    fit_and_error = _fit_and_error(vae, reference.pixels, reference.scale, s, x, stored, z_mean)
    return np.column_stack([fit_and_error, _nearest(z_mean, reference.neighbours)])


def _fit_and_error(vae, pixels: bool, scale: np.ndarray, s, x, stored, z_mean) -> np.ndarray:
    """Rows' fit (S_K, or S_K - L for pixels) and standardized squared error: (n, 2)."""
    features, c = vae.split(x)
    # in batches whose likelihood parameters stay bounded (256 logits a pixel: ~160 28x28 rows)
    means = decoded_means(vae, z_mean, rows_per_batch(vae, 1, 1024), c=c).reshape(len(x), -1)
    standardized = (np.reshape(features, (len(x), -1)) - means) / scale
    error = np.nansum(np.square(standardized, dtype=np.float64), axis=1)  # a missing cell adds nothing
    return np.column_stack([s - code_nats(stored) if pixels else s, error])


def _nearest(z: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """The mean distance of each row of z to its NEIGHBOURS nearest rows of `sample`, leaving
    out one at distance below SAME (itself: a training row is not its own neighbour, so the
    stage's training rows, new data and the reference measure alike); zero where the sample
    has no second row."""
    k = min(NEIGHBOURS, len(sample) - 1)
    if k < 1:
        return np.zeros(len(z))
    sample = np.asarray(sample, np.float64)
    sample_squared, out = (sample**2).sum(1), [np.zeros(0)]
    for start in range(0, len(z), 1024):  # 1024 x NEIGHBOUR_ROWS distances at a time
        zb = np.asarray(z[start : start + 1024], np.float64)
        # |z - s|^2 less |z|^2 orders the sample alike: the k + 1 nearest, then their distances
        partial = sample_squared[None] - 2 * zb @ sample.T
        nearest = np.sort(np.partition(partial, k, axis=1)[:, : k + 1], axis=1) + (zb**2).sum(1)[:, None]
        distance = np.sqrt(np.maximum(nearest, 0.0))
        itself = distance[:, 0] < SAME
        out.append(np.where(itself, distance[:, 1:].mean(1), distance[:, :k].mean(1)))
    return np.concatenate(out)


def reference_of(vae, surprisal: RowSurprisal, x: np.ndarray, preprocess, pixels: bool) -> Reference | None:
    """The reference of the train split's stored rows x (None for no rows): up to
    REFERENCE_ROWS of them, evenly spread, a batch at a time (memory stays flat); the fit part
    is S_K - L where their values are pixels."""
    if not len(x):
        return None
    rows = _spread(len(x), REFERENCE_ROWS)
    chunks = np.array_split(rows, math.ceil(len(rows) / 1024))
    # two passes over the rows: every error is in units of the sd of all of them
    scale = _feature_sd(vae.split(preprocess(np.asarray(x[chunk])))[0] for chunk in chunks)
    s, z, fit_and_error = [], [], []
    for chunk in chunks:
        stored = np.asarray(x[chunk])
        inputs = preprocess(stored)
        s.append(surprisal(inputs))
        z.append(np.asarray(vae.predict_posterior(inputs)[0], np.float32))
        fit_and_error.append(_fit_and_error(vae, pixels, scale, s[-1], inputs, stored, z[-1]))
    z = np.concatenate(z)
    sample = z[_spread(len(z), NEIGHBOUR_ROWS)]
    scores = np.column_stack([np.concatenate(fit_and_error), _nearest(z, sample)])
    spreads = [np.quantile(scores[:, i], SPREAD_AT) for i in range(3)]
    total = _summed(scores, spreads)
    return Reference(
        surprisal.samples,
        len(rows),
        np.quantile(np.concatenate(s), QUANTILES),
        pixels,
        scale,
        sample,
        np.array([*spreads, np.quantile(total, SPREAD_AT)]),
    )


def _spread(n: int, most: int) -> np.ndarray:
    """Up to `most` of n positions, evenly spread, first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64))


def _feature_sd(batches) -> np.ndarray:
    """Each feature's sd over batches of rows (n, *F), NaN cells left out, merged batch by batch
    (Moments: stable where a feature's mean is large); 1 where it never varies."""
    moments = Moments()
    for batch in batches:
        moments.add(np.reshape(batch, (len(batch), -1)))
    sd = np.sqrt(moments.variance)
    return np.where(sd > 0, sd, 1.0).astype(np.float32)


def against_training(quantile: np.ndarray, novelty: np.ndarray) -> str:
    """How rows' scores stand against the training rows', in words (for new data: has it drifted?)."""
    if not len(quantile):
        return "no rows scored"
    return (
        f"{(quantile > 0.99).mean():.1%} of the {len(quantile):,} rows are more surprising than 99% of the "
        f"training rows (about 1% of rows like them would be), {(novelty > 1).mean():.1%} have novelty "
        f"above 1; median surprisal_quantile {np.median(quantile):.2f} (0.5 for rows like the training rows)"
    )


def pixel_dims(manifest) -> int | None:
    """D for bits per dimension: the values per example where they are pixels (as evaluate's figures)."""
    return math.prod(manifest.input_shape) if manifest.value_type == "pixels" else None
