"""The latents' streaming Parquet writer (the contract: pipeline.latents.parquet).

Batches of encoded rows are buffered up to ROW_GROUP_SIZE rows and written as one row group,
so memory holds at most one row group whatever the number of rows. The encode stage writes
whole datasets (`write_part`, one per shard), the encode command one partition
(`write_partition`).
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.covariates import covariate_values
from pipeline.latents.parquet import (
    ROW_GROUP_SIZE,
    SCORE_COLUMNS,
    SPLIT_NAME,
    LatentBatch,
    check_file,
    latent_schema,
)
from pipeline.platform.errors import DataError
from pipeline.platform.faults import fault_point
from pipeline.platform.io import atomic_dir, recover_dir
from pipeline.platform.locks import directory_lock


def encoded_batches(
    posterior,
    score,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    batch_size: int,
    preprocess=None,
    complete=None,
    covariates=None,
) -> Iterator[LatentBatch]:
    """Stream rows through `posterior` (x -> z_mean, z_log_var, e.g. VAE.predict_posterior)
    and `score`, one batch in memory at a time. complete(stored rows, z_mean) -> (completed,
    imputed): the rows with their missing cells imputed (pipeline.latents.imputation.Completer).

    Args:
        posterior: x -> (z_mean, z_log_var), e.g. VAE.predict_posterior.
        score: (inputs, stored rows, z_mean) -> RowScores (pipeline.latents.scores.Scorer).
        split: the rows' split name.
        x, y, ids: the stored rows, their labels and ids.
        batch_size: rows per call.
        preprocess: stored rows -> the model's inputs.
        complete: (stored rows, z_mean) -> (completed, imputed), or None
            (pipeline.latents.imputation.Completer).
        covariates: the data's covariates (pipeline.data.manifest.Covariate), whose codes end
            each stored row, or None.

    Yields:
        One LatentBatch per batch of rows.
    """
    for start in range(0, len(ids), batch_size):
        rows = slice(start, start + batch_size)
        yield _encoded_batch(
            posterior, score, split, np.asarray(x[rows]), y[rows], ids[rows], preprocess, complete, covariates
        )


def _encoded_batch(
    posterior, score, split: str, xb: np.ndarray, y, ids, preprocess, complete, covariates
) -> LatentBatch:
    """One batch of stored rows `xb` (with their labels y and ids) through the model: its
    LatentBatch (`encoded_batches`' arguments)."""
    inputs = preprocess(xb) if preprocess else xb
    z_mean, z_log_var = posterior(inputs)
    filled = complete(xb, np.asarray(z_mean)) if complete else (None, None)
    return LatentBatch(
        split,
        np.asarray(ids),
        np.asarray(y),
        np.asarray(z_mean),
        np.asarray(z_log_var),
        score(inputs, xb, np.asarray(z_mean)),
        *filled,
        covariates=covariate_values(xb, covariates) if covariates else None,
    )


def to_record_batch(batch: LatentBatch, schema: pa.Schema) -> pa.RecordBatch:
    d = batch.z_mean.shape[1]

    def vectors(values):
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, d)

    labels = pa.array(batch.labels.astype(np.int32), mask=batch.labels < 0)
    columns = [pa.array(batch.ids.astype(np.int64)), labels, vectors(batch.z_mean), vectors(batch.z_log_var)]
    for name in SCORE_COLUMNS:
        values = getattr(batch.scores, name)
        columns.append(
            pa.nulls(len(batch.ids), pa.float64())
            if values is None
            else pa.array(np.asarray(values, np.float64))
        )
    if "covariates" in schema.names:
        struct = schema.field("covariates").type
        columns.append(
            pa.StructArray.from_arrays(
                [pa.array(batch.covariates[f.name], f.type) for f in struct], fields=list(struct)
            )
        )
    if "completed" in schema.names:
        for name, values in (("completed", batch.completed), ("imputed", batch.imputed)):
            struct = schema.field(name).type
            columns.append(
                pa.StructArray.from_arrays(
                    [pa.array(values[f.name], f.type) for f in struct], fields=list(struct)
                )
            )
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def write_latents(
    out_dir: str | Path, batches: Iterable[LatentBatch], latent_dim: int, metadata: dict
) -> int:
    """A whole latent dataset from one writer: one Parquet file per split; replaces out_dir atomically.

    Batches are buffered up to ROW_GROUP_SIZE rows and written as one row group, so
    memory holds at most one row group whatever the number of rows. Returns the rows written.
    """
    with atomic_dir(out_dir) as tmp:
        return write_part(tmp, batches, latent_dim, metadata, part=0)


def write_part(
    directory: str | Path,
    batches: Iterable[LatentBatch],
    latent_dim: int,
    metadata: dict,
    part: int,
    table: dict | None = None,
) -> int:
    """One writer's share of a dataset being built in `directory` (the caller makes it atomic):
    split=<split>/part-<part>.parquet for every split of `batches`. Returns the rows written.
    table: the columns of `completed` (see latent_schema).

    Args:
        directory: the dataset being built.
        batches: LatentBatch stream.
        latent_dim: z's size.
        metadata: the files' key-value metadata.
        part: the part number k.
        table: the columns of `completed` (see latent_schema), or None.

    Returns:
        The rows written.
    """
    return _write(
        batches,
        latent_schema(latent_dim, metadata, table),
        lambda split: Path(directory) / f"split={split}" / f"part-{part}.parquet",
    )


def write_partition(
    out_dir: str | Path,
    split: str,
    batches: Iterable[LatentBatch],
    latent_dim: int,
    metadata: dict,
    overwrite: bool = False,
    table: dict | None = None,
) -> int:
    """Add one split's partition to a latent dataset, leaving every other partition untouched.

    An existing partition of that name is replaced only with `overwrite`; partitions of
    another latent size are refused, since the dataset must read back as one table, and so
    are partitions another model wrote (their z are in another space).

    Args:
        out_dir: the latent dataset.
        split: the partition's name.
        batches: LatentBatch stream, every batch of `split`.
        latent_dim: z's size.
        metadata: the file's key-value metadata.
        overwrite: replace an existing partition of that name.
        table: the columns of `completed` (see latent_schema), or None.

    Returns:
        The rows written.
    """
    _check_split_name(split)
    out_dir = Path(out_dir)
    target = out_dir / f"split={split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(out_dir):  # from the first check to the publish: a second command waits
        recover_dir(target)  # what a killed run of this command left
        _check_partition(out_dir, target, overwrite, latent_dim, metadata.get("model_sha256"))
        schema = latent_schema(latent_dim, metadata, table)
        with atomic_dir(target) as tmp:
            return _write(batches, schema, _only_split(split, tmp / "part-0.parquet"))


def _check_split_name(split: str) -> None:
    """Raise DataError unless `split` can name a partition directory (SPLIT_NAME)."""
    if not SPLIT_NAME.fullmatch(split):
        raise DataError(f"split name must be letters, digits, '_', '-' or '.'. Got {split!r} instead.")


def _check_partition(out_dir: Path, target: Path, overwrite: bool, latent_dim: int, model_sha256) -> None:
    """Raise DataError when the partition `target` exists (without `overwrite`) or when another
    partition holds latents of another size or of another model (check_file)."""
    if target.exists() and not overwrite:
        raise DataError(
            f"{target}: partition exists; pass --overwrite to replace it, or choose another --split"
        )
    for file in sorted(out_dir.glob("split=*/*.parquet")):
        if file.parent != target:
            check_file(file, latent_dim, model_sha256)


def _only_split(split: str, path: Path):
    """`_write`'s path_of for a single partition: `path` for batches of `split`, never another split."""

    def path_of(batch_split: str) -> Path:
        if batch_split != split:  # pragma: no cover - the caller builds every batch with `split`
            raise ValueError(f"batch of split {batch_split!r} written to partition {split!r}")
        return path

    return path_of


def _write(batches: Iterable[LatentBatch], schema: pa.Schema, path_of) -> int:
    """Stream batches into one file per split, at path_of(split); returns the rows written."""
    writers: dict[str, _PartWriter] = {}
    rows = 0
    try:
        for batch in batches:
            if batch.split not in writers:
                writers[batch.split] = _PartWriter(path_of(batch.split), schema)
            writers[batch.split].add(to_record_batch(batch, schema))
            rows += len(batch.ids)
        for writer in writers.values():
            writer.flush()
    finally:
        for writer in writers.values():
            writer.close()
    return rows


class _PartWriter:
    """One split's ParquetWriter with a buffer of record batches for the next row group."""

    def __init__(self, path: Path, schema: pa.Schema):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.schema = schema
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.buffer.append(batch)
        self.buffered += batch.num_rows
        if self.buffered >= ROW_GROUP_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            table = pa.Table.from_batches(self.buffer, schema=self.schema)
            self.writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            self.buffer, self.buffered = [], 0
            # in the middle of the writer: a row group out, the file not closed
            fault_point("parquet", self.path)

    def close(self) -> None:
        self.writer.close()
