"""Tables: a CSV or Parquet file of typed feature columns and an optional label column.

Two passes over the file, part by part (whole row groups of a Parquet file, which Ray
tasks read themselves under `cluster.engine: ray`): the first profiles every feature column (its
kind, distinct values, range, missing cells) for the typing rule (`pipeline.data.resolve_data.column_type`,
or the columns of a trained model when encoding new data); the second writes each row's
codes into x (a scratch memory map when given): real and count values as they are,
binary and categorical columns as the index of their level; NaN where a cell is missing
(null, NaN or an empty string). Memory holds one part's codes and the profiles.
"""

import collections
import contextlib
import difflib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Column
from pipeline.data.readers.source_dataset import Dataset, check_float32, encode_labels
from pipeline.data.resolve_data import MAX_LEVELS, ColumnProfile, column_type
from pipeline.platform.engine import LocalEngine
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate

log = logging.getLogger(__name__)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
# Rows per record batch read, and at least per part of a Parquet file (whole row groups).
PART_ROWS = 65_536


def read_table(path: Path, label_column: str | None, feature_columns: tuple[str, ...] | None,
               scratch: Path | None = None, column_types: dict | None = None,
               trained: tuple[Column, ...] | None = None, engine=None) -> Dataset:
    """A CSV or Parquet file: typed feature columns plus an optional label column.

    column_types: overrides of the typing rule by column name (data.table.column_types).
    trained: the columns of a trained model (new data is coded as its training data was).
    engine (pipeline.platform.engine): where the parts of a Parquet file are profiled and coded
    (under Ray, in tasks); a CSV file is parsed whole, here.

    Args:
        path: the .csv or .parquet file.
        label_column: the label's column, or None.
        feature_columns: the feature columns, or None for every other column.
        scratch: a directory for the coded array (a memory map), or None.
        column_types: {column: type} overrides (data.table.column_types).
        trained: a trained model's columns, or None.
        engine: where the parts of a Parquet file are read.

    Returns:
        The Dataset: one code per column and row, NaN where a cell is empty.
    """
    with table_errors(path):  # a corrupt file can fail anywhere in Arrow, not only at its header
        return _read(path, label_column, feature_columns, scratch, column_types, trained, engine or LocalEngine())


@contextlib.contextmanager
def table_errors(path: Path):
    """Arrow's errors on reading `path` (bad bytes, a corrupt page, an undecodable value) as one line."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:  # the last: names in Parquet metadata
        raise DataError(f"{path}: cannot read table ({type(error).__name__}: {' '.join(str(error).split())})") from None


def _read(path: Path, label_column, feature_columns, scratch, column_types, trained, engine) -> Dataset:
    schema, num_rows, batches = _arrow_batches(path)
    features = _feature_names(path, schema.names, label_column, feature_columns)
    unknown = sorted(set(column_types or {}) - set(features))
    if unknown:
        raise DataError(f"{path}: data.table.column_types names {unknown}, not feature columns; the feature "
                        f"columns are {features}")
    kinds = {name: _kind(path, name, schema.field(name).type) for name in features}
    parts = _parts(path, engine, batches)
    if not all(isinstance(part, _RowGroups) for part in parts):
        engine = LocalEngine()  # the parsed CSV is here already
    profiles = {name: ColumnProfile(name, kind) for name, kind in kinds.items()}
    for part_profiles in engine.map(functools.partial(_profile_part, kinds), parts):
        for name, profile in profiles.items():
            profile.merge(part_profiles[name])
    columns = trained or tuple(_typed(profile, (column_types or {}).get(profile.name), path)
                               for profile in profiles.values())
    x = allocate(scratch, "table_x", (num_rows, len(features)), np.float32)
    for part, codes in zip(parts, engine.map(functools.partial(_code_part, columns), parts)):
        x[part.start:part.start + len(codes)] = codes
    y, label_names = encode_labels(_labels(path, schema, batches, label_column), num_rows)
    return Dataset(x=x, y=y, label_names=label_names, source="table", path=str(path), feature_names=tuple(features),
                   columns=columns)


@dataclass(frozen=True)
class _RowGroups:
    """Consecutive row groups of a Parquet file, from row `start`: a part a Ray task reads itself."""

    path: Path
    start: int
    groups: tuple[int, ...]

    def batches(self, columns: list[str]):
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path).iter_batches(batch_size=PART_ROWS, row_groups=list(self.groups),
                                                      columns=columns)


@dataclass(frozen=True)
class _Batch:
    """A record batch of a parsed CSV file, from row `start`."""

    path: Path
    start: int
    batch: object

    def batches(self, columns: list[str]):
        return [self.batch.select(columns)]


def _parts(path: Path, engine, batches) -> list:
    """The file in parts of about PART_ROWS rows or more (whole row groups), in row order."""
    if path.suffix.lower() not in {".parquet", ".pq"}:
        parts, start = [], 0
        for batch in batches(None):
            parts.append(_Batch(path, start, batch))
            start += batch.num_rows
        return parts
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    shared = engine.shared(path)
    parts, start, groups, rows = [], 0, [], 0
    for group in range(metadata.num_row_groups):
        groups.append(group)
        rows += metadata.row_group(group).num_rows
        if rows >= PART_ROWS or group == metadata.num_row_groups - 1:
            parts.append(_RowGroups(shared, start, tuple(groups)))
            start, groups, rows = start + rows, [], 0
    return parts


def _profile_part(kinds: dict[str, str], part) -> dict[str, ColumnProfile]:
    """One part's profile of every feature column."""
    profiles = {name: ColumnProfile(name, kind) for name, kind in kinds.items()}
    for batch in part.batches(list(kinds)):
        for name, profile in profiles.items():
            _profile(part.path, profile, batch.column(name))
    return profiles


def _code_part(columns: tuple[Column, ...], part) -> np.ndarray:
    """(rows, features) float32 codes of one part; DataError on a row with nothing observed."""
    blocks, start = [], part.start
    for batch in part.batches([c.name for c in columns]):
        codes = np.column_stack([_codes(part.path, column, batch.column(column.name)) for column in columns])
        empty = np.flatnonzero(np.isnan(codes).all(axis=1))
        if len(empty):
            raise DataError(f"{part.path}: row {start + int(empty[0])} has no value in any feature column "
                            f"({len(empty)} such rows in this block); remove those rows")
        blocks.append(codes)
        start += batch.num_rows
    return np.concatenate(blocks) if blocks else np.empty((0, len(columns)), np.float32)


def _feature_names(path: Path, names: list[str], label_column, feature_columns) -> list[str]:
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise DataError(f"{path}: column names {repeated} are given more than once; each column needs its own name")
    wanted = [c for c in ([label_column] if label_column else []) + list(feature_columns or []) if c not in names]
    if wanted:
        close = difflib.get_close_matches(wanted[0], names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if wanted[0] == label_column:
            hint += "; a table without labels takes data.table.label_column: null"
        raise DataError(f"{path}: no column {wanted[0]!r}; columns are {names}{hint}")
    features = list(feature_columns) if feature_columns else [c for c in names if c != label_column]
    ignored = [c for c in names if c not in features and c != label_column]
    if ignored:
        log.warning("%s: ignoring columns %s: neither feature columns nor the label column "
                    "(data.table.label_column, or --label-column for the encode command)", path, ignored)
    if not features:
        raise DataError(f"{path}: no feature columns")
    return features


def _kind(path: Path, name: str, arrow_type) -> str:
    import pyarrow as pa

    for kind, test in (("boolean", pa.types.is_boolean), ("integer", pa.types.is_integer),
                       ("float", pa.types.is_floating), ("string", _is_text),
                       ("float", pa.types.is_null)):  # no value in the file: the typing rule names it
        if test(arrow_type):
            return kind
    raise DataError(f"{path}: column {name!r} holds {arrow_type} values; feature columns must hold numbers, "
                    "strings or booleans (leave it out with data.table.feature_columns)")


def _is_text(arrow_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or (pa.types.is_dictionary(arrow_type) and pa.types.is_string(arrow_type.value_type)))


def _present(array):
    """The array with its missing cells (null, NaN, empty string) dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    array = array.drop_null()
    if pa.types.is_floating(array.type):
        return array.filter(pc.invert(pc.is_nan(array)))
    if _is_text(array.type):
        return array.filter(pc.not_equal(array, ""))
    return array


def _profile(path: Path, profile: ColumnProfile, array) -> None:
    import pyarrow.compute as pc

    present = _present(array)
    profile.rows += len(array)
    profile.missing += len(array) - len(present)
    if len(profile.levels) <= MAX_LEVELS:
        profile.levels.update(pc.unique(present).to_pylist()[:MAX_LEVELS + 1])
    if profile.kind in ("integer", "float") and len(present):
        values = present.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: column {profile.name!r} holds infinite values")
        profile.low, profile.high = min(profile.low, values.min()), max(profile.high, values.max())
        profile.integral = profile.integral and bool((values == np.round(values)).all())


def _typed(profile: ColumnProfile, given: str | None, path: Path) -> Column:
    kind, why = column_type(profile, given, path)
    levels = sorted(profile.levels, key=lambda v: (isinstance(v, str), v)) if kind in ("binary", "categorical") else None
    if levels is None and profile.rows > profile.missing:  # values go to the model as they are
        check_float32(f"{path}: column {profile.name!r}", profile.low, profile.high, profile.integral)
    return Column(name=profile.name, type=kind, why=why, levels=levels,
                  missing=round(profile.missing / max(profile.rows, 1), 6))


def _codes(path: Path, column: Column, array) -> np.ndarray:
    """float32 codes of one column's cells: values, or level indices; NaN where missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if _is_text(array.type):  # an empty string is a missing cell
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    if column.levels is None:
        return array.to_numpy(zero_copy_only=False).astype(np.float32)
    value_set = pa.array(column.levels).cast(array.type)
    index = pc.index_in(array, value_set=value_set)
    unseen = pc.and_(pc.is_null(index), pc.invert(pc.is_null(array, nan_is_null=True)))
    if pc.any(unseen).as_py():
        value = array.filter(unseen)[0].as_py()
        raise DataError(f"{path}: column {column.name!r} holds {value!r}, a value its {column.type} levels "
                        f"{column.levels[:20]} do not include (a level never seen in training)")
    return index.to_numpy(zero_copy_only=False).astype(np.float32)  # null -> NaN


def _labels(path: Path, schema, batches, label_column: str | None):
    import pyarrow as pa

    if not label_column:
        return None
    column = pa.chunked_array([b.column(0) for b in batches([label_column])], schema.field(label_column).type)
    if column.null_count:
        raise DataError(f"{path}: label column {label_column!r} has {column.null_count} missing values")
    return np.asarray(column.to_pylist())


def _arrow_batches(path: Path):
    """(schema, rows, batches(columns)) of a Parquet or CSV file; batches yields record batches."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        file = pq.ParquetFile(path)
        return (file.schema_arrow, file.metadata.num_rows,
                lambda columns: file.iter_batches(batch_size=PART_ROWS, columns=columns))
    if suffix in {".csv", ".tsv", ".txt"}:
        options = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        table = pacsv.read_csv(path, parse_options=options)
        return (table.schema, table.num_rows,
                lambda columns: (table if columns is None else table.select(columns)).to_batches())
    raise DataError(f"{path}: a table must be .csv, .tsv or .parquet. Got {path.suffix or 'no suffix'!r} instead.")
