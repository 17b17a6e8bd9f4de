"""The latent Parquet dataset, read back: metadata, whole tables with their schema checked,
and the z_mean of chosen rows a row group at a time (pipeline.latents.parquet writes it)."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.latents.parquet import check_file, read_metadata
from pipeline.platform.errors import DataError


def load_latents(
    path: str | Path = "data/latents", split: str | None = None, latent_dim: int | None = None
) -> pa.Table:
    """Read the latent dataset (one split or all) as a pyarrow Table with a `split` column.

    Checks the schema version, the columns and, when given, the latent dimension; a
    mismatch raises DataError naming the file. `.to_pandas()` gives a DataFrame and
    `latents_to_numpy` gives arrays.
    """
    path = Path(path)
    files = sorted(path.glob("split=*/*.parquet"))
    if not files:
        raise DataError(f"{path}: no latent Parquet files (expected split=<name>/*.parquet)")
    for file in files:
        check_file(file, latent_dim)
    dataset = pads.dataset(path, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=(pads.field("split") == split) if split else None)
    if split and table.num_rows == 0:
        raise DataError(f"{path}: no rows for split {split!r}")
    return table


def latents_to_numpy(table: pa.Table, column: str = "z_mean") -> np.ndarray:
    """A fixed_size_list column as a (n, d) float32 array, without copying row by row."""
    chunked = table.column(column).combine_chunks()
    d = chunked.type.list_size
    return chunked.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)


def _split_files(path, split: str, fingerprint: str, latent_dim: int | None) -> list[Path]:
    """The split's Parquet files in order, each checked to hold latents of the dataset `fingerprint`."""
    files = sorted(Path(path).glob(f"split={split}/*.parquet"), key=_part_number)
    if not files:
        raise DataError(
            f"{path}: no latent Parquet files for split {split!r} (expected split={split}/*.parquet)"
        )
    for file in files:
        check_file(file, latent_dim)
        if (found := read_metadata(file).get("dataset_fingerprint")) != fingerprint:
            raise DataError(
                f"{file}: latents were encoded from another dataset (fingerprint {found}, "
                f"prepared data has {fingerprint}); re-run encode"
            )
    return files


def read_z_mean(
    path: str | Path,
    split: str,
    ids: np.ndarray,
    fingerprint: str,
    take: np.ndarray,
    latent_dim: int | None = None,
    visit: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """z_mean of the rows `take` (positions in the split) of one split, (len(take), d):
    `read_rows`' z_mean; visit(z) sees every row group's z_mean (streaming statistics)."""
    return read_rows(path, split, ids, fingerprint, take, ("z_mean",), latent_dim, visit)["z_mean"]


def read_rows(
    path: str | Path,
    split: str,
    ids: np.ndarray,
    fingerprint: str,
    take: np.ndarray,
    columns: tuple[str, ...],
    latent_dim: int | None = None,
    visit: Callable[[np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """`columns` of the rows `take` (positions in the split) of one split, read a row group at a time.

    Memory holds one row group and the rows taken, however many rows the split has. On the way
    it checks that the files hold the rows of the dataset `fingerprint`: the prepared `ids`, in order.

    Args:
        path: the latent dataset.
        split: the split to read.
        ids: the prepared split's ids, in order.
        fingerprint: the prepared data's fingerprint.
        take: positions in the split to keep, ascending.
        columns: the columns to keep: z_mean or z_log_var ((len(take), d) float32), or a
            score column ((len(take),) float64, NaN where null).
        latent_dim: z's size.
        visit: called with every row group's z_mean, or None.

    Returns:
        {column: its values of the rows taken}.
    """
    files = _split_files(path, split, fingerprint, latent_dim)
    taken = _Taken(take, columns, pq.read_schema(files[0]).field("z_mean").type.list_size)
    for start, table in _row_groups(path, split, files, ids, columns):
        read = taken.read(table)
        if visit is not None:
            visit(read["z_mean"] if "z_mean" in read else latents_to_numpy(table))
        taken.keep(read, start, table.num_rows)
    return taken.out


class _Taken:
    """The rows `take` (positions in a split) of `columns`, kept as the row groups go by."""

    def __init__(self, take: np.ndarray, columns: tuple[str, ...], d: int):
        take = np.asarray(take, np.int64)
        self.order = np.argsort(take, kind="stable")
        self.wanted = take[self.order]
        self.out = {
            name: np.empty((len(take), d), np.float32) if name.startswith("z_") else np.empty(len(take))
            for name in columns
        }

    def read(self, table: pa.Table) -> dict[str, np.ndarray]:
        """Every kept column of a row group: z_* as (rows, d) float32, scores as float64 (NaN for null)."""
        return {
            name: latents_to_numpy(table, name)
            if name.startswith("z_")
            else table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            for name in self.out
        }

    def keep(self, read: dict[str, np.ndarray], start: int, rows: int) -> None:
        """Keep the taken rows among a row group's `rows`, the split's rows from `start`."""
        lo, hi = np.searchsorted(self.wanted, [start, start + rows])
        for name, values in self.out.items():
            values[self.order[lo:hi]] = read[name][self.wanted[lo:hi] - start]


def _row_groups(path, split: str, files: list[Path], ids: np.ndarray, columns: tuple[str, ...]):
    """(start, row group) for every row group of the split's files in order, with the columns
    kept, each checked to hold the prepared `ids` from `start` on; then that none are missing."""
    start = 0
    for file in files:
        parquet = pq.ParquetFile(file)
        # one at a time: iter_batches reads ahead, more as files grow
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=list(dict.fromkeys(["id", "z_mean", *columns])))
            group_ids = table.column("id").to_numpy()
            if not np.array_equal(group_ids, ids[start : start + len(group_ids)]):
                raise DataError(
                    f"{path}: split={split} does not hold the prepared {split} examples in order; "
                    "re-run encode"
                )
            yield start, table
            start += len(group_ids)
    if start != len(ids):
        raise DataError(
            f"{path}: split={split} holds {start} rows, the prepared {split} split {len(ids)}; re-run encode"
        )


def _part_number(file: Path) -> int:
    """part-<k>.parquet: worker k's contiguous share of the rows, so k orders the files."""
    k = file.stem.removeprefix("part-")
    return int(k) if k.isdigit() else -1
