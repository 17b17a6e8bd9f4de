"""How well a table model reconstructs each column, and how well it fills in cells it
was not shown, against filling them with the column's mean or mode.

Imputation is the posterior mean: z = μ_φ(x_obs) from the observed cells, then the
decoder's E[x | z] (a real column's mean, a count's expected count, a binary or
categorical column's most probable level). To score it, a seeded `HIDE_FRACTION` of the
observed cells of each column is hidden from the encoder, one column at a time (the rest
of the row as it was), and predicted back; the baseline fills the same cells with the
train rows' mean (real, count) or mode (binary, categorical). Real columns are scored in their own
units (RMSE), counts by RMSE,
binary and categorical columns by accuracy.
"""

import numpy as np

from pipeline.data.manifest import Column
from pipeline.data.prepared import Split

# The share of each column's observed cells hidden from the model and imputed back.
HIDE_FRACTION = 0.1


def column_quality(
    vae,
    split: Split,
    rows: np.ndarray,
    columns: list[Column],
    baseline: np.ndarray,
    seed: int,
    hide_fraction: float = HIDE_FRACTION,
) -> dict:
    """{column: {type, reconstruction, imputation: {model, mean_or_mode, cells, hidden}}} on split rows.

    baseline: the train rows' fill value of every model feature (`fill_values`).

    Args:
        vae: a table model.
        split: the prepared split.
        rows: the scored rows of it.
        columns: the manifest's columns.
        baseline: the train rows' fill value of every model feature (`fill_values`).
        seed: seeds which observed cells are hidden.
        hide_fraction: the share of each column's observed cells hidden and imputed.
    """
    x = split.inputs(rows)  # (n, F), NaN where missing
    starts = np.cumsum([0] + [c.width for c in columns])
    hidden = _hidden_cells(x[:, starts[:-1]], seed, hide_fraction)  # (n, columns)
    full, scale = _decoded_means(vae, x), split.preprocess.scale
    out = {}
    for c, column in enumerate(columns):
        features = slice(starts[c], starts[c + 1])
        cells = hidden[:, c]
        out[column.name] = _one_column(vae, x, full, column, features, cells, scale, baseline, hide_fraction)
    return out


def _one_column(vae, x, full, column: Column, features: slice, cells, scale, baseline, hide_fraction) -> dict:
    """One column's entry of `column_quality`: its reconstruction on the observed cells left
    shown, and the imputation of its hidden `cells` by the model and by the mean or mode.

    x: the rows, (n, F); full: their decoded means with every observed cell shown;
    features: the column's slice of the F model features; cells: (n,) its hidden cells."""
    first = features.start
    shown = x[cells].copy()  # the rows with a hidden cell of this column, that cell hidden
    shown[:, features] = np.nan
    imputed = _decoded_means(vae, shown)[:, features]
    observed = np.isfinite(x[:, first]) & ~cells
    score = _scorer(column.type, float(scale[first]))
    truth = x[cells, features]
    return {
        "type": column.type,
        "metric": "accuracy" if column.type in ("binary", "categorical") else "rmse",
        "reconstruction": score(full[observed, features], x[observed, features]),
        "imputation": {
            "model": score(imputed, truth),
            "mean_or_mode": score(np.broadcast_to(baseline[features], truth.shape), truth),
            "cells": int(cells.sum()),
            "hidden": hide_fraction,
        },
    }


def fill_values(split: Split, rows: np.ndarray, columns: list[Column]) -> np.ndarray:
    """Each model feature's mean/mode fill value from split rows: the mean of a real or count
    feature, the mode of a binary column, the most frequent level's one-hot of a categorical."""
    x = split.inputs(rows)
    values, at = [], 0
    for column in columns:
        block = x[:, at : at + column.width]
        values.append(column_fill(column.type, block[np.isfinite(block[:, 0])]))
        at += column.width
    return np.concatenate(values).astype(np.float32)


def column_fill(kind: str, observed: np.ndarray) -> np.ndarray:
    """The mean (real, count) or the mode (binary; categorical, as its one-hot; ties to the
    lower level) of one column's observed values (n, width): (width,), zeros when n = 0."""
    if not len(observed):
        return np.zeros(observed.shape[1])
    if kind == "categorical":
        return np.eye(observed.shape[1])[
            np.bincount(observed.argmax(axis=1), minlength=observed.shape[1]).argmax()
        ]
    if kind == "binary":
        return np.array([np.bincount(observed[:, 0].astype(int), minlength=2).argmax()], float)
    return observed.mean(axis=0)


def _hidden_cells(first_features: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """(n, columns) bool: a seeded `fraction` of each column's observed cells."""
    draw = np.random.default_rng(seed).uniform(size=first_features.shape)
    return np.isfinite(first_features) & (draw < fraction)


def decoded_means(vae, z: np.ndarray, batch_size: int = 1024, c: np.ndarray | None = None) -> np.ndarray:
    """E[x | z, c], the decoder's mean, for z of shape (n, d) (and covariates c (n, k) where the
    model has them), batch by batch: (n, *F)."""
    rows = [slice(start, start + batch_size) for start in range(0, len(z), batch_size)]
    parts = [
        np.asarray(vae.likelihood.mean(vae.decode(np.asarray(z[r])[None], None if c is None else c[r]))[0])
        for r in rows
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *vae.example_shape), np.float32)


def _decoded_means(vae, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """E[x | z = μ_φ(x), c] per feature, batch by batch, of the model's inputs x: (n, F)."""
    parts = [
        decoded_means(
            vae,
            np.asarray(vae.predict_posterior(x[start : start + batch_size])[0]),
            batch_size,
            vae.split(x[start : start + batch_size])[1],
        )
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *vae.example_shape), np.float32)


def _scorer(kind: str, scale: float):
    """score(predicted, true) for a column's cells, each (cells, width): accuracy or RMSE."""
    if kind == "categorical":
        return lambda p, t: _rounded(np.mean(p.argmax(axis=1) == t.argmax(axis=1))) if len(t) else None
    if kind == "binary":
        return lambda p, t: _rounded(np.mean((p[:, 0] >= 0.5) == (t[:, 0] >= 0.5))) if len(t) else None
    # real: standardized values back in the column's units (×σ of the train rows); counts as they are
    return lambda p, t: _rounded(np.sqrt(np.mean((p - t) ** 2)) * scale) if len(t) else None


def _rounded(value) -> float:
    return round(float(value), 4)


class Completer:
    """A table's rows with every missing cell imputed, in the column's own units and levels:
    `complete(codes, z_mean)` -> ({column: values}, {column: imputed flags}), where codes are
    the stored rows (pipeline.data.readers.tables: values, level indices, NaN where missing) and z_mean
    their μ_φ. Observed cells are kept as they are; the encode stage and command write the
    result beside the latents (`completed`, `imputed`) under encode.impute / --impute."""

    def __init__(self, vae, columns: list[Column], preprocess):
        self.vae, self.columns, self.preprocess = vae, columns, preprocess
        self.starts = np.cumsum([0] + [c.width for c in columns])

    @property
    def table(self) -> dict:
        """{column: its levels, or None for numbers}: the `completed` struct's fields."""
        return {c.name: c.levels for c in self.columns}

    def guesses(self, z_mean: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Every cell's reconstruction, coded as the stored rows `codes` are (a level's index, or a
        value in the column's units): the decoder's mean at z_mean (and the rows' covariates),
        its most likely level. (n, columns)"""
        covariates = self.vae.split(self.preprocess(codes))[1] if self.vae.config.model.covariates else None
        means = decoded_means(self.vae, z_mean, c=covariates)  # (n, F)
        out = np.empty((len(z_mean), len(self.columns)), np.float64)
        for c, column in enumerate(self.columns):
            first = self.starts[c]
            block = means[:, first : self.starts[c + 1]]
            if column.type == "categorical":
                out[:, c] = block.argmax(axis=1)
            elif column.type == "binary":
                out[:, c] = block[:, 0] >= 0.5
            elif column.type == "real":  # the decoder's mean, back in the column's units
                out[:, c] = block[:, 0] * self.preprocess.scale[first] + self.preprocess.offset[first]
            else:  # count: the expected count
                out[:, c] = block[:, 0]
        return out

    def __call__(self, codes: np.ndarray, z_mean: np.ndarray) -> tuple[dict, dict]:
        guesses = self.guesses(z_mean, codes)
        completed, imputed = {}, {}
        for c, column in enumerate(self.columns):
            missing = np.isnan(codes[:, c])
            value = np.where(missing, guesses[:, c], codes[:, c])
            completed[column.name] = (
                [column.levels[int(i)] for i in value]
                if column.levels is not None
                else value.astype(np.float64)
            )
            imputed[column.name] = missing
        return completed, imputed
