"""`Dataset`, what every source reader returns, and the helpers the readers share.

x keeps the source's own dtype (uint8 pixels, float features); nothing is scaled here.
Readers work in chunks of about CHUNK_BYTES and decode into `scratch` memory maps
(`pipeline.platform.io.allocate`), so memory does not grow with the data.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Column
from pipeline.platform.io import allocate

NO_LABEL = -1
# Rows are read, decoded and copied in chunks of about this many bytes (of the source's
# dtype; a uint8 chunk becomes four times this as float32 inputs).
CHUNK_BYTES = 16 << 20


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
    # `auto` choices the reader made (e.g. data.images.color), with their rules.
    choices: dict = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(len(self.y)) and bool((self.y != NO_LABEL).all())


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk of about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def encode_labels(raw: np.ndarray | None, n: int, scratch: Path | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..k-1 (sorted by value) and their names; NO_LABEL for all when raw is None.

    Works through `raw` a chunk at a time (it may be a memory map); the indices go to a
    scratch memory map when given.
    """
    y = allocate(scratch, "labels", (n,), np.int32)
    if raw is None:
        y[:] = NO_LABEL
        return y, ()
    step = 1 << 20
    names = np.unique(np.concatenate([np.unique(np.asarray(raw[i:i + step]).reshape(-1)) for i in range(0, n, step)]
                                     or [np.zeros(0)]))
    for i in range(0, n, step):
        y[i:i + step] = np.searchsorted(names, np.asarray(raw[i:i + step]).reshape(-1))
    return y, tuple(str(v) for v in names)
