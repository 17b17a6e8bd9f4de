"""The surprisal of every row, in the latents beside z: which examples are odd.

    surprisal           S_K in nats (RowSurprisal: K importance samples keyed by the row)
    bits_per_dim        S_K / (D ln 2) where the values are pixels, else null
    surprisal_quantile  the fraction of the training rows that are less surprising: a
                        calibrated score for new data (null without a reference)
    novelty             the score to rank rows by when looking for odd ones

The quantile's reference is the S_K of up to REFERENCE_ROWS rows of the train split, spread
evenly over it, summarised by the S_K at QUANTILES; the encode stage computes it once and
every latents file records it (metadata "surprisal"), where `vae-pipeline encode` finds it.
"""

import math
from dataclasses import dataclass

import numpy as np

from pipeline.latents.parquet import RowScores
from pipeline.model.diagnostics import RowSurprisal

REFERENCE_ROWS = 10_000
# S_K at every 0.1% of the reference rows: 1,001 numbers in each file's metadata, enough
# to tell the 99.9th percentile from the 99th.
QUANTILES = np.linspace(0.0, 1.0, 1001)
NOVELTY = "the surprisal S_K (nats)"


@dataclass(frozen=True)
class Reference:
    """The training rows' S_K at QUANTILES, and how it was made."""

    importance_samples: int
    rows: int
    quantiles: np.ndarray

    def quantile(self, surprisal: np.ndarray) -> np.ndarray:
        """The fraction of reference rows less surprising than each value (0 below all, 1 above)."""
        return np.interp(surprisal, self.quantiles, QUANTILES)

    def as_dict(self) -> dict:
        return {"importance_samples": self.importance_samples, "rows": self.rows,
                "quantiles": [float(v) for v in self.quantiles]}

    @classmethod
    def of(cls, record: dict) -> "Reference":
        return cls(int(record["importance_samples"]), int(record["rows"]), np.asarray(record["quantiles"], float))


class Scorer:
    """The score columns of model inputs.

    Args:
        surprisal: each row's S_K (RowSurprisal, of the model and K).
        pixel_dims: D, the values per example where they are pixels (bits per dimension), else None.
        reference: the training rows' S_K, for surprisal_quantile (None: the column is null).
    """

    def __init__(self, surprisal: RowSurprisal, pixel_dims: int | None, reference: Reference | None):
        if reference is not None and reference.importance_samples != surprisal.samples:
            raise ValueError(f"a reference of K = {reference.importance_samples} scores rows with that K, "
                             f"not {surprisal.samples}")
        self.surprisal, self.pixel_dims, self.reference = surprisal, pixel_dims, reference

    @classmethod
    def of(cls, vae, record: dict, pixel_dims: int | None) -> "Scorer":
        """The scorer whose `record()` this is (a Ray actor's, from the stage's metadata)."""
        reference = record["reference"] and Reference.of(record["reference"])
        return cls(RowSurprisal(vae, record["importance_samples"]), pixel_dims, reference)

    def __call__(self, x: np.ndarray) -> RowScores:
        s = self.surprisal(x)
        return RowScores(s, s / (self.pixel_dims * math.log(2)) if self.pixel_dims else None,
                         self.reference.quantile(s) if self.reference else None, s)

    def record(self) -> dict:
        """What the files' metadata says of the scores."""
        return {"importance_samples": self.surprisal.samples, "novelty": NOVELTY,
                "bits_per_dim": "S_K / (D ln 2), D values per example" if self.pixel_dims else
                "null: the values are not pixels",
                "reference": self.reference.as_dict() if self.reference else None}


def reference_of(surprisal: RowSurprisal, x: np.ndarray, preprocess) -> Reference | None:
    """The reference of the train split's stored rows x: up to REFERENCE_ROWS of them, evenly
    spread (None for no rows)."""
    if not len(x):
        return None
    rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), REFERENCE_ROWS)).round().astype(np.int64))
    s = np.concatenate([surprisal(preprocess(np.asarray(x[chunk])))
                        for chunk in np.array_split(rows, math.ceil(len(rows) / 1024))])
    return Reference(surprisal.samples, len(rows), np.quantile(s, QUANTILES))


def pixel_dims(manifest) -> int | None:
    """D for bits per dimension: the values per example where they are pixels (as evaluate's figures)."""
    return math.prod(manifest.input_shape) if manifest.value_type == "pixels" else None
