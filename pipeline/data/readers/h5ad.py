"""AnnData (.h5ad), the format of single-cell count data (scanpy, scvi-tools).

X, or a layer (data.anndata.layer), dense or CSR-sparse, is read a chunk of rows at a time
into a scratch memory map: a sparse matrix is never densified whole in memory. (A CSC
matrix keeps each row's values scattered over the file: it is loaded whole, converted,
with a warning saying how to store it by rows.) Labels come from an obs column
(data.anndata.label_key), gene names from var's index. Whole non-negative values resolve to
the count likelihood, as any count matrix does (pipeline.data.resolve_data).

A file is checked before anything of its size is allocated (pipeline.data.readers.hdf5):
what it reads must be stored in it (no link to another file, no external or virtual
dataset), hold real numbers where numbers are meant, and store what its shape declares; a
sparse matrix's index arrays are checked a chunk at a time as they are read
(pipeline.data.readers.h5ad_matrix), so a corrupt byte is an error line, never an index out
of bounds in compiled code.

anndata is an optional dependency (`pip install 'vae-pipeline[anndata]'`).
"""

import collections
import contextlib
import difflib
import logging
from pathlib import Path

import numpy as np

from pipeline.data.readers.h5ad_matrix import Csr, Dense, dense, sparse_parts
from pipeline.data.readers.hdf5 import check_room, checked, checked_tree
from pipeline.data.readers.source_dataset import Dataset, chunk_rows, encode_labels
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate

log = logging.getLogger(__name__)
INSTALL = "pip install 'vae-pipeline[anndata]'"


def anndata_io():
    """anndata's element reader and writer (anndata.io), or DataError saying how to install it."""
    try:
        import anndata.io
    except ImportError:
        raise DataError(f"reading or writing .h5ad files needs the anndata package: {INSTALL}") from None
    return anndata.io


@contextlib.contextmanager
def h5ad_errors(path: Path):
    """h5py's and anndata's errors on a broken file, as one line naming it."""
    try:
        yield
    except (
        OSError,
        KeyError,
        ValueError,
        TypeError,
        RuntimeError,
        MemoryError,
    ) as error:  # h5py: RuntimeError too
        raise DataError(
            f"{path}: cannot read .h5ad file ({type(error).__name__}: {' '.join(str(error).split())})"
        ) from None


def read_h5ad(
    path: Path,
    layer: str | None,
    label_key: str | None,
    scratch: Path | None = None,
    genes: list[str] | None = None,
) -> Dataset:
    """The cells of an .h5ad file: one row of X (or `layer`) per cell, labelled by obs[label_key].

    Args:
        path: the .h5ad file.
        layer: a layer's name, or None for X.
        label_key: the obs column of the labels, or None.
        scratch: a directory for the decoded rows (a memory map), or None.
        genes: the genes a model was trained on (var names, in its order), or None. The file's
            columns are matched to them by name, and reordered; by position where either has none.

    Returns:
        The Dataset: x float32 (cells, genes), the labels' indices, the genes' names.
    """
    import h5py

    io = anndata_io()
    with h5ad_errors(path), h5py.File(path, "r") as file:
        matrix = _matrix(path, file, layer)
        cells = matrix.shape[0]
        _check_room(path, layer, matrix.shape, scratch)
        names, order = _columns(path, file, matrix.shape[1], genes, io)
        x = _read_rows(matrix, order, scratch)
        labels = _labels(path, file, label_key, cells, io)
    y, label_names = encode_labels(labels, cells, scratch)
    feature_names = tuple(genes) if genes else names
    return Dataset(
        x=x, y=y, label_names=label_names, source="anndata", path=str(path), feature_names=feature_names
    )


def _check_room(path: Path, layer: str | None, shape: tuple[int, int], scratch: Path | None) -> None:
    """DataError unless the matrix as float32 fits on scratch's disk (or in memory without one),
    and four of its rows fit in memory."""
    (cells, columns), row = shape, shape[1] * np.dtype(np.float32).itemsize
    check_room(path, f"{layer or 'X'} ({cells:,} × {columns:,} float32)", cells * row, scratch)
    check_room(path, f"a row of {layer or 'X'} ({columns:,} columns), four times", 4 * row, None)


def _columns(
    path: Path, file, columns: int, genes: list[str] | None, io
) -> tuple[tuple[str, ...] | None, np.ndarray | None]:
    """(var's gene names or None, the file's column of each of `genes` or None for the file's own
    order): a model's genes need the file's genes named."""
    names = _var_names(path, file, columns, io)
    if genes and names is None:
        raise DataError(
            f"{path}: var has no gene names, but the model was trained on named genes; give the "
            "file its var_names (the model's are in its manifest.json, feature_names)"
        )
    return names, _gene_order(path, names, genes) if genes else None


def _read_rows(matrix: Dense | Csr, order: np.ndarray | None, scratch: Path | None) -> np.ndarray:
    """The matrix as float32 (cells, genes), a chunk of rows at a time (its columns in `order`)."""
    cells, columns = matrix.shape
    row = columns * np.dtype(np.float32).itemsize
    width = columns if order is None else len(order)
    x = allocate(scratch, "anndata_x", (cells, width), np.float32)
    step = chunk_rows(row)  # at least one row
    for start in range(0, cells, step):
        rows = matrix.rows(start, min(start + step, cells))
        x[start : start + len(rows)] = rows if order is None else rows[:, order]
    return x


def _matrix(path: Path, file, layer: str | None) -> Dense | Csr:
    """X or the layer, checked: Dense, or Csr (a CSC matrix converted by `_by_rows`)."""
    import h5py

    what = "X" if layer is None else f"layers/{layer}"
    if layer is not None:
        _check_layer(path, file, layer)
    element = checked(path, file, what, numbers=True)
    if isinstance(element, h5py.Dataset):
        return dense(path, what, element)
    encoding, shape, data, indices, indptr = sparse_parts(path, file, what, element)
    if encoding == "csr_matrix":
        return Csr(path, what, shape, data, indices, indptr)
    return _by_rows(path, what, shape, data, indices, indptr)


def _check_layer(path: Path, file, layer: str) -> None:
    """DataError naming the layers there are (and the closest name) when `layer` is not one."""
    layers = list(file["layers"]) if "layers" in file else []
    if layer not in layers:
        close = difflib.get_close_matches(layer, layers, n=1)
        raise DataError(
            f"{path}: no layer {layer!r} (data.anndata.layer); its layers are {layers}"
            + (f" (did you mean '{close[0]}'?)" if close else "; null reads X")
        )


def _by_rows(path: Path, what: str, shape: tuple[int, int], data, indices, indptr) -> Csr:
    """A CSC matrix loaded whole (its columns checked as a Csr of the transpose), as rows in memory."""
    import scipy.sparse as sp

    log.warning(
        "%s: %s is stored by columns (CSC): loaded whole to read it by rows; "
        "`adata.X = adata.X.tocsr()` before writing stores it by rows",
        path,
        what,
    )
    check_room(path, f"{what} whole", 4 * 12 * indices.shape[0], None)  # values and indices, twice, with room
    columns = Csr(path, f"{what} (by columns)", (shape[1], shape[0]), data, indices, indptr)
    parts = [columns.part(start, min(start + 4096, shape[1])) for start in range(0, shape[1], 4096)]
    values = np.concatenate([p[0] for p in parts] or [np.zeros(0, np.float32)])
    rows = sp.csc_matrix(
        (
            values,
            np.concatenate([p[1] for p in parts] or [np.zeros(0, np.int64)]),
            np.asarray(indptr[:], dtype=np.int64),
        ),
        shape=shape,
    ).tocsr()
    return Csr(path, what, shape, rows.data, rows.indices, rows.indptr)


def _var_names(path: Path, file, genes: int, io) -> tuple[str, ...] | None:
    """var's index (the genes' names), or None where the file has none."""
    var = file.get("var")
    index = var.attrs.get("_index") if var is not None else None
    if index is None or index not in var:
        return None
    names = element_values(path, file, f"var/{index}", io)
    if names.shape != (genes,):
        raise DataError(
            f"{path}: var holds {names.shape[0] if names.ndim else 0} gene names for {genes} columns"
        )
    return tuple(names.astype(str))


def _gene_order(path: Path, names: tuple[str, ...], genes: list[str]) -> np.ndarray | None:
    """The file's column of each gene the model was trained on, in the model's order (None:
    the file's own order)."""
    repeated = sorted(name for name, n in collections.Counter(names).items() if n > 1)
    if repeated:
        raise DataError(
            f"{path}: gene names repeat in var ({', '.join(repeated[:5])}); they cannot be matched to "
            "the model's genes"
        )
    column = {name: j for j, name in enumerate(names)}
    missing = [g for g in genes if g not in column]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} of the model's {len(genes)} genes are not in var: "
            f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"
        )
    if len(names) > len(genes):
        log.info("%s: %d genes the model was not trained on are left out", path, len(names) - len(genes))
    return None if names == tuple(genes) else np.array([column[g] for g in genes])


def _labels(path: Path, file, label_key: str | None, cells: int, io) -> np.ndarray | None:
    """obs[label_key] as an array of strings, one per cell, or None."""
    if label_key is None:
        return None
    columns = obs_columns(file)
    if label_key not in columns:
        close = difflib.get_close_matches(label_key, columns, n=1)
        raise DataError(
            f"{path}: no obs column {label_key!r} (data.anndata.label_key); obs has {columns}"
            + (f" (did you mean '{close[0]}'?)" if close else "; null reads no labels")
        )
    import pandas as pd  # anndata's own dependency

    values = element_values(path, file, f"obs/{label_key}", io)
    if values.ndim != 1 or len(values) != cells:
        raise DataError(
            f"{path}: obs[{label_key!r}] must hold one value per cell ({cells}). Got shape "
            f"{list(values.shape)} instead."
        )
    missing = int(pd.isna(values).sum())
    if missing:
        raise DataError(f"{path}: obs[{label_key!r}] has no value for {missing} of {len(values)} cells")
    return np.array(
        [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values], dtype=str
    )


def obs_columns(file) -> list[str]:
    """The obs columns of an open .h5ad file (less its index and anndata's private ones)."""
    return [c for c in file["obs"] if not c.startswith("_") and c != file["obs"].attrs.get("_index")]


def element_values(path: Path, file, name: str, io) -> np.ndarray:
    """An obs or var column (a dataset, or a group such as a categorical), each part of it
    checked, decoded by anndata."""
    from anndata._io.specs.registry import IORegistryError

    element = checked_tree(path, file, name)
    try:
        return np.asarray(io.read_elem(element), dtype=object)
    except IORegistryError as error:
        raise DataError(
            f"{path}: {name} is stored in an encoding this anndata cannot read "
            f"({' '.join(str(error).split())[:200]})"
        ) from None
