"""Tables: a CSV or Parquet file of typed feature columns and an optional label column.

Two passes over the file, part by part (pipeline.data.readers.table_files: a CSV streamed in
blocks, whole row groups of a Parquet file, which Ray tasks read themselves under
`cluster.engine: ray`). The first profiles every feature (a column, or a timestamp's part:
pipeline.data.readers.table_cells) for the typing rule (pipeline.data.resolve_columns), or
takes the columns of a trained model when encoding new data; the second
(pipeline.data.readers.table_codes) writes each row's codes into x and its label's index
into y (scratch memory maps when given). Memory holds
one block's codes, the profiles and the label names, however long the file.

Every column the rule leaves out is recorded in the Dataset's choices with its reason, as
every kept one is with its type; every column that cannot be used is named in one error.
"""

import collections
import difflib
import functools
import logging
from pathlib import Path

from pipeline.data.manifest import Column
from pipeline.data.readers.source_dataset import Dataset, check_float32
from pipeline.data.readers.table_cells import (
    Feature,
    cells,
    features_of,
    part_column,
    profile_cells,
)
from pipeline.data.readers.table_codes import coded
from pipeline.data.readers.table_files import TABLE_SUFFIXES, CsvStream, Widened, open_table, table_errors
from pipeline.data.resolve_columns import LEFT_OUT, ColumnProfile, column_levels, column_type
from pipeline.platform.choices import GIVEN, Choice
from pipeline.platform.engine import LocalEngine
from pipeline.platform.errors import DataError

__all__ = ["TABLE_SUFFIXES", "read_table"]
log = logging.getLogger(__name__)


def read_table(
    path: Path,
    label_column: str | None,
    feature_columns: tuple[str, ...] | None,
    scratch: Path | None = None,
    column_types: dict | None = None,
    trained: tuple[Column, ...] | None = None,
    engine=None,
    drop_columns: tuple[str, ...] = (),
) -> Dataset:
    """A CSV or Parquet file: typed feature columns plus an optional label column.

    Args:
        path: the .csv/.tsv or .parquet file.
        label_column: the label's column, or None.
        feature_columns: the columns to read, or None for every other column.
        scratch: a directory for the coded arrays (memory maps), or None.
        column_types: {column: type} overriding the rule (data.table.column_types).
        trained: a trained model's columns, or None (new data is coded as its training data was).
        engine: where the parts of a Parquet file are read (under Ray, in tasks).
        drop_columns: columns left out (data.table.drop_columns).

    Returns:
        The Dataset: one code per kept column and row, NaN where a cell is empty.
    """
    with table_errors(path):  # a corrupt file can fail anywhere in Arrow, not only at its header
        schema, parts, engine = _parts(path, engine)
        left_out = {**{c: GIVEN for c in drop_columns}, **_saved_index(schema, label_column, feature_columns)}
        names = _feature_names(path, schema.names, label_column, feature_columns, tuple(left_out))
        while True:  # a streamed CSV starts over when a column's type is widened (at most twice each)
            try:
                profiles, labels, rows = _profiles(path, schema, names, label_column, parts, engine, trained)
                columns, choices = (
                    (trained, {}) if trained else _typed(path, profiles, column_types or {}, left_out)
                )
                return coded(path, columns, label_column, labels, rows, parts, engine, scratch, choices)
            except Widened as widened:
                log.info("%s", widened)
                schema = parts[0].schema()


def _parts(path: Path, engine) -> tuple[object, list, object]:
    """(the file's schema, its parts, the engine that reads them): a streamed CSV is one part, read
    here, where its types widen."""
    engine = engine or LocalEngine()
    schema, parts = open_table(path, engine)
    if isinstance(parts[0], CsvStream):
        engine = LocalEngine()  # one part, read here: its types widen in this process
    return schema, parts, engine


def _saved_index(schema, label_column, feature_columns) -> dict[str, str]:
    """{column: why} of the pandas index saved with the data, left out unless asked for: the
    columns Parquet's pandas metadata names as the index, or a CSV's first column without a
    name (what `DataFrame.to_csv` writes for the index)."""
    metadata = schema.pandas_metadata or {}
    index = [c for c in metadata.get("index_columns", []) if isinstance(c, str) and c in schema.names]
    if not metadata and schema.names and schema.names[0] == "":
        index = [""]
    why = "the pandas index saved with the data (row names, not a feature)"
    return {c: why for c in index if c != label_column and c not in (feature_columns or ())}


def _profiles(path: Path, schema, names: list[str], label_column, parts, engine, trained):
    """({feature: profile}, sorted label values or None, rows) from one pass; no profile for a
    trained model's columns."""
    features = _features(path, schema, names) if not trained else []
    profiles = {f: ColumnProfile(f.name, f.kind) for f in features}
    rows, labels, missing = 0, set(), 0
    sources = sorted({f.source for f in features} | ({label_column} - {None})) or names[:1]  # [:1]: the rows
    for part_profiles, part_rows, part_labels, part_missing in engine.map(
        functools.partial(_profile_part, features, label_column, sources), parts
    ):
        for feature, profile in profiles.items():
            profile.merge(part_profiles[feature.name])
        rows, missing = rows + part_rows, missing + part_missing
        labels |= part_labels
    if missing:
        raise DataError(f"{path}: label column {label_column!r} has {missing} missing values")
    return profiles, sorted(labels) if label_column else None, rows


def _feature_names(path: Path, names: list[str], label_column, feature_columns, drop_columns) -> list[str]:
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise DataError(
            f"{path}: column names {repeated} are given more than once; each column needs its own name"
        )
    wanted = [
        c for c in ([label_column] if label_column else []) + list(feature_columns or []) if c not in names
    ]
    if wanted:
        close = difflib.get_close_matches(wanted[0], names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if wanted[0] == label_column:
            hint += "; a table without labels takes data.table.label_column: null"
        raise DataError(f"{path}: no column {wanted[0]!r}; columns are {names}{hint}")
    unknown = [c for c in drop_columns if c not in names]
    if unknown:
        raise DataError(
            f"{path}: data.table.drop_columns names {unknown}, not columns of the file; its columns "
            f"are {names}"
        )
    if label_column in drop_columns:
        raise DataError(
            f"{path}: data.table.drop_columns names the label column {label_column!r}; a table "
            "without labels takes data.table.label_column: null"
        )
    features = [c for c in (feature_columns or names) if c != label_column and c not in drop_columns]
    ignored = [c for c in names if c not in features and c != label_column and c not in drop_columns]
    if ignored and feature_columns:
        log.warning(
            "%s: ignoring columns %s: neither feature columns nor the label column "
            "(data.table.label_column, or --label-column for the encode command)",
            path,
            ignored,
        )
    if not features:
        raise DataError(f"{path}: no feature columns")
    return features


def _features(path: Path, schema, names: list[str]) -> list[Feature]:
    features, problems = [], []
    for name in names:
        try:
            features += features_of(name, schema.field(name).type)
        except ValueError as problem:
            problems.append(str(problem))
    _refuse(path, problems)
    twice = sorted(name for name, n in collections.Counter(f.name for f in features).items() if n > 1)
    if twice:
        raise DataError(
            f"{path}: feature names {twice} are each both a column and a timestamp's part (a timestamp "
            "column t gives t:time, t:day_of_year, t:day_of_week, t:hour); rename the column"
        )
    return features


def _profile_part(features: list[Feature], label_column: str | None, sources: list[str], part):
    """One part's profile of every feature, its rows, and its label values and missing labels."""
    import pyarrow as pa

    profiles = {f.name: ColumnProfile(f.name, f.kind) for f in features}
    start, labels, missing = part.start, set(), 0
    for batch in part.batches(sources):
        for feature in features:
            profile_cells(profiles[feature.name], cells(batch.column(feature.source), feature.part))
        if label_column:
            values = batch.column(label_column)
            if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
                sample = values.drop_null()[0].as_py() if len(values.drop_null()) else b""
                raise DataError(
                    f"{part.path}: label column {label_column!r} holds text that is not UTF-8 (e.g. "
                    f"{sample[:40]!r}); save the file as UTF-8 (iconv -f latin1 -t utf-8 does it for "
                    "Latin-1)"
                )
            missing += values.null_count
            labels.update(values.unique().drop_null().to_pylist())  # every class, however many
        start += batch.num_rows
    return profiles, start - part.start, labels, missing


def _typed(path: Path, profiles: dict, given: dict, left_out: dict) -> tuple[tuple[Column, ...], dict]:
    """The kept columns, and every column's choice record (kept or left out, with the reason)."""
    columns = [f.name for f in profiles if f.part is None]  # a timestamp's parts take the part's type
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise DataError(
            f"{path}: data.table.column_types names {unknown}, not feature columns; the feature "
            f"columns are {columns}"
        )
    typed, problems = {name: Column(name, LEFT_OUT, why, None, 0.0) for name, why in left_out.items()}, []
    for feature, profile in profiles.items():
        try:
            typed[feature.name] = _column(path, feature, profile, given.get(feature.name))
        except ValueError as problem:
            problems.append(str(problem))
    _refuse(path, problems)
    choices = {f"data.table.column_types.{name}": Choice(c.type, c.why) for name, c in typed.items()}
    columns = tuple(c for c in typed.values() if c.type != LEFT_OUT)
    if not columns:
        raise DataError(
            f"{path}: no column left to model; " + "; ".join(f"{c.name}: {c.why}" for c in typed.values())
        )
    left_out = [name for name, c in typed.items() if c.type == LEFT_OUT]
    if left_out:
        log.info("%s: left out %s (the reasons are in the choices)", path, left_out)
    return columns, choices


def _column(path: Path, feature: Feature, profile: ColumnProfile, given: str | None) -> Column:
    kind, why = column_type(profile, given)  # for a timestamp's part, whether it is left out
    name, missing = feature.name, round(profile.missing / max(profile.rows, 1), 6)
    if kind == LEFT_OUT:
        return Column(name=name, type=kind, why=why, levels=None, missing=missing)
    if feature.part:
        return part_column(feature, missing)
    levels, other = column_levels(profile, kind, given is not None)
    if levels is None:  # values go to the model as they are
        check_float32(f"{path}: column {name!r}", profile.low, profile.high, profile.integral)
    return Column(name=name, type=kind, why=why, levels=levels, missing=missing, other=other)


def _refuse(path: Path, problems: list[str]) -> None:
    if problems:
        raise DataError(
            f"{path}: {len(problems)} column{'s' * (len(problems) > 1)} cannot be used: "
            f"{'; '.join(problems)}. Fix them, or leave them out with data.table.drop_columns"
        )
