"""The one preprocessing (pipeline.data.prepared.Preprocessor), fitted on the train rows.

Statistics are merged block by block (Chan et al.), over blocks of STATS_ROWS rows
whatever the chunks prepare reads, so the chunk size changes no byte of the result;
missing cells (NaN) count for nothing.
"""

import numpy as np

from pipeline.data.manifest import Column
from pipeline.data.prepared import Preprocessor

# Scaling statistics are summed over blocks of this many rows whatever the chunk size of
# prepare, so that chunking changes nothing in the prepared data, not even a rounding.
STATS_ROWS = 4096


def fit_preprocessor(
    chunks,
    shape: tuple[int, ...],
    levels: float | None,
    scaling: str,
    threshold: float | None,
    columns: tuple[Column, ...] | None = None,
) -> Preprocessor:
    """The Preprocessor of the train rows, given as consecutive chunks of examples of `shape`.

    Statistics are summed over blocks of STATS_ROWS rows whatever the chunks, so that the
    chunk size changes nothing. levels: the top of the pixel scale (pixels are divided by
    it), None for other data. columns: a table's typed columns (x holds their codes).

    Args:
        chunks: the train rows, as consecutive arrays of examples.
        shape: one stored example's shape.
        levels: the top of the pixel scale, or None.
        scaling: data.scaling, resolved.
        threshold: static binarization's threshold, or None.
        columns: a table's columns, or None.

    Returns:
        The fitted Preprocessor.
    """
    if columns is not None:
        return _table_preprocessor(chunks, scaling, columns)
    offset, scale = _offset_and_scale(chunks, levels, scaling)
    scale = np.where(scale > 0, scale, 1.0)  # constant features map to 0
    shape = (1,) if offset.size == 1 else tuple(shape)
    return Preprocessor(
        scaling, offset.reshape(shape).astype(np.float32), scale.reshape(shape).astype(np.float32), threshold
    )


def _offset_and_scale(chunks, levels: float | None, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) of x' = (x - offset) / scale: one of each for pixels on their scale (unit)
    or no scaling, else per feature from the train rows' statistics (range or mean and std)."""
    if scaling == "none":
        return np.zeros(1), np.ones(1)
    if scaling == "unit" and levels is not None:
        return np.zeros(1), np.array([levels])
    stats = _FeatureStats()
    for block in _reblock(chunks, STATS_ROWS):
        stats.add(np.asarray(block, np.float64).reshape(len(block), -1))
    return (stats.low, stats.high - stats.low) if scaling == "unit" else (stats.mean, stats.std)


def _table_preprocessor(chunks, scaling: str, columns: tuple[Column, ...]) -> Preprocessor:
    """Scaling fitted on the real columns' observed values; one-hot features for categoricals."""
    stats = _FeatureStats()
    if scaling != "none" and any(c.type == "real" for c in columns):
        for block in _reblock(chunks, STATS_ROWS):
            stats.add(np.asarray(block, np.float64))
    source, level, real, offset, scale = [], [], [], [], []
    for i, column in enumerate(columns):
        is_real = column.type == "real" and scaling != "none"
        low_or_mean = (stats.low if scaling == "unit" else stats.mean)[i] if is_real else 0.0
        spread = (stats.high - stats.low if scaling == "unit" else stats.std)[i] if is_real else 1.0
        for j in range(column.width):
            source.append(i)
            level.append(j if column.type == "categorical" else -1)
            real.append(column.type == "real")
            offset.append(low_or_mean)
            scale.append(spread if spread > 0 else 1.0)
    return Preprocessor(
        scaling,
        np.array(offset, np.float32),
        np.array(scale, np.float32),
        None,
        np.array(source, np.int64),
        np.array(level, np.float32),
        np.array(real, bool),
    )


def _reblock(chunks, n: int):
    """The rows of `chunks` again, as blocks of exactly n rows (the last one shorter)."""
    pending, held = [], 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= n:
            rows = np.concatenate(pending)
            yield rows[:n]
            pending, held = [rows[n:]], held - n
    if held:
        yield np.concatenate(pending)


class _FeatureStats:
    """Per-feature min, max, mean and standard deviation, merged block by block (Chan et al.)."""

    def __init__(self):
        self.n, self.mean, self.m2, self.low, self.high = 0, 0.0, 0.0, np.inf, -np.inf

    def add(self, block: np.ndarray) -> None:
        """Merge a block's rows; NaN (a missing cell) counts for nothing."""
        finite = np.isfinite(block)
        n = finite.sum(axis=0)
        mean = np.nansum(block, axis=0) / np.maximum(n, 1)
        m2, delta, total = np.nansum((block - mean) ** 2, axis=0), mean - self.mean, self.n + n
        self.mean = self.mean + delta * n / np.maximum(total, 1)
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / np.maximum(total, 1)
        self.n = total
        self.low = np.minimum(self.low, np.where(finite, block, np.inf).min(axis=0))
        self.high = np.maximum(self.high, np.where(finite, block, -np.inf).max(axis=0))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n, 1))
