"""A table file as Arrow record batches, part by part, never whole: a Parquet file's row
groups (a part a Ray task can read itself), or a CSV file streamed in blocks (pyarrow's
`open_csv`). Memory holds one block, whatever the file's length.

A streamed CSV's types are inferred from its first block; a value further on that does not
fit (a letter in a column of numbers) raises `Widened` after widening the column's type
(null → float → string, integer → float → string, else string), and the reader starts over.
Before it does, one pass reads every cell as text and widens every column that needs it, so
a file with a late word in each of its 200 columns starts over once, not 200 times.
So does a cell or a header longer than a block, after the block grows (up to
CSV_MAX_BLOCK_BYTES, then an error line).
"""

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.platform.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
# Rows per record batch read from Parquet (fewer for wide tables: about BATCH_BYTES of
# values), and at least per part (whole row groups).
PART_ROWS = 65_536
BATCH_BYTES = 16 << 20
# Bytes of CSV text per streamed block (its first block is what the types are inferred from);
# a block grows fourfold for a longer cell or header, up to the most.
CSV_BLOCK_BYTES, CSV_MAX_BLOCK_BYTES = 1 << 20, 256 << 20


class Widened(Exception):
    """A streamed CSV column held a value its inferred type cannot: the type was widened."""


@contextlib.contextmanager
def table_errors(path: Path):
    """Arrow's errors on reading `path` (bad bytes, a corrupt page, an undecodable value) as one line."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:  # the last: names in Parquet metadata
        raise DataError(
            f"{path}: cannot read table ({type(error).__name__}: {' '.join(str(error).split())})"
        ) from None


def open_table(path: Path, engine) -> tuple[object, list]:
    """(Arrow schema, parts in row order) of a .csv/.tsv/.txt or .parquet file; each part's
    `batches(columns)` yields its record batches and `start` is its first row. A CSV is one
    part, streamed, whose length is known once read."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return _parquet_parts(path, engine)
    if suffix in {".csv", ".tsv", ".txt"}:
        stream = CsvStream(path, "\t" if suffix == ".tsv" else ",")
        return stream.schema(), [stream]
    raise DataError(
        f"{path}: a table must be .csv, .tsv or .parquet. Got {path.suffix or 'no suffix'!r} instead."
    )


@dataclass(frozen=True)
class RowGroups:
    """Consecutive row groups of a Parquet file, from row `start`."""

    path: Path
    start: int
    groups: tuple[int, ...]

    def batches(self, columns: list[str]):
        import pyarrow.parquet as pq

        rows = max(1, min(PART_ROWS, BATCH_BYTES // (8 * max(1, len(columns)))))  # 8: a float64 or an offset
        return pq.ParquetFile(self.path).iter_batches(
            batch_size=rows, row_groups=list(self.groups), columns=columns
        )


def _parquet_parts(path: Path, engine) -> tuple[object, list]:
    """The file in parts of about PART_ROWS rows or more (whole row groups)."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    shared = engine.shared(path)
    parts, start, groups, rows = [], 0, [], 0
    for group in range(file.metadata.num_row_groups):
        groups.append(group)
        rows += file.metadata.row_group(group).num_rows
        if rows >= PART_ROWS or group == file.metadata.num_row_groups - 1:
            parts.append(RowGroups(shared, start, tuple(groups)))
            start, groups, rows = start + rows, [], 0
    return file.schema_arrow, parts


@dataclass
class CsvStream:
    """A CSV file read in blocks; `types` are the column types every read after the first uses."""

    path: Path
    delimiter: str
    types: dict = field(default_factory=dict)  # every column's, by name, in the file's order
    start: int = 0
    block: int = field(default_factory=lambda: CSV_BLOCK_BYTES)  # read when made (tests set it smaller)

    def _reader(self, columns: list[str] | None, text: bool = False):
        """A reader of `columns` (None: all) by `types`, or with `text` of every column as text
        (missing cells null)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {name: pa.string() for name in self.types} if text else self.types
        return pacsv.open_csv(
            # no threads: a parallel reader runs ahead of a slower consumer, holding what it parsed
            self.path,
            read_options=pacsv.ReadOptions(block_size=self.block, use_threads=False),
            # quoted free text may hold line breaks
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=columns or [], strings_can_be_null=text
            ),
        )

    def text(self, columns: list[str]):
        """A reader of `columns` as text, missing cells null (for values typed elsewhere)."""
        return self._reader(columns, text=True)

    def schema(self):
        import pyarrow as pa

        while True:
            try:
                reader = self._reader(None)
                break
            except pa.ArrowInvalid as error:
                self._grow(error)
        schema = reader.schema
        reader.close()
        # a name given twice is refused later
        self.types = self.types or dict(zip(schema.names, schema.types))
        return schema

    def batches(self, columns: list[str]):
        import pyarrow as pa

        reader = self._reader(columns)
        try:
            yield from reader
        except pa.ArrowInvalid as error:
            found = re.match(
                r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+)", str(error)
            )
            if not found:
                self._grow(error)
                raise Widened(
                    f"{self.path}: a cell longer than {self.block // 4 >> 20} MiB; read again in blocks "
                    f"of {self.block >> 20} MiB"
                ) from None
            name = list(self.types)[int(found.group(1))]  # the file's column number, whatever is read
            if _wider(self.types[name]) == self.types[name]:  # text that is not UTF-8: nothing wider
                raise
            self.types[name] = _wider(self.types[name])
            widened = self._survey()
            raise Widened(
                f"{self.path}: column {name!r} holds a value that is not {found.group(2)} after its first "
                f"rows; read again with {sorted(widened | {name})} widened"
            ) from None
        finally:
            reader.close()

    def _survey(self) -> set[str]:
        """Widen, in one pass over the file read as text, every column with a cell its type
        cannot hold; the names widened."""
        import pyarrow as pa
        import pyarrow.compute as pc

        reader = self._reader(None, text=True)
        widened = set()
        try:
            for batch in reader:
                for name, kind in self.types.items():
                    while not pa.types.is_string(kind):
                        try:
                            pc.cast(batch.column(name), kind)
                            break
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                            kind = self.types[name] = _wider(kind)
                            widened.add(name)
        except pa.ArrowInvalid:  # what the typed read meets again, and reports
            pass
        finally:
            reader.close()
        return widened

    def _grow(self, error) -> None:
        """A larger block after Arrow's error on a cell or header longer than the block; the
        error again when it is another, or when the block is already the largest."""
        text = str(error)
        too_long = "straddling" in text or (
            "Empty CSV file or block" in text and self.path.stat().st_size > 0
        )
        if not too_long:
            raise error
        if self.block >= CSV_MAX_BLOCK_BYTES:
            raise DataError(
                f"{self.path}: a cell or the header is longer than {CSV_MAX_BLOCK_BYTES >> 20} MiB, the "
                "longest this reader takes"
            ) from None
        self.block *= 4


def _wider(arrow_type):
    import pyarrow as pa

    if pa.types.is_null(arrow_type) or pa.types.is_integer(arrow_type):
        return pa.float64()
    return pa.string()
