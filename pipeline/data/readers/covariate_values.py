"""The values of `data.covariates` as a source holds them, one per example: a table's
columns, an .h5ad file's obs columns, or an .npz file's arrays. Typing and coding them is
pipeline.data.covariates' job; this module only reads, and names every covariate it cannot
find in one error."""

import difflib
from pathlib import Path

import numpy as np

from pipeline.data.readers.table_files import CsvStream, open_table, table_errors
from pipeline.platform.engine import LocalEngine
from pipeline.platform.errors import DataError

# The sources whose examples come with per-example columns to read covariates from.
COVARIATE_SOURCES = ("table", "anndata", "npz")


def read_covariate_values(source: str, path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{name: values} of each covariate: numbers as float64 (NaN where missing), anything else
    as an object array of str (None where missing). Read before the examples, so that a name
    the file lacks is named as a covariate (`one_per_example` checks them against the examples).

    Args:
        source: data.source.
        path: the file the source reads.
        names: data.covariates.
    """
    if source not in COVARIATE_SOURCES:
        raise DataError(
            f"data.covariates {list(names)}: {source} examples have no per-example columns to read "
            "covariates from; they come from a table's columns, an .h5ad file's obs columns or an "
            ".npz file's arrays"
        )
    readers = {"table": _table_values, "anndata": _obs_values, "npz": _npz_values}
    values = readers[source](Path(path), list(names))
    return {name: _plain(values[name]) if np.ndim(values[name]) == 1 else values[name] for name in names}


def one_per_example(path, values: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The values, checked to hold one value per example (`rows` of them)."""
    wrong = [
        f"{name!r} has shape {list(np.shape(v))}" for name, v in values.items() if np.shape(v) != (rows,)
    ]
    if wrong:
        raise DataError(f"{path}: each covariate needs one value per example ({rows}); {', '.join(wrong)}")
    return values


def check_covariate_names(config) -> None:
    """Refuse covariates that are the label or a feature (config: a DataConfig), all in one error."""
    names, table = config.covariates, config.table
    taken = {
        "table": {
            table.label_column: "data.table.label_column",
            **{c: "in data.table.feature_columns" for c in table.feature_columns or ()},
        },
        "anndata": {config.anndata.label_key: "data.anndata.label_key"},
        "npz": {config.npz.x_key: "data.npz.x_key", config.npz.y_key: "data.npz.y_key"},
    }.get(config.source, {})
    clashes = [f"{name!r} is {taken[name]}" for name in names if name in taken]
    clashes += [f"{name!r} is given twice" for name in sorted(set(names)) if names.count(name) > 1]
    if clashes:
        raise DataError(
            f"data.covariates: {'; '.join(clashes)}; a covariate is neither the label nor a feature, "
            "and named once"
        )


def _unknown(path: Path, names: list[str], have: list[str], what: str) -> None:
    """One error naming every covariate the file does not hold."""
    unknown = [name for name in names if name not in have]
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, have, n=1)]
        hint = f" (did you mean {close}?)" if close else ""
        raise DataError(f"{path}: data.covariates names {unknown}, not {what}; it has {have}{hint}")


def _table_values(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    with table_errors(path):
        schema, parts = open_table(path, LocalEngine())
        _unknown(path, names, list(schema.names), "columns of the table")
        if isinstance(parts[0], CsvStream):  # read as text: a CSV's types are guessed per block
            batches = list(parts[0].text(names))
        else:
            batches = [batch for part in parts for batch in part.batches(names)]
        return {
            name: np.concatenate(
                [b.column(name).to_numpy(zero_copy_only=False) for b in batches] or [np.empty(0)]
            )
            for name in names
        }


def _obs_values(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    import h5py

    from pipeline.data.readers.h5ad import anndata_io, element_values, h5ad_errors, obs_columns

    io = anndata_io()
    with h5ad_errors(path), h5py.File(path, "r") as file:
        _unknown(path, names, obs_columns(file), "obs columns")
        return {name: element_values(path, file, f"obs/{name}", io) for name in names}


def _npz_values(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    from pipeline.data.readers.sources import npz_member

    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
    _unknown(path, names, keys, "arrays of the file")
    return {name: np.asarray(npz_member(path, name)) for name in names}


def _plain(values: np.ndarray) -> np.ndarray:
    """Numbers (and booleans) as float64 with NaN where missing; text as str objects, None where
    missing; text that is all numbers (a CSV read as text) as those numbers."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    import pandas as pd

    text = pd.Series(values, dtype=object).map(
        lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    )
    text = text.map(
        lambda v: (
            None if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "" else str(v)
        )
    )
    numbers = pd.to_numeric(text, errors="coerce")
    if text.notna().any() and (numbers.notna() == text.notna()).all():
        return numbers.to_numpy(np.float64)
    return text.to_numpy(object)
