"""`Dataset`, what every source reader returns, and the helpers the readers share.

x keeps the source's own dtype (uint8 pixels, float features); nothing is scaled here.
Readers work in chunks of about CHUNK_BYTES and decode into `scratch` memory maps
(`pipeline.platform.io.allocate`), so memory does not grow with the data.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Column
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate

log = logging.getLogger(__name__)

NO_LABEL = -1
# Rows are read, decoded and copied in chunks of about this many bytes (of the source's
# dtype; a uint8 chunk becomes four times this as float32 inputs).
CHUNK_BYTES = 16 << 20
# The model computes in float32: its largest value, and the integers it holds exactly (2^24).
FLOAT32_MAX, FLOAT32_EXACT_INTEGERS = float(np.finfo(np.float32).max), 2**24
# Deflate (zip, gzip) cannot expand data by more than about 1032 times: a header declaring
# more than that for its compressed bytes is impossible, and refused before anything is allocated.
DEFLATE_MAX_RATIO = 1032


@dataclass(frozen=True)
class Dataset:
    """Examples of one source, rows aligned.

    x: (n, *example_shape) in the source's dtype; y: (n,) int32 class indices into
    label_names, NO_LABEL where there is none; is_test: (n,) bool where the source fixes
    its own test split, else None.
    """

    x: np.ndarray
    y: np.ndarray
    label_names: tuple[str, ...]
    source: str
    path: str | None = None
    is_test: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None  # tables: the columns of x, in order
    # Images whose pixel scale the reader knows tops out below 255 (digits: 0..16).
    # uint8 arrays are pixels on 0..255 without saying so (pipeline.data.resolve_data.pixel_levels).
    declared_levels: float | None = None
    # Tables: each column's type and levels; x holds codes (values or level indices), NaN where missing.
    columns: tuple[Column, ...] | None = None
    # `auto` choices the reader made (e.g. data.images.color), with their rules: {key: Choice}.
    choices: dict = field(default_factory=dict)
    # data.covariates as read, {name: (n,) values} (pipeline.data.readers.covariate_values), or None
    covariates: dict | None = None

    @property
    def labelled(self) -> bool:
        return bool(len(self.y)) and bool((self.y != NO_LABEL).all())


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk of about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def encode_labels(
    raw: np.ndarray | None, n: int, scratch: Path | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..k-1 (sorted by value) and their names; NO_LABEL for all when raw is None.

    Works through `raw` a chunk at a time (it may be a memory map); the indices go to a
    scratch memory map when given.
    """
    y = allocate(scratch, "labels", (n,), np.int32)
    if raw is None:
        y[:] = NO_LABEL
        return y, ()
    step = 1 << 20
    names = np.unique(
        np.concatenate(
            [np.unique(np.asarray(raw[i : i + step]).reshape(-1)) for i in range(0, n, step)] or [np.zeros(0)]
        )
    )
    for i in range(0, n, step):
        y[i : i + step] = np.searchsorted(names, np.asarray(raw[i : i + step]).reshape(-1))
    return y, tuple(str(v) for v in names)


def check_float32(where: str, low: float, high: float, integral: bool) -> None:
    """Refuse values beyond float32's range (they would become ±inf in the model); warn when
    integers are beyond 2^24, which float32 rounds to a neighbour (16,777,217 -> 16,777,216)."""
    largest = max(abs(low), abs(high))
    if largest > FLOAT32_MAX:
        raise DataError(
            f"{where}: values up to {largest:.3g} are beyond float32's range (±{FLOAT32_MAX:.3g}), "
            "in which the model computes; rescale them (e.g. divide by a power of ten)"
        )
    if integral and largest > FLOAT32_EXACT_INTEGERS:
        log.warning(
            "%s: integers up to %d are beyond 2^24 = 16,777,216; float32, in which the model "
            "computes, rounds them to the nearest value it holds (relative error below 6e-8)",
            where,
            largest,
        )
