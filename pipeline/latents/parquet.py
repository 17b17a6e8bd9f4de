"""The latent Parquet dataset: its schema and streaming writer (pipeline.latents.reader reads it).

    data/latents/split=train/part-0.parquet   (part-1, ... when several workers encode)
    data/latents/split=test/part-0.parquet

Columns: id int64, label int32 (null where the source has none), z_mean and z_log_var
as fixed_size_list<float32>[d]; `split` is the hive partition key. File metadata holds
the schema version, latent_dim, dataset fingerprint, model sha256, params, versions.
"""

import importlib.metadata
import json
import platform
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.platform.errors import DataError
from pipeline.platform.io import atomic_dir, fault_point, recover_dir
from pipeline.platform.locks import directory_lock

SCHEMA_VERSION = "1"
METADATA_PREFIX = "vae_pipeline."
COLUMNS = {
    "id": "stable row id from prepare: the example's index in the source",
    "label": "class label; null where the source has none",
    "z_mean": "mu_phi(x), mean of q(z|x): the representation",
    "z_log_var": "log sigma_phi(x)^2, log-variance of q(z|x)",
}
# Under model.posterior flow, q(z|x) is not Gaussian: what the two columns hold then.
FLOW_COLUMNS = {
    "z_mean": "the flow's image of the base mean of q(z|x), z at epsilon = 0: the representation",
    "z_log_var": "log-variance of the flow's base Gaussian (q(z|x) itself is not Gaussian)",
}
# Every file's key-value metadata (each key prefixed METADATA_PREFIX, values JSON unless
# plain text); tests/test_latents.py fails on a key missing here.
METADATA = {
    "schema_version": "this contract's version", "latent_dim": "d, the width of z_mean and z_log_var",
    "columns": "{column: what it holds}",
    "dataset_source": "data.source, and the file or folder read where there is one",
    "dataset_fingerprint": "sha256 of the prepared data (the command: of the input file)",
    "label_names": "the label of each class index", "model_sha256": "sha256 of the model.keras that encoded",
    "choices": "every `auto` knob's value and reason", "params": "the training run's params and encode's own",
    "engine": "the encode stage's engine and cluster", "versions": "versions of the packages that wrote it",
}
# Rows per row group. Readers scan and skip whole row groups; 64Ki rows of a 16-d latent
# is ~8 MiB uncompressed: large enough for fast sequential scans and useful min/max
# statistics on id, small enough that the writer buffers only one group in memory.
ROW_GROUP_SIZE = 65_536
# The columns encode.impute adds after COLUMNS (see latent_schema).
IMPUTED_COLUMNS = ("completed", "imputed")
SPLIT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Whose versions every file records (metadata "versions").
PACKAGES = ("vae-pipeline", "tensorflow", "keras", "numpy", "pyarrow")


def describe_columns(posterior: str) -> dict:
    """The files' column descriptions for a model's `model.posterior`."""
    return {**COLUMNS, **(FLOW_COLUMNS if posterior == "flow" else {})}


def latent_schema(latent_dim: int, metadata: dict | None = None, table: dict | None = None) -> pa.Schema:
    """table: {column: its levels, or None for numbers} when the files also hold each row
    `completed` (a struct of the table's columns, missing cells imputed) and `imputed` (a
    struct of flags: which of them were)."""
    vector = pa.list_(pa.float32(), latent_dim)
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=True),
        pa.field("z_mean", vector, nullable=False),
        pa.field("z_log_var", vector, nullable=False),
    ]
    if table:
        fields += [pa.field("completed", pa.struct([pa.field(n, _value_type(levels)) for n, levels in table.items()])),
                   pa.field("imputed", pa.struct([pa.field(n, pa.bool_()) for n in table]))]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "latent_dim": str(latent_dim),
        "columns": json.dumps(COLUMNS),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    return pa.schema(fields, metadata={METADATA_PREFIX + k: v for k, v in meta.items()})


def _value_type(levels: list | None) -> pa.DataType:
    """A table column's values: its levels' type (strings, booleans, integers), else float64."""
    return pa.float64() if levels is None else pa.array(levels).type


@dataclass(frozen=True)
class LatentBatch:
    """Rows of one split: ids (n,), labels (n,) with -1 for none, z_mean and z_log_var (n, d);
    for a table with imputation, completed and imputed: {column: (n,) values, (n,) flags}."""

    split: str
    ids: np.ndarray
    labels: np.ndarray
    z_mean: np.ndarray
    z_log_var: np.ndarray
    completed: dict | None = None
    imputed: dict | None = None


def encoded_batches(posterior, split: str, x: np.ndarray, y: np.ndarray, ids: np.ndarray,
                    batch_size: int, preprocess=None, complete=None) -> Iterator[LatentBatch]:
    """Stream rows through `posterior` (x -> z_mean, z_log_var, e.g. VAE.predict_posterior),
    one batch in memory at a time. complete(stored rows, z_mean) -> (completed, imputed):
    the rows with their missing cells imputed (pipeline.latents.imputation.Completer).

    Args:
        posterior: x -> (z_mean, z_log_var), e.g. VAE.predict_posterior.
        split: the rows' split name.
        x, y, ids: the stored rows, their labels and ids.
        batch_size: rows per call.
        preprocess: stored rows -> the model's inputs.
        complete: (stored rows, z_mean) -> (completed, imputed), or None
            (pipeline.latents.imputation.Completer).

    Yields:
        One LatentBatch per batch of rows.
    """
    for start in range(0, len(ids), batch_size):
        rows = slice(start, start + batch_size)
        xb = np.asarray(x[rows])
        z_mean, z_log_var = posterior(preprocess(xb) if preprocess else xb)
        filled = complete(xb, np.asarray(z_mean)) if complete else (None, None)
        yield LatentBatch(split, np.asarray(ids[rows]), np.asarray(y[rows]), np.asarray(z_mean),
                          np.asarray(z_log_var), *filled)


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def to_record_batch(batch: LatentBatch, schema: pa.Schema) -> pa.RecordBatch:
    d = batch.z_mean.shape[1]

    def vectors(values):
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, d)

    labels = pa.array(batch.labels.astype(np.int32), mask=batch.labels < 0)
    columns = [pa.array(batch.ids.astype(np.int64)), labels, vectors(batch.z_mean), vectors(batch.z_log_var)]
    if "completed" in schema.names:
        for name, values in (("completed", batch.completed), ("imputed", batch.imputed)):
            struct = schema.field(name).type
            columns.append(pa.StructArray.from_arrays([pa.array(values[f.name], f.type) for f in struct],
                                                      fields=list(struct)))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def write_latents(out_dir: str | Path, batches: Iterable[LatentBatch], latent_dim: int, metadata: dict) -> int:
    """A whole latent dataset from one writer: one Parquet file per split; replaces out_dir atomically.

    Batches are buffered up to ROW_GROUP_SIZE rows and written as one row group, so
    memory holds at most one row group whatever the number of rows. Returns the rows written.
    """
    with atomic_dir(out_dir) as tmp:
        return write_part(tmp, batches, latent_dim, metadata, part=0)


def write_part(directory: str | Path, batches: Iterable[LatentBatch], latent_dim: int, metadata: dict,
               part: int, table: dict | None = None) -> int:
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
    return _write(batches, latent_schema(latent_dim, metadata, table),
                  lambda split: Path(directory) / f"split={split}" / f"part-{part}.parquet")


def write_partition(out_dir: str | Path, split: str, batches: Iterable[LatentBatch], latent_dim: int,
                    metadata: dict, overwrite: bool = False, table: dict | None = None) -> int:
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
    if not SPLIT_NAME.fullmatch(split):
        raise DataError(f"split name must be letters, digits, '_', '-' or '.'. Got {split!r} instead.")
    out_dir = Path(out_dir)
    target = out_dir / f"split={split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(out_dir):  # from the first check to the publish: a second command waits
        recover_dir(target)  # what a killed run of this command left
        if target.exists() and not overwrite:
            raise DataError(f"{target}: partition exists; pass --overwrite to replace it, or choose another --split")
        for file in sorted(out_dir.glob("split=*/*.parquet")):
            if file.parent != target:
                check_file(file, latent_dim, metadata.get("model_sha256"))

        def path_of(batch_split: str) -> Path:
            if batch_split != split:  # pragma: no cover - the caller builds every batch with `split`
                raise ValueError(f"batch of split {batch_split!r} written to partition {split!r}")
            return tmp / "part-0.parquet"

        with atomic_dir(target) as tmp:
            return _write(batches, latent_schema(latent_dim, metadata, table), path_of)


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
            fault_point("parquet", self.path)  # in the middle of the writer: a row group out, the file not closed

    def close(self) -> None:
        self.writer.close()


def check_file(file: Path, latent_dim: int | None, model_sha256: str | None = None) -> None:
    """DataError unless `file` is a latent Parquet file of this schema (and of `latent_dim`,
    and written by the model of `model_sha256`, where given)."""
    meta = read_metadata(file)
    version = str(meta.get("schema_version"))
    if version != SCHEMA_VERSION:
        raise DataError(f"{file}: latent schema version {version!r}, expected {SCHEMA_VERSION!r}")
    schema = pq.read_schema(file)
    names = schema.names
    if names[:len(COLUMNS)] != list(COLUMNS) or names[len(COLUMNS):] not in ([], list(IMPUTED_COLUMNS)):
        raise DataError(f"{file}: columns {names}, expected {list(COLUMNS)}, then {list(IMPUTED_COLUMNS)} "
                        "where encode imputed a table's cells")
    d = schema.field("z_mean").type.list_size
    if latent_dim is not None and d != latent_dim:
        raise DataError(f"{file}: latent_dim {d}, expected {latent_dim} (re-run encode for this model)")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise DataError(f"{file}: written by another model (sha256 {str(meta.get('model_sha256'))[:12]}…, this one "
                        f"{model_sha256[:12]}…); one latent dataset holds one model's latents. Give --output another "
                        "directory, or re-encode its partitions with this model")


def read_metadata(path: str | Path) -> dict:
    """The pipeline's key-value metadata of one latent Parquet file (values parsed)."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in raw.items():
        key = key.decode()
        if key.startswith(METADATA_PREFIX):
            text = value.decode()
            try:
                out[key[len(METADATA_PREFIX):]] = json.loads(text)
            except ValueError:
                out[key[len(METADATA_PREFIX):]] = text
    return out
