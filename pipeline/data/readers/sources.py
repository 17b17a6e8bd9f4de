"""Readers for every `data.source`, and the one rule that tells a path's source from what it is.

Each reader returns a `Dataset` (pipeline.data.readers.source_dataset) whose x keeps the source's own dtype.
Problems with a file raise DataError naming the file and what was wrong. The same readers
serve prepare and `vae-pipeline encode` on new data.

Memory does not grow with the data: uncompressed sources (`.npz` written by `np.savez`,
plain IDX files) are memory-mapped where they lie, and sources that must be decoded
(gzip IDX, images, tables, .h5ad) are decoded chunk by chunk into a memory-mapped array in a
`scratch` directory. Without one (small data, tests) the arrays are in memory.
"""

import dataclasses
import difflib
import logging
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.data.readers.covariate_values import (
    check_covariate_names,
    one_per_example,
    read_covariate_values,
)
from pipeline.data.readers.h5ad import read_h5ad
from pipeline.data.readers.idx import read_idx_dir, read_idx_release
from pipeline.data.readers.images import read_image_folder
from pipeline.data.readers.source_dataset import DEFLATE_MAX_RATIO, Dataset, encode_labels
from pipeline.data.readers.tables import TABLE_SUFFIXES, read_table
from pipeline.data.resolve_columns import LEFT_OUT
from pipeline.platform.choices import Choice
from pipeline.platform.errors import DataError

log = logging.getLogger(__name__)
# What data.source reads from a path: these read files of their own format from data.path.
FILE_SOURCES = ("idx", "npz", "table", "image_folder", "anndata")


def load_source(config, scratch: Path | None = None, columns=None, engine=None, genes=None) -> Dataset:
    """Read the dataset that `config` (a DataConfig) names.

    Args:
        config: the data params.
        scratch: a directory for decoded arrays (memory-mapped); None keeps them in memory.
        columns: a table's typed columns from a trained model (new data is coded alike).
        engine: where image folders are decoded and Parquet tables read (None: here).
        genes: an .h5ad's genes a trained model reads, in its order (matched by name), or None.

    Returns:
        The Dataset the source's reader returns.
    """
    path = _source_path(config) if config.source in FILE_SOURCES else None
    covariates, values = tuple(config.covariates), None
    if covariates:
        check_covariate_names(config)
        values = read_covariate_values(config.source, path, covariates)
    dataset = _read(config, path, scratch, columns, engine, genes)
    if not covariates:
        return dataset
    return _with_covariates(dataset, config, path, values)


def _read(config, path: Path | None, scratch: Path | None, columns, engine, genes) -> Dataset:
    """The Dataset of data.source's reader (load_source's arguments, passed on); a table leaves
    out the covariates' columns, which are no features."""
    readers = {
        "digits": lambda: read_digits(),
        "fashion_mnist": lambda: read_idx_release(config.source, config.path, scratch),
        "mnist": lambda: read_idx_release(config.source, config.path, scratch),
        "idx": lambda: read_idx_dir(path, scratch),
        "npz": lambda: read_npz(path, config.npz.x_key, config.npz.y_key, scratch),
        "table": lambda: read_table(
            path,
            config.table.label_column,
            config.table.feature_columns,
            scratch,
            config.table.column_types,
            columns,
            engine,
            (*config.table.drop_columns, *config.covariates),
        ),
        "anndata": lambda: read_h5ad(path, config.anndata.layer, config.anndata.label_key, scratch, genes),
        "image_folder": lambda: read_image_folder(
            path, config.images.size, config.images.color, scratch, engine
        ),
    }
    return readers[config.source]()


def _with_covariates(dataset: Dataset, config, path: Path | None, values) -> Dataset:
    """The dataset with one value of each covariate per example; a table's covariate columns
    recorded in the choices as left out."""
    left_out = {
        f"data.table.column_types.{name}": Choice(LEFT_OUT, "a covariate (data.covariates)")
        for name in config.covariates
        if config.source == "table"
    }
    return dataclasses.replace(
        dataset,
        choices={**dataset.choices, **left_out},
        covariates=one_per_example(path, values, len(dataset.x)),
    )


def source_of(path: Path) -> str:
    """The data.source that reads `path`, from what it is (see `_kind`); DataError when none does."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (expected {', '.join(map(_described, FILE_SOURCES))})")
    found = _kind(path)
    if found is None:
        raise DataError(
            f"{path}: unknown kind of file {path.suffix or '(no suffix)'!r} (expected "
            f"{', '.join(map(_described, FILE_SOURCES))})"
        )
    return found


def _source_path(config) -> Path:
    """data.path, checked to exist and to hold what data.source reads (by `_kind`'s rule)."""
    path = _existing(config.path, "data.path")
    found = _kind(path)
    if found not in (None, config.source):
        raise DataError(
            f"{path}: data.source is {config.source!r}, but data.path holds {_described(found)}; "
            f"set data.source: {found}, or point data.path at {_described(config.source)}"
        )
    return path


def _kind(path: Path) -> str | None:
    """The one rule: an .npz file is npz; a .csv/.tsv/.parquet file a table; an .h5ad file
    anndata; a directory with IDX files in it idx; any other directory an image folder (one
    subfolder per class)."""
    if path.is_file():
        suffix = path.suffix.lower()
        return {".npz": "npz", ".h5ad": "anndata"}.get(suffix, "table" if suffix in TABLE_SUFFIXES else None)
    if path.is_dir():
        return "idx" if any("idx" in p.name.lower() for p in path.iterdir()) else "image_folder"
    return None


def _described(source: str) -> str:
    return {
        "npz": "an .npz file",
        "table": "a .csv/.tsv/.parquet table",
        "idx": "a directory of IDX files",
        "image_folder": "a folder of class subfolders of images",
        "anndata": "an .h5ad file",
    }[source]


def read_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: no download
    x = digits.images.astype(np.uint8)[..., None]  # (1797, 8, 8, 1), values 0..16
    return Dataset(
        x=x,
        y=digits.target.astype(np.int32),
        source="digits",
        label_names=tuple(str(n) for n in digits.target_names),
        declared_levels=16.0,
    )


def read_npz(path: Path, x_key: str, y_key: str | None, scratch: Path | None = None) -> Dataset:
    """Arrays of an .npz; members stored uncompressed (np.savez) are memory-mapped, not loaded."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
        if x_key not in keys or (y_key is not None and y_key not in keys):
            missing = x_key if x_key not in keys else y_key
            close = difflib.get_close_matches(missing, keys, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            if missing == y_key and not close:
                hint = "; data without labels takes data.npz.y_key: null"
            raise DataError(f"{path}: no array named {missing!r}; it holds {keys}{hint}")
        x = npz_member(path, x_key)
        raw_y = npz_member(path, y_key) if y_key else None
    # zlib: a corrupt deflate stream; NotImplementedError / RuntimeError: an unknown
    # compression method / an encrypted member.
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as error:
        raise DataError(f"{path}: cannot read npz file ({type(error).__name__}: {error})") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: array {x_key!r} must be real numbers. Got dtype {x.dtype} instead.")
    if raw_y is not None and len(raw_y) != len(x):
        raise DataError(f"{path}: {len(x)} inputs in {x_key!r} but {len(raw_y)} labels in {y_key!r}")
    y, names = encode_labels(raw_y, len(x), scratch)
    return Dataset(x=x, y=y, label_names=names, source="npz", path=str(path))


def npz_member(path: Path, key: str) -> np.ndarray:
    """One array of an .npz: a read-only memory map when stored uncompressed, else loaded.

    The member's .npy header is checked against the member's size before anything of its
    declared shape is mapped or allocated: a header can declare any shape.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        shape, fortran, dtype, header = _npy_header(archive, info)
        declared = header + math.prod(shape) * dtype.itemsize
        if not dtype.hasobject and (
            declared != info.file_size or declared > DEFLATE_MAX_RATIO * info.compress_size + 1024
        ):
            raise DataError(
                f"{path}: array {key!r} declares shape {list(shape)} of {dtype} ({declared:,} bytes "
                f"with its header), but the member holds {info.file_size:,}; the file is corrupt"
            )
        if info.compress_type == zipfile.ZIP_STORED and not dtype.hasobject:
            return np.memmap(
                path,
                dtype=dtype,
                mode="r",
                offset=_data_offset(path, info, header),
                shape=shape,
                order="F" if fortran else "C",
            )
    log.info(
        "%s: array %r is compressed; it is loaded into memory (np.savez, not savez_compressed, "
        "lets it be memory-mapped)",
        path,
        key,
    )
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, Fortran order, dtype, the header's length in bytes) of a member's .npy header."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(member)
        return shape, fortran, dtype, member.tell()


def _data_offset(path: Path, info: zipfile.ZipInfo, header: int) -> int:
    """Where an uncompressed member's array starts in the file: after its local file header
    (whose name and extra field lengths only the file itself holds) and its .npy header."""
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(f.read(4), "<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length) + header


def _existing(path: str | None, key: str) -> Path:
    if not path:
        raise DataError(f"{key}: this data.source reads local files; set {key}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (from {key})")
    return path
