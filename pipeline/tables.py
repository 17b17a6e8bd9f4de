"""Tables: a CSV or Parquet file of numeric feature columns and an optional label column."""

import difflib
import logging
from pathlib import Path

import numpy as np

from pipeline.dataset import Dataset, encode_labels
from pipeline.errors import DataError
from pipeline.io import allocate

log = logging.getLogger(__name__)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def read_table(path: Path, label_column: str | None, feature_columns: tuple[str, ...] | None,
               scratch: Path | None = None) -> Dataset:
    """A CSV or Parquet file: numeric feature columns plus an optional label column.

    Parquet is read in record batches into x (a scratch memory map when given); a CSV is
    parsed whole by pyarrow (its row count is unknown until then) and copied the same way.
    """
    import pyarrow as pa

    schema, num_rows, batches = _arrow_batches(path)
    names = schema.names
    wanted = [c for c in ([label_column] if label_column else []) + list(feature_columns or []) if c not in names]
    if wanted:
        close = difflib.get_close_matches(wanted[0], names, n=1)
        raise DataError(f"{path}: no column {wanted[0]!r}; columns are {names}"
                        + (f" (did you mean '{close[0]}'?)" if close else ""))
    features = list(feature_columns) if feature_columns else [c for c in names if c != label_column]
    ignored = [c for c in names if c not in features and c != label_column]
    if ignored:
        log.warning("%s: ignoring columns %s: neither feature columns nor the label column "
                    "(data.table.label_column, or --label-column for the encode command)", path, ignored)
    bad = [c for c in features if not (pa.types.is_integer(schema.field(c).type)
                                       or pa.types.is_floating(schema.field(c).type))]
    if bad:
        raise DataError(f"{path}: feature columns must be numeric; not numeric: {bad} "
                        "(set data.table.feature_columns or data.table.label_column)")
    if not features:
        raise DataError(f"{path}: no feature columns")
    x = allocate(scratch, "table_x", (num_rows, len(features)), np.float64)
    labels, nulls, start = [], {}, 0
    for batch in batches([*features, *([label_column] if label_column else [])]):
        for c in features:
            nulls[c] = nulls.get(c, 0) + batch.column(c).null_count
        x[start:start + batch.num_rows] = np.column_stack(
            [batch.column(c).to_numpy(zero_copy_only=False) for c in features])
        if label_column:
            labels.append(batch.column(label_column))
        start += batch.num_rows
    if missing := [c for c, n in nulls.items() if n]:
        raise DataError(f"{path}: feature columns have missing values: {missing}")
    raw_y = None
    if label_column:
        column = pa.chunked_array(labels, schema.field(label_column).type)
        if column.null_count:
            raise DataError(f"{path}: label column {label_column!r} has {column.null_count} missing values")
        raw_y = np.asarray(column.to_pylist())
    y, label_names = encode_labels(raw_y, len(x))
    return Dataset(x=x, y=y, label_names=label_names, source="table", path=str(path), feature_names=tuple(features))


def _arrow_batches(path: Path):
    """(schema, rows, batches(columns)) of a Parquet or CSV file; batches yields record batches."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            file = pq.ParquetFile(path)
            return (file.schema_arrow, file.metadata.num_rows,
                    lambda columns: file.iter_batches(batch_size=65_536, columns=columns))
        if suffix in {".csv", ".tsv", ".txt"}:
            options = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            table = pacsv.read_csv(path, parse_options=options)
            return table.schema, table.num_rows, lambda columns: table.select(columns).to_batches()
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read table ({' '.join(str(error).split())})") from None
    raise DataError(f"{path}: a table must be .csv, .tsv or .parquet. Got {path.suffix or 'no suffix'!r} instead.")
