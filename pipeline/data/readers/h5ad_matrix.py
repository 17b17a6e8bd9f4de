"""A matrix stored in an .h5ad (X or a layer), checked before it is read, and its readers by rows.

A dense matrix must be 2-D; a sparse one (anndata's csr_matrix or csc_matrix group) must
declare a shape of two whole numbers, keep integer index arrays of the lengths that shape
implies, and an indptr running from 0 to the values stored. A CSR matrix's rows are then
checked a chunk at a time as they are read (`Csr.part`): a corrupt byte is an error line,
never an index out of bounds in compiled code (pipeline.data.readers.h5ad reads the file).
"""

from pathlib import Path

import numpy as np

from pipeline.data.readers.hdf5 import checked
from pipeline.platform.errors import DataError


class Dense:
    """A 2-D h5py dataset, read by rows."""

    def __init__(self, dataset):
        self.dataset, self.shape = dataset, dataset.shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.dataset[start:stop].astype(np.float32)


class Csr:
    """A CSR matrix's three arrays (h5py datasets, or arrays in memory), read by rows. Each chunk's
    indptr must rise by at most the row width and its indices lie within the row: checked
    before they index anything."""

    def __init__(self, path: Path, what: str, shape: tuple[int, int], data, indices, indptr):
        self.path, self.what, self.shape = path, what, shape
        self.data, self.indices, self.indptr = data, indices, indptr

    def rows(self, start: int, stop: int) -> np.ndarray:
        import scipy.sparse as sp

        values, indices, ptr = self.part(start, stop)
        return sp.csr_matrix((values, indices, ptr), shape=(stop - start, self.shape[1])).toarray()

    def part(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows start..stop-1 as (values, indices, indptr from 0), checked."""
        ptr = np.asarray(self.indptr[start : stop + 1], dtype=np.int64)
        lengths = np.diff(ptr)
        if lengths.size and (lengths.min() < 0 or lengths.max() > self.shape[1]):
            row = start + int(np.flatnonzero((lengths < 0) | (lengths > self.shape[1]))[0])
            raise DataError(
                f"{self.path}: {self.what}'s indptr says row {row} holds {lengths[row - start]} values "
                f"(rows hold 0 to {self.shape[1]}); the file is corrupt"
            )
        indices = np.asarray(self.indices[ptr[0] : ptr[-1]])
        if indices.size and (indices.min() < 0 or indices.max() >= self.shape[1]):
            raise DataError(
                f"{self.path}: {self.what} has a column index out of range 0..{self.shape[1] - 1} "
                f"in rows {start}..{stop - 1} (found {indices.min()}..{indices.max()}); "
                "the file is corrupt"
            )
        return np.asarray(self.data[ptr[0] : ptr[-1]], dtype=np.float32), indices, ptr - ptr[0]


def dense(path: Path, what: str, dataset) -> Dense:
    """A dense matrix (an h5py dataset already checked), which must be 2-D."""
    if dataset.ndim != 2:
        raise DataError(f"{path}: {what} must be a 2-D matrix of numbers. Got shape {dataset.shape} instead.")
    return Dense(dataset)


def sparse_parts(path: Path, file, what: str, group) -> tuple[str, tuple[int, int], object, object, object]:
    """(encoding, shape, data, indices, indptr) of a sparse matrix's group, each checked: the
    encoding csr_matrix or csc_matrix, the shape two whole numbers, the arrays stored in the
    file, of the lengths the shape implies, and indptr from 0 to the values stored."""
    encoding = _encoding(path, what, group)
    shape = _shape(path, what, group.attrs.get("shape"))
    data, indices, indptr = (
        checked(path, file, f"{what}/{name}", numbers=True) for name in ("data", "indices", "indptr")
    )
    major = shape[0] if encoding == "csr_matrix" else shape[1]
    for name, array in (("indices", indices), ("indptr", indptr)):
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise DataError(
                f"{path}: {what}/{name} must be a 1-D array of integers. Got shape {array.shape} of "
                f"{array.dtype} instead."
            )
    if data.ndim != 1 or data.shape != indices.shape or indptr.shape != (major + 1,):
        raise DataError(
            f"{path}: {what} declares shape {list(shape)} but stores {data.shape[0] if data.ndim else 0} "
            f"values, {indices.shape[0]} indices and {indptr.shape[0]} indptr entries (expected "
            f"{major + 1}); the file is corrupt"
        )
    if indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise DataError(
            f"{path}: {what}/indptr runs from {indptr[0]} to {indptr[-1]}, not from 0 to the "
            f"{indices.shape[0]} values stored; the file is corrupt"
        )
    return encoding, shape, data, indices, indptr


def _encoding(path: Path, what: str, group) -> str:
    """The group's sparse encoding (anndata's encoding-type, or h5sparse's format): csr_matrix or
    csc_matrix."""
    encoding = group.attrs.get("encoding-type", group.attrs.get("h5sparse_format", ""))
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    encoding = encoding if encoding.endswith("_matrix") else f"{encoding}_matrix"
    if encoding not in ("csr_matrix", "csc_matrix"):
        raise DataError(
            f"{path}: {what} is a group of encoding {encoding.removesuffix('_matrix')!r}; expected a "
            "dense matrix or a sparse csr_matrix / csc_matrix"
        )
    return encoding


def _shape(path: Path, what: str, shape) -> tuple[int, int]:
    """A sparse matrix's shape attribute: two whole numbers ≥ 0."""
    values = np.asarray(shape if shape is not None else [])
    if values.shape != (2,) or values.dtype.kind not in "iu" or (values < 0).any():
        raise DataError(
            f"{path}: {what}'s shape attribute must be two whole numbers ≥ 0. Got {shape!r} instead."
        )
    return int(values[0]), int(values[1])
