"""The surprisal of every row, in the latents beside z: which examples are odd.

    surprisal           S_K in nats (RowSurprisal: K importance samples keyed by the row)
    bits_per_dim        S_K / (D ln 2) where the values are pixels, else null
    surprisal_quantile  the fraction of the training rows that are less surprising: a
                        calibrated score for new data (null without a reference)
    novelty             the score to rank rows by when looking for odd ones: how far a row's
                        S_K, and for pixels its complexity-corrected S_K - L (PNG code length,
                        pipeline.latents.complexity), lie above the training rows' median, in
                        units of their 99th percentile's distance from it (the larger of the
                        two): 1 is as odd as the training rows' 99th percentile; null without
                        a reference. On pictures S_K alone misses simple odd ones (occluded,
                        flipped, other classes) and S_K - L misses noise; benchmarks/novelty.py
                        measures each.

The reference is the S_K (and S_K - L) of up to REFERENCE_ROWS rows of the train split,
spread evenly over it, summarised at QUANTILES; the encode stage computes it once and every
latents file records it (metadata "surprisal"), where `vae-pipeline encode` finds it.
"""

import math
from dataclasses import dataclass

import numpy as np

from pipeline.latents.complexity import png_nats
from pipeline.latents.parquet import RowScores
from pipeline.model.diagnostics import RowSurprisal

REFERENCE_ROWS = 10_000
# S_K at every 0.1% of the reference rows: 1,001 numbers in each file's metadata, enough
# to tell the 99.9th percentile from the 99th.
QUANTILES = np.linspace(0.0, 1.0, 1001)
MEDIAN, TAIL = 500, 990  # the positions of 0.5 and 0.99 in QUANTILES
NOVELTY = {
    False: "(S_K - m) / (q99 - m), m and q99 the training rows' median and 99th percentile of S_K",
    True: "the larger of (S_K - m) / (q99 - m) and the same of S_K - L, L the PNG code length of the "
    "pixels in nats (a complexity correction); m and q99 the training rows' median and 99th percentile",
}


@dataclass(frozen=True)
class Reference:
    """The training rows' S_K at QUANTILES, for pixels their S_K - L too, and how it was made."""

    importance_samples: int
    rows: int
    quantiles: np.ndarray
    corrected: np.ndarray | None = None  # S_K - L at QUANTILES (pixels), else None

    def quantile(self, surprisal: np.ndarray) -> np.ndarray:
        """The fraction of reference rows less surprising than each value (0 below all, 1 above)."""
        return np.interp(surprisal, self.quantiles, QUANTILES)

    def novelty(self, surprisal: np.ndarray, corrected: np.ndarray | None) -> np.ndarray:
        """NOVELTY of rows' S_K and, where the reference has it, their S_K - L."""
        scores = [_beyond(surprisal, self.quantiles)]
        if self.corrected is not None:
            scores.append(_beyond(corrected, self.corrected))
        return np.maximum.reduce(scores)

    def as_dict(self) -> dict:
        return {
            "importance_samples": self.importance_samples,
            "rows": self.rows,
            "quantiles": [float(v) for v in self.quantiles],
            "corrected": None if self.corrected is None else [float(v) for v in self.corrected],
        }

    @classmethod
    def of(cls, record: dict) -> "Reference":
        corrected = record.get("corrected")
        return cls(
            int(record["importance_samples"]),
            int(record["rows"]),
            np.asarray(record["quantiles"], float),
            None if corrected is None else np.asarray(corrected, float),
        )


def _beyond(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(values - median) / (99th percentile - median) of the reference's `quantiles`."""
    spread = quantiles[TAIL] - quantiles[MEDIAN]
    return (values - quantiles[MEDIAN]) / (spread if spread > 0 else 1.0)


class Scorer:
    """The score columns of model inputs.

    Args:
        surprisal: each row's S_K (RowSurprisal, of the model and K).
        pixel_dims: D, the values per example where they are pixels (bits per dimension), else None.
        reference: the training rows' scores, for surprisal_quantile and novelty (None: both null).
    """

    def __init__(self, surprisal: RowSurprisal, pixel_dims: int | None, reference: Reference | None):
        if reference is not None and reference.importance_samples != surprisal.samples:
            raise ValueError(
                f"a reference of K = {reference.importance_samples} scores rows with that K, "
                f"not {surprisal.samples}"
            )
        self.surprisal, self.pixel_dims, self.reference = surprisal, pixel_dims, reference

    @classmethod
    def of(cls, vae, record: dict, pixel_dims: int | None) -> "Scorer":
        """The scorer whose `record()` this is (a Ray actor's, from the stage's metadata)."""
        reference = record["reference"] and Reference.of(record["reference"])
        return cls(RowSurprisal(vae, record["importance_samples"]), pixel_dims, reference)

    def __call__(self, x: np.ndarray, stored: np.ndarray) -> RowScores:
        """The scores of model inputs x, whose stored rows (pixel levels for L) are `stored`."""
        s, reference = self.surprisal(x), self.reference
        corrected = (
            s - png_nats(stored) if reference is not None and reference.corrected is not None else None
        )
        return RowScores(
            s,
            s / (self.pixel_dims * math.log(2)) if self.pixel_dims else None,
            reference.quantile(s) if reference else None,
            reference.novelty(s, corrected) if reference else None,
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


def reference_of(surprisal: RowSurprisal, x: np.ndarray, preprocess, pixels: bool) -> Reference | None:
    """The reference of the train split's stored rows x: up to REFERENCE_ROWS of them, evenly
    spread (None for no rows); with S_K - L where their values are pixels."""
    if not len(x):
        return None
    rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), REFERENCE_ROWS)).round().astype(np.int64))
    s, corrected = [], []
    for chunk in np.array_split(rows, math.ceil(len(rows) / 1024)):
        stored = np.asarray(x[chunk])
        s.append(surprisal(preprocess(stored)))
        if pixels:
            corrected.append(s[-1] - png_nats(stored))
    return Reference(
        surprisal.samples,
        len(rows),
        np.quantile(np.concatenate(s), QUANTILES),
        np.quantile(np.concatenate(corrected), QUANTILES) if pixels else None,
    )


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
