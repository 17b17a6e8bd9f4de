"""The latent Parquet dataset's contract: its columns, schema and metadata (pipeline.latents.writer
writes it, pipeline.latents.reader reads it).

    data/latents/split=train/part-0.parquet   (part-1, ... when several workers encode)
    data/latents/split=test/part-0.parquet

Columns: id int64, label int32 (null where the source has none), z_mean and z_log_var
as fixed_size_list<float32>[d], the row's scores (pipeline.latents.scores) as float64;
`split` is the hive partition key. File metadata holds the schema version, latent_dim,
dataset fingerprint, model sha256, params, versions, and how the scores were made.
"""

import importlib.metadata
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.platform.errors import DataError

# 2: the score columns; 3: novelty against the training rows, complexity-corrected; 4: novelty of three
# parts (fit, standardized error, latent neighbours), its reference's arrays packed
SCHEMA_VERSION = "4"
METADATA_PREFIX = "vae_pipeline."
COLUMNS = {
    "id": "stable row id from prepare: the example's index in the source",
    "label": "class label; null where the source has none",
    "z_mean": "mu_phi(x), mean of q(z|x): the representation",
    "z_log_var": "log sigma_phi(x)^2, log-variance of q(z|x)",
    "surprisal": "S_K = log 1/p(x) in nats, estimated with K importance samples (metadata surprisal)",
    "bits_per_dim": "surprisal / (D ln 2) where the values are D pixels; null otherwise",
    "surprisal_quantile": "fraction of the training rows less surprising (null without a reference)",
    "novelty": "the score to rank rows by when looking for odd ones: 1 is as odd as the training rows' 99th "
    "percentile, 0 their median (metadata surprisal.novelty); null without a reference",
}
# Each of COLUMNS' Arrow type, in the words of the contract's reference page (docs/reference/latents.md).
COLUMN_TYPES = {
    "id": "int64",
    "label": "int32, nullable",
    "z_mean": "fixed_size_list<float32>[d]",
    "z_log_var": "fixed_size_list<float32>[d]",
    "surprisal": "float64",
    "bits_per_dim": "float64, nullable",
    "surprisal_quantile": "float64, nullable",
    "novelty": "float64, nullable",
}
# Data with covariates (data.covariates): one more column, after the scores.
COVARIATES_COLUMN = {
    "covariates": "the example's covariates, which the model conditioned on (metadata covariates)"
}
# The score columns (LatentBatch.scores' fields): float64, null where a field is None.
SCORE_COLUMNS = ("surprisal", "bits_per_dim", "surprisal_quantile", "novelty")
# Under model.posterior flow, q(z|x) is not Gaussian: what the two columns hold then.
FLOW_COLUMNS = {
    "z_mean": "the flow's image of the base mean of q(z|x), z at epsilon = 0: the representation",
    "z_log_var": "log-variance of the flow's base Gaussian (q(z|x) itself is not Gaussian)",
}
# Every file's key-value metadata (each key prefixed METADATA_PREFIX, values JSON unless
# plain text); tests/latents/test_latents.py fails on a key missing here.
METADATA = {
    "schema_version": "this contract's version",
    "latent_dim": "d, the width of z_mean and z_log_var",
    "columns": "{column: what it holds}",
    "dataset_source": "data.source, and the file or folder read where there is one",
    "dataset_fingerprint": "sha256 of the prepared data (the command: of the input file)",
    "label_names": "the label of each class index",
    "model_sha256": "sha256 of the model.keras that encoded",
    "choices": "every `auto` knob's value and reason",
    "params": "the training run's params and encode's own",
    "engine": "the encode stage's engine and cluster",
    "versions": "versions of the packages that wrote it",
    "surprisal": "the scores' K, the novelty score's definition, the training rows' reference for the "
    "quantile and novelty",
    "covariates": "data with covariates only: each one's type and levels, and whether the encoder read them",
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


def describe_columns(posterior: str, covariates: bool = False) -> dict:
    """The files' column descriptions for a model's `model.posterior`, and data with covariates or not."""
    return {
        **COLUMNS,
        **(FLOW_COLUMNS if posterior == "flow" else {}),
        **(COVARIATES_COLUMN if covariates else {}),
    }


def latent_schema(latent_dim: int, metadata: dict | None = None, table: dict | None = None) -> pa.Schema:
    """table: {column: its levels, or None for numbers} when the files also hold each row
    `completed` (a struct of the table's columns, missing cells imputed) and `imputed` (a
    struct of flags: which of them were). Where the metadata has covariates, the rows carry
    them: a struct of one field per covariate, typed as its levels are (float64 for numbers)."""
    covariates = {c["name"]: c["levels"] for c in (metadata or {}).get("covariates", {}).get("columns", [])}
    vector = pa.list_(pa.float32(), latent_dim)
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=True),
        pa.field("z_mean", vector, nullable=False),
        pa.field("z_log_var", vector, nullable=False),
        *(pa.field(name, pa.float64(), nullable=name != "surprisal") for name in SCORE_COLUMNS),
    ]
    if covariates:
        fields.append(
            pa.field("covariates", pa.struct([pa.field(n, _value_type(v)) for n, v in covariates.items()]))
        )
    if table:
        fields += [
            pa.field(
                "completed", pa.struct([pa.field(n, _value_type(levels)) for n, levels in table.items()])
            ),
            pa.field("imputed", pa.struct([pa.field(n, pa.bool_()) for n in table])),
        ]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "latent_dim": str(latent_dim),
        "columns": json.dumps(describe_columns("gaussian", bool(covariates))),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    return pa.schema(fields, metadata={METADATA_PREFIX + k: v for k, v in meta.items()})


def _value_type(levels: list | None) -> pa.DataType:
    """A table column's values: its levels' type (strings, booleans, integers), else float64."""
    return pa.float64() if levels is None else pa.array(levels).type


@dataclass(frozen=True)
class RowScores:
    """The score columns of a batch of rows (pipeline.latents.scores), each (n,); None where
    the column is null."""

    surprisal: np.ndarray
    bits_per_dim: np.ndarray | None
    surprisal_quantile: np.ndarray | None
    novelty: np.ndarray | None


@dataclass(frozen=True)
class LatentBatch:
    """Rows of one split: ids (n,), labels (n,) with -1 for none, z_mean and z_log_var (n, d),
    their scores; for a table with imputation, completed and imputed: {column: (n,) values,
    (n,) flags}; for data with covariates, covariates: {name: (n,) values}."""

    split: str
    ids: np.ndarray
    labels: np.ndarray
    z_mean: np.ndarray
    z_log_var: np.ndarray
    scores: RowScores
    completed: dict | None = None
    imputed: dict | None = None
    covariates: dict | None = None


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_file(file: Path, latent_dim: int | None, model_sha256: str | None = None) -> None:
    """DataError unless `file` is a latent Parquet file of this schema (and of `latent_dim`,
    and written by the model of `model_sha256`, where given)."""
    meta = read_metadata(file)
    version = str(meta.get("schema_version"))
    if version != SCHEMA_VERSION:
        raise DataError(f"{file}: latent schema version {version!r}, expected {SCHEMA_VERSION!r}")
    schema = pq.read_schema(file)
    names = schema.names
    rest = names[len(COLUMNS) + (names[len(COLUMNS) : len(COLUMNS) + 1] == list(COVARIATES_COLUMN)) :]
    if names[: len(COLUMNS)] != list(COLUMNS) or rest not in ([], list(IMPUTED_COLUMNS)):
        raise DataError(
            f"{file}: columns {names}, expected {list(COLUMNS)}, then {list(COVARIATES_COLUMN)} for data "
            f"with covariates, then {list(IMPUTED_COLUMNS)} where encode imputed a table's cells"
        )
    d = schema.field("z_mean").type.list_size
    if latent_dim is not None and d != latent_dim:
        raise DataError(f"{file}: latent_dim {d}, expected {latent_dim} (re-run encode for this model)")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise DataError(
            f"{file}: written by another model (sha256 {str(meta.get('model_sha256'))[:12]}…, this one "
            f"{model_sha256[:12]}…); one latent dataset holds one model's latents. Give --output another "
            "directory, or re-encode its partitions with this model"
        )


def read_metadata(path: str | Path) -> dict:
    """The pipeline's key-value metadata of one latent Parquet file (values parsed)."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in raw.items():
        key = key.decode()
        if key.startswith(METADATA_PREFIX):
            text = value.decode()
            try:
                out[key[len(METADATA_PREFIX) :]] = json.loads(text)
            except ValueError:
                out[key[len(METADATA_PREFIX) :]] = text
    return out
