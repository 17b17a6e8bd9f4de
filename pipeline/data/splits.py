"""Seeded, stratified hold-out splits decided row by row, with memory that does not grow with rows.

Row r of a labelled array gets a 64-bit key, a hash of (seed, purpose, r). A split holds
out, in each class, the rows with the smallest keys: h_c of class c, where the held-out
total is shared among the classes in proportion to their sizes (largest remainders), so
every class keeps its share on both sides. Finding each class's h_c-th smallest key takes
two passes over the labels with a histogram of the keys' top bits: memory is a few
arrays of (classes × BINS) whatever the number of rows, and a chunk of rows can be
assigned without the others (`HoldOut.held`).
"""

import math
from dataclasses import dataclass

import numpy as np

from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate

BINS = 4096  # histogram bins over the keys' top 12 bits
STEP = 1 << 20  # labels per chunk
# One purpose per split, so that the splits of one seed are independent of each other.
PURPOSES = {
    "max_examples": 1,
    "test": 2,
    "validation": 3,
    "probe subsample": 4,
    "probe test subsample": 5,
    "probe validation": 6,
}


def row_keys(rows: np.ndarray, seed: int, purpose: int) -> np.ndarray:
    """splitmix64 of (seed, purpose, row): uniform, independent 64-bit keys."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows, np.uint64) + np.uint64((seed * 1_000_003 + purpose) & (2**64 - 1)) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class HoldOut:
    """A fitted split: row r (label y) is held out when its key is at most cutoff[class]."""

    seed: int
    purpose: int
    cutoff: np.ndarray  # uint64 per class
    counts: np.ndarray  # rows held out per class
    stratified: bool
    within: "HoldOut | None" = None  # only rows this split keeps are eligible

    @classmethod
    def fit(
        cls, y: np.ndarray, held: float | int, seed: int, what: str, within: "HoldOut | None" = None
    ) -> "HoldOut":
        """held: the share held out (ceil of it, as scikit-learn rounds), or a number of rows.

        Args:
            y: labels (stratifies the split).
            held: the share held out (ceil of it, as scikit-learn rounds), or a number of rows.
            seed: seeds the rows' keys.
            what: what the split is for (keys differ per purpose).
            within: stratify within these rows only, or None.
        """
        labelled = len(y) and int(np.min(y)) >= 0
        classes = int(np.max(y)) + 1 if labelled else 1
        rule = cls(
            seed,
            PURPOSES[what],
            np.zeros(classes, np.uint64),
            np.zeros(classes, np.int64),
            stratified=bool(labelled and classes > 1),
            within=within,
        )
        sizes = np.zeros(classes, np.int64)
        for _, labels in rule._eligible(y):
            sizes += np.bincount(rule._class(labels), minlength=classes)
        total = int(sizes.sum())
        n_held = math.ceil(held * total) if isinstance(held, float) else int(held)
        quota = rule._allocate(sizes, n_held, total, what, held)
        return cls(rule.seed, rule.purpose, rule._cutoffs(y, quota), quota, rule.stratified, within)

    def held(self, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each of `rows` (indices into the fitted array; y: their labels) is held out."""
        out = self._held_alone(rows, y)
        return out & ~self.within.held(rows, y) if self.within is not None else out

    def indices(self, y: np.ndarray, scratch=None, held: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(kept, held) row indices, ascending, built chunk by chunk (into scratch memory maps when given).

        held=False: the kept rows alone (held is None), for a small sample of many rows.
        """
        eligible = len(y) - (int(self.within.counts.sum()) if self.within is not None else 0)
        parts = [allocate(scratch, f"kept-{self.purpose}", (eligible - int(self.counts.sum()),), np.int64)]
        if held:
            parts.append(allocate(scratch, f"held-{self.purpose}", (int(self.counts.sum()),), np.int64))
        at = [0, 0]
        for rows, labels in self._eligible(y):
            mask = self._held_alone(rows, labels)  # the rows are eligible already
            for i, (out, chosen) in enumerate(zip(parts, (rows[~mask], rows[mask]))):
                out[at[i] : at[i] + len(chosen)] = chosen
                at[i] += len(chosen)
        return parts[0], parts[1] if held else None

    def _held_alone(self, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        """This split's own rule, leaving `within` aside."""
        c = self._class(y)
        return (self._keys(rows) <= self.cutoff[c]) & (self.counts[c] > 0)

    def _keys(self, rows: np.ndarray) -> np.ndarray:
        return row_keys(rows, self.seed, self.purpose)

    def _class(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.int64) if self.stratified else np.zeros(len(y), np.int64)

    def _eligible(self, y: np.ndarray):
        """(rows, labels) of the eligible rows, chunk by chunk."""
        for start in range(0, len(y), STEP):
            rows = np.arange(start, min(start + STEP, len(y)))
            labels = np.asarray(y[start : start + STEP])
            if self.within is not None:
                keep = ~self.within.held(rows, labels)
                rows, labels = rows[keep], labels[keep]
            yield rows, labels

    def _cutoffs(self, y: np.ndarray, quota: np.ndarray) -> np.ndarray:
        """Each class's quota-th smallest key among the eligible rows (0 where it holds none out):
        the bin of the keys' top 12 bits it falls in, from a histogram, then its rank among the
        keys of that bin alone, so memory stays (classes × BINS) plus one bin's keys."""
        classes = len(quota)
        histogram = np.zeros(classes * BINS, np.int64)
        for rows, labels in self._eligible(y):
            c = self._class(labels)
            histogram += np.bincount(
                c * BINS + (self._keys(rows) >> np.uint64(52)).astype(np.int64), minlength=classes * BINS
            )
        below = np.cumsum(histogram.reshape(classes, BINS), axis=1)
        edge = np.array([np.searchsorted(below[c], quota[c]) if quota[c] else 0 for c in range(classes)])
        rank = quota - np.where(edge > 0, below[np.arange(classes), np.maximum(edge - 1, 0)], 0)
        in_edge = [[] for _ in range(classes)]
        for rows, labels in self._eligible(y):
            c, keys = self._class(labels), self._keys(rows)
            hit = (keys >> np.uint64(52)).astype(np.int64) == edge[c]
            for k in np.unique(c[hit]):
                in_edge[k].append(keys[hit & (c == k)])
        return np.array(
            [np.sort(np.concatenate(in_edge[c]))[rank[c] - 1] if quota[c] else 0 for c in range(classes)],
            np.uint64,
        )

    def _allocate(self, sizes: np.ndarray, n_held: int, total: int, what: str, held) -> np.ndarray:
        """Rows held out per class: proportional, the remainder to the largest fractions."""

        def fail(reason: str):
            raise DataError(f"cannot make the {what} split ({held} of {total} examples held out): {reason}")

        if not 0 < n_held < total:
            fail("both sides need at least one example")
        present = int((sizes > 0).sum())
        if self.stratified and sizes[sizes > 0].min() < 2:
            fail("the least populated class has 1 example; stratifying needs 2 of each class")
        if self.stratified and min(n_held, total - n_held) < present:
            fail(f"both sides need at least one example of each of the {present} classes")
        share = sizes * n_held / total
        quota = np.floor(share).astype(np.int64)
        order = np.argsort(-(share - quota), kind="stable")
        quota[order[: n_held - int(quota.sum())]] += 1
        return quota
