"""Covariates (data.covariates): typed, checked and coded; their codes are stored after x's values.

A covariate is a nuisance the model conditions on (a batch, a site, a donor), not a feature
of x: p(x|z, c) reads it, S and U are of x given it, and the latents carry it. The rule:
- categorical (its one-hot goes to the model): text and booleans, and whole numbers with at
  most AUTO_LEVELS distinct values (batches numbered 1, 2, 3 ...);
- real ((value - mean) / sd over the train split): other numbers.
Refused, every problem in one error: a missing value, one value in every example (nothing to
correct for), text with more than MAX_LEVELS levels (an identifier), a name that is the label
or a feature, and data the packing cannot hold (images, pixel levels, binarization).

Stored: the prepared x holds each example's features, then one code per covariate (a
categorical's level index, or a real's value); `Preprocessor` turns the codes into the
model's last inputs, so every reader of prepared rows reads them alike.
"""

import numpy as np

from pipeline.data.manifest import Covariate
from pipeline.platform.errors import DataError

# Whole numbers with at most this many distinct values are levels (batch numbers), not quantities.
AUTO_LEVELS = 100
# A text covariate with more levels is an identifier, not a batch.
MAX_LEVELS = 1000


def type_covariates(where: str, values: dict[str, np.ndarray], train: np.ndarray) -> tuple[Covariate, ...]:
    """Each covariate typed by the rule above; a real one's mean and sd from the `train` rows (a mask)."""
    typed, problems = [], []
    for name, column in values.items():
        try:
            typed.append(_typed(name, column, train))
        except ValueError as problem:
            problems.append(str(problem))
    if problems:
        raise DataError(f"{where}: data.covariates: {'; '.join(problems)}")
    return tuple(typed)


def _typed(name: str, column: np.ndarray, train: np.ndarray) -> Covariate:
    missing = int(_missing(column).sum())
    if missing:
        raise ValueError(
            f"{name!r} has no value for {missing} of {len(column)} examples (a covariate needs one "
            "for every example)"
        )
    levels = np.unique(column)
    if len(levels) < 2:
        raise ValueError(
            f"{name!r} takes one value ({_plain(levels[0])!r}) in every example: nothing to correct for"
        )
    if column.dtype == object:
        if len(levels) > MAX_LEVELS:
            raise ValueError(
                f"{name!r} has {len(levels):,} distinct values, more than {MAX_LEVELS}: an identifier, "
                "not a batch"
            )
        return Covariate(name, "categorical", f"{len(levels)} text levels", [str(v) for v in levels])
    if bool(np.all(levels == np.round(levels))) and len(levels) <= AUTO_LEVELS:
        return Covariate(
            name, "categorical", f"{len(levels)} whole-number levels", [_plain(v) for v in levels]
        )
    fit = column[train]
    sd = float(fit.std()) if len(fit) else 0.0
    return Covariate(
        name,
        "real",
        f"numbers from {levels[0]:.4g} to {levels[-1]:.4g}",
        None,
        offset=float(fit.mean()) if len(fit) else 0.0,
        scale=sd if sd > 0 else 1.0,
    )


def _missing(column: np.ndarray) -> np.ndarray:
    return np.array([v is None for v in column]) if column.dtype == object else np.isnan(column)


def _plain(value):
    """A level as JSON holds it: a whole number as int, text as str."""
    if isinstance(value, str):
        return value
    return int(value) if float(value).is_integer() else float(value)


def covariate_codes(where: str, values: dict[str, np.ndarray], covariates) -> np.ndarray:
    """(n, covariates) float32: each categorical's level index, each real's value; DataError on a
    missing value or a level never seen in training, naming the column and the value."""
    codes = np.empty((len(next(iter(values.values()))), len(covariates)), np.float32)
    for j, covariate in enumerate(covariates):
        column = values[covariate.name]
        missing = int(_missing(column).sum())
        if missing:
            raise DataError(
                f"{where}: covariate {covariate.name!r} has no value for {missing} "
                "examples (the model needs one for every example)"
            )
        if covariate.levels is None:
            codes[:, j] = column
            continue
        text = isinstance(covariate.levels[0], str)
        keys = [str(v) if text else _plain(v) for v in column]
        index = {level: i for i, level in enumerate(covariate.levels)}
        unseen = next((v for v in keys if v not in index), None)
        if unseen is not None:
            raise DataError(
                f"{where}: covariate {covariate.name!r} holds {unseen!r}, a level never seen in training "
                f"(its levels: {covariate.levels[:20]})"
            )
        codes[:, j] = [index[v] for v in keys]
    return codes


def as_if(covariates, preprocess, rows: int, **levels) -> np.ndarray:
    """(rows, the model's covariate inputs) of rows that all come from the given levels, one per
    covariate by name: decode z with them for a counterfactual, "as if from batch b" (scVI's
    transform_batch), e.g. pipeline.latents.imputation.decoded_means(vae, z, c=as_if(...))."""
    names = [c.name for c in covariates]
    if sorted(levels) != sorted(names):
        raise DataError(f"as_if: give one value for each covariate {names}. Got {sorted(levels)} instead.")
    values = {
        c.name: np.array(
            [levels[c.name]] * rows, dtype=object if c.levels and isinstance(c.levels[0], str) else np.float64
        )
        for c in covariates
    }
    return preprocess.covariate_inputs(covariate_codes("as_if", values, covariates))


def covariate_values(stored: np.ndarray, covariates) -> dict[str, np.ndarray]:
    """{name: (n,) values} of stored rows whose codes end each row: levels, or numbers."""
    codes = np.asarray(stored)[:, -len(covariates) :]
    return {
        c.name: (
            np.asarray(c.levels, dtype=object)[codes[:, j].astype(np.int64)]
            if c.levels is not None
            else codes[:, j].astype(np.float64)
        )
        for j, c in enumerate(covariates)
    }


def stored_codes(x: np.ndarray, rows: np.ndarray, covariates) -> dict[str, np.ndarray]:
    """{name: (rows,) int codes} of each categorical covariate, from stored rows whose codes end each row."""
    codes = np.asarray(x[rows])[:, -len(covariates) :]
    return {c.name: codes[:, j].astype(np.int64) for j, c in enumerate(covariates) if c.type == "categorical"}


def coding(covariates) -> dict[str, np.ndarray]:
    """The Preprocessor's fields that turn stored codes into the model's inputs (see its docstring)."""
    return {
        "covariate_widths": np.array(
            [c.width if c.type == "categorical" else 0 for c in covariates], np.int64
        ),
        "covariate_offset": np.array([c.offset for c in covariates], np.float32),
        "covariate_scale": np.array([c.scale for c in covariates], np.float32),
    }


def check_packable(where: str, x: np.ndarray, kind: str, binarize: str) -> None:
    """Covariates are stored after each example's values: the examples must be rows of features."""
    if x.ndim != 2 or kind == "pixels":
        raise DataError(
            f"{where}: data.covariates needs examples that are rows of features (a table, a matrix, an "
            f"npz of vectors); these are {kind} of shape {list(x.shape[1:])}, which covariates do not "
            "support yet"
        )
    if binarize != "none":
        raise DataError(
            f"{where}: data.binarize {binarize!r} does not combine with data.covariates (binarizing "
            "would change the covariates' codes); set data.binarize: none"
        )


class PackedRows:
    """x's rows followed by the covariates' codes, (n, features + covariates) float32, read by
    slices or row indices: the rows prepare stores and the encode command encodes."""

    def __init__(self, x: np.ndarray, codes: np.ndarray):
        self.x, self.codes = x, codes
        self.shape = (len(x), x.shape[1] + codes.shape[1])
        self.dtype, self.ndim = np.dtype(np.float32), 2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows) -> np.ndarray:
        return np.concatenate([np.asarray(self.x[rows], np.float32), self.codes[rows]], axis=-1)
