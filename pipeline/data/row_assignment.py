"""Which split each source row goes to, chunk by chunk, and how many examples of each class each split gets.

prepare decides a row's split from its index and label alone (pipeline.data.splits), so the
source is read `step` rows at a time and no array of its length is held.
"""

import numpy as np

from pipeline.data.prepared import SPLITS
from pipeline.data.readers.source_dataset import Dataset
from pipeline.data.splits import HoldOut
from pipeline.platform.errors import DataError
from pipeline.platform.params.config import DataConfig


class Assignment:
    """Which split each source row goes to (or none, under data.max_examples), chunk by chunk."""

    def __init__(self, dataset: Dataset, config: DataConfig, seed: int):
        n = len(dataset.y)
        self.subsample = (
            HoldOut.fit(dataset.y, n - config.max_examples, seed, "max_examples")
            if config.max_examples and config.max_examples < n
            else None
        )
        self.is_test = dataset.is_test  # the source's own split, when it has one
        self.test = (
            HoldOut.fit(dataset.y, config.test_fraction, seed, "test", within=self.subsample)
            if self.is_test is None
            else None
        )

    def masks(self, rows: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        kept = ~self.subsample.held(rows, y) if self.subsample is not None else np.ones(len(rows), bool)
        test = (np.asarray(self.is_test[rows]) & kept) if self.test is None else self.test.held(rows, y)
        return {"train": kept & ~test, "test": test}


def assigned(dataset: Dataset, assign: Assignment, step: int):
    """(rows, y, {split: mask}) for every `step` rows of the source: the labels alone."""
    for start in range(0, len(dataset.y), step):
        rows = np.arange(start, min(start + step, len(dataset.y)))
        y = np.asarray(dataset.y[start : start + step])
        yield rows, y, assign.masks(rows, y)


def chunks(x, dataset: Dataset, assign: Assignment, step: int):
    """(x, y, rows, {split: mask}) for every `step` rows of the source: x's rows (the dataset's,
    or those with the covariates' codes after them)."""
    for rows, y, masks in assigned(dataset, assign, step):
        yield np.asarray(x[rows[0] : rows[-1] + 1]), y, rows, masks


def count(dataset: Dataset, assign: Assignment, step: int) -> dict[str, np.ndarray]:
    """Examples per class (one count when unlabelled) of each split."""
    labelled = dataset.labelled
    classes = max(len(dataset.label_names), 1) if labelled else 1
    counts = {split: np.zeros(classes, np.int64) for split in SPLITS}
    for _, y, masks in assigned(dataset, assign, step):
        for split, mask in masks.items():
            counts[split] += np.bincount(
                y[mask] if labelled else np.zeros(mask.sum(), np.int64), minlength=classes
            )
    return counts


def check_classes(dataset: Dataset, counts: dict[str, np.ndarray]) -> None:
    """DataError when a labelled split holds a single class: the probes need two."""
    if not dataset.labelled:
        return
    for split, per_class in counts.items():
        present = np.flatnonzero(per_class)
        if per_class.sum() and present.size < 2:
            raise DataError(
                f"{dataset.path or dataset.source}: the {split} split holds only class "
                f"{dataset.label_names[present[0]]!r}; probes need at least two "
                "(use more examples or another data.test_fraction)"
            )
