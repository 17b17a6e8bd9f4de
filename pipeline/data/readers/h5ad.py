"""AnnData (.h5ad), the format of single-cell count data (scanpy, scvi-tools).

X, or a layer (data.anndata.layer), dense or CSR-sparse, is read a chunk of rows at a time
into a scratch memory map: a sparse matrix is never densified whole in memory. (A CSC
matrix keeps each row's values scattered over the file: it is loaded whole, converted,
with a warning saying how to store it by rows.) Labels come from an obs column
(data.anndata.label_key). Whole non-negative values resolve to the count likelihood, as
any count matrix does (pipeline.data.resolve_data).

anndata is an optional dependency (`pip install 'vae-pipeline[anndata]'`).
"""

import contextlib
import difflib
import logging
from pathlib import Path

import numpy as np

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
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise DataError(f"{path}: cannot read .h5ad file ({type(error).__name__}: {' '.join(str(error).split())})") \
            from None


def read_h5ad(path: Path, layer: str | None, label_key: str | None, scratch: Path | None = None) -> Dataset:
    """The cells of an .h5ad file: one row of X (or `layer`) per cell, labelled by obs[label_key].

    Args:
        path: the .h5ad file.
        layer: a layer's name, or None for X.
        label_key: the obs column of the labels, or None.
        scratch: a directory for the decoded rows (a memory map), or None.

    Returns:
        The Dataset: x float32 (cells, genes), the labels' indices.
    """
    import h5py

    io = anndata_io()
    with h5ad_errors(path), h5py.File(path, "r") as file:
        matrix = _matrix(path, file, layer, io)
        cells, genes = matrix.shape
        x = allocate(scratch, "anndata_x", (cells, genes), np.float32)
        step = chunk_rows(genes * np.dtype(np.float32).itemsize)
        for start in range(0, cells, step):
            rows = matrix[start:start + step]
            x[start:start + rows.shape[0]] = rows.toarray() if hasattr(rows, "toarray") else rows
        labels = _labels(path, file, label_key, io)
    y, names = encode_labels(labels, cells, scratch)
    return Dataset(x=x, y=y, label_names=names, source="anndata", path=str(path))


def _matrix(path: Path, file, layer: str | None, io):
    """X or the layer: an h5py dataset (dense) or anndata's sparse dataset, sliced by rows."""
    import h5py

    if layer is None:
        element = file["X"]
    else:
        layers = list(file["layers"]) if "layers" in file else []
        if layer not in layers:
            close = difflib.get_close_matches(layer, layers, n=1)
            raise DataError(f"{path}: no layer {layer!r} (data.anndata.layer); its layers are {layers}"
                            + (f" (did you mean '{close[0]}'?)" if close else "; null reads X"))
        element = file["layers"][layer]
    if isinstance(element, h5py.Dataset):
        if element.ndim != 2 or not np.issubdtype(element.dtype, np.number):
            raise DataError(f"{path}: {layer or 'X'} must be a 2-D matrix of numbers. Got {element.shape} of "
                            f"{element.dtype} instead.")
        return element
    matrix = io.sparse_dataset(element)
    if matrix.format == "csc":
        log.warning("%s: %s is stored by columns (CSC): loaded whole to read it by rows; "
                    "`adata.X = adata.X.tocsr()` before writing stores it by rows", path, layer or "X")
        return matrix.to_memory().tocsr()
    return matrix


def _labels(path: Path, file, label_key: str | None, io) -> np.ndarray | None:
    """obs[label_key] as an array of strings, or None."""
    if label_key is None:
        return None
    columns = [c for c in file["obs"] if not c.startswith("_") and c != file["obs"].attrs.get("_index")]
    if label_key not in columns:
        close = difflib.get_close_matches(label_key, columns, n=1)
        raise DataError(f"{path}: no obs column {label_key!r} (data.anndata.label_key); obs has {columns}"
                        + (f" (did you mean '{close[0]}'?)" if close else "; null reads no labels"))
    import pandas as pd  # anndata's own dependency

    values = np.asarray(io.read_elem(file["obs"][label_key]), dtype=object)
    missing = int(pd.isna(values).sum())
    if missing:
        raise DataError(f"{path}: obs[{label_key!r}] has no value for {missing} of {len(values)} cells")
    return values.astype(str)
