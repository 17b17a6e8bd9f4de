"""IDX files (the MNIST format), plain or gzip: one directory of them, or a known release.

Plain files are read chunk by chunk into a preallocated array (a scratch memory map when
given); the known releases (fashion_mnist, mnist) are looked for in data.path, Keras'
cache and Debian's /usr/share/datasets.
"""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from pipeline.data.readers.source_dataset import DEFLATE_MAX_RATIO, Dataset, chunk_rows, encode_labels
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate
from pipeline.platform.params.config import DEFAULT_DATA_PATH

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The standard MNIST-style releases: file names and class names.
IDX_RELEASE_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_RELEASES = {
    "fashion_mnist": (
        "fashion-mnist",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
}


def _idx_header(path: Path, f) -> tuple[tuple[int, ...], np.dtype]:
    head = f.read(4)
    if len(head) < 4 or head[0:2] != b"\0\0" or head[2] not in IDX_DTYPES or head[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {head.hex()})")
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))
    dtype = np.dtype(IDX_DTYPES[head[2]])
    if 0 in shape[1:]:
        raise DataError(
            f"{path}: IDX header declares examples of shape {list(shape[1:])}, with a dimension of 0"
        )
    # Checked before anything of that shape is allocated: a header can declare any size.
    declared, stored = 4 + len(dims) + math.prod(shape) * dtype.itemsize, os.path.getsize(path)
    if _compressed(path) and declared > DEFLATE_MAX_RATIO * stored + 1024:
        raise DataError(
            f"{path}: IDX header declares {list(shape)} ({declared:,} bytes), more than "
            f"{stored:,} gzip-compressed bytes can hold; the file is corrupt"
        )
    if not _compressed(path) and declared != stored:
        raise DataError(
            f"{path}: truncated or padded IDX file: header says {list(shape)} ({declared:,} bytes "
            f"with the header), file holds {stored:,}"
        )
    return shape, dtype


def idx_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The array shape and dtype an IDX file's header declares (reads the header only)."""
    try:
        with _open_idx(path) as f:
            return _idx_header(path, f)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None


def _compressed(path: Path) -> bool:
    return Path(path).suffix == ".gz"


def _open_idx(path: Path):
    try:
        return (gzip.open if _compressed(path) else open)(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None


def read_idx(path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """An IDX file (gzip-compressed when named *.gz) as an array, checking magic and length.

    Read chunk by chunk into `out` (an array of the declared shape, e.g. a memory map) when
    given, so that only one chunk of the file is in memory at a time.
    """
    path = Path(path)
    try:
        with _open_idx(path) as f:
            shape, dtype = _idx_header(path, f)
            if out is None:
                out = np.empty(shape, dtype.newbyteorder("="))
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            step, expected, held = chunk_rows(row_bytes), shape[0] * row_bytes, 0
            for start in range(0, shape[0], step):
                raw = f.read(min(step, shape[0] - start) * row_bytes)
                held += len(raw)
                if len(raw) < min(step, shape[0] - start) * row_bytes:
                    break
                out[start : start + step] = np.frombuffer(raw, dtype).reshape(-1, *shape[1:])
            while block := f.read(1 << 20):  # padding: count it for the message
                held += len(block)
    except (OSError, EOFError, zlib.error) as error:  # gzip's BadGzipFile is an OSError; a bad stream, zlib's
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if held != expected:
        raise DataError(
            f"{path}: truncated or padded IDX file: header says {shape} "
            f"({expected} bytes of data), file holds {held}"
        )
    return out


def _idx_parts(
    files: dict, source: str, path, scratch: Path | None, names: tuple[str, ...] | None = None
) -> Dataset:
    """{split: (images, labels or None)} IDX files as one Dataset; is_test marks the 'test' part.

    The images of every part are decoded into one array (a scratch memory map when given).
    """
    headers = {split: idx_header(images) for split, (images, _) in files.items()}
    rows = {split: shape[0] for split, (shape, _) in headers.items()}
    first_file, (first, dtype) = next(iter(files.values()))[0], next(iter(headers.values()))
    for split, (shape, _) in headers.items():
        if shape[1:] != first[1:]:
            raise DataError(
                f"{files[split][0]}: images of shape {list(shape[1:])}, but "
                f"{first_file} holds {list(first[1:])}"
            )
    x = allocate(scratch, "idx_x", (sum(rows.values()), *first[1:]), dtype.newbyteorder("="))
    raw_y, start = [], 0
    for split, (images, labels) in files.items():
        read_idx(images, out=x[start : start + rows[split]])
        start += rows[split]
        y = read_idx(labels) if labels else None
        if y is not None and len(y) != rows[split]:
            raise DataError(f"{images}: {rows[split]} images but {labels} has {len(y)} labels")
        raw_y.append(y)
    x = x[..., None] if x.ndim == 3 else x
    has_labels = all(y is not None for y in raw_y)
    y, found_names = encode_labels(np.concatenate(raw_y) if has_labels else None, len(x))
    if names is not None and has_labels:  # a known release: keep its class names and indices
        y, found_names = np.concatenate(raw_y).astype(np.int32), names
    is_test = np.repeat([s == "test" for s in rows], list(rows.values())) if "test" in rows else None
    return Dataset(x=x, y=y, label_names=found_names, source=source, path=str(path), is_test=is_test)


def idx_release_candidates(name: str, path: str | None) -> list[Path]:
    """Where a release's IDX files may be: data.path, the Keras cache, Debian's datasets.

    A data.path other than the default is the only place looked: a user who points at a
    folder means that folder, not a system copy found elsewhere.
    """
    if path and path != DEFAULT_DATA_PATH:
        return [Path(path)]
    folder = IDX_RELEASES[name][0]
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return [
        *([Path(path)] if path else []),
        keras_home / "datasets" / folder,
        Path("/usr/share/datasets") / folder,
    ]


def read_idx_release(name: str, path: str | None, scratch: Path | None = None) -> Dataset:
    """fashion_mnist / mnist from local IDX files, else a clear error (never a download: the
    pipeline runs offline, and a run must not depend on the network)."""
    candidates = idx_release_candidates(name, path)
    files = [f for pair in IDX_RELEASE_FILES.values() for f in pair]
    found = next((c for c in candidates if all((c / f).is_file() for f in files)), None)
    if found is None and path and path != DEFAULT_DATA_PATH:  # an explicit data.path: looked there only
        missing = [f for f in files if not (candidates[0] / f).is_file()]
        raise DataError(
            f"{candidates[0]}: data.source {name!r} needs {', '.join(files)} here (from data.path); "
            f"missing: {', '.join(missing)}. Leave data.path at {DEFAULT_DATA_PATH!r} to use a "
            "system copy instead"
        )
    if found is not None:
        parts = {
            split: (found / images, found / labels) for split, (images, labels) in IDX_RELEASE_FILES.items()
        }
        return _idx_parts(parts, name, found, scratch, names=IDX_RELEASES[name][1])
    package = IDX_RELEASES[name][0]
    raise DataError(
        f"data.source {name!r}: IDX files ({', '.join(files)}) not found; looked in "
        f"{', '.join(map(str, candidates))}. Nothing is downloaded: on Debian, "
        f"apt-get install dataset-{package} (files under /usr/share/datasets/{package}), "
        "or point data.path at a folder holding them"
    )


def read_idx_dir(path: Path, scratch: Path | None = None) -> Dataset:
    """A directory of IDX files: images and labels for train, optionally test (t10k / test).

    Files are matched by name: 'image' or 'label', and 'test' or 't10k' for the test part.
    """
    if not path.is_dir():
        raise DataError(f"{path}: data.source 'idx' needs a directory of IDX files")
    found: dict[tuple[str, str], Path] = {}
    for file in sorted(p for p in path.iterdir() if "idx" in p.name.lower()):
        name = file.name.lower()
        kind = "images" if "image" in name else "labels" if "label" in name else None
        split = "test" if ("t10k" in name or "test" in name) else "train"
        if kind is None:
            continue
        if (split, kind) in found:
            raise DataError(f"{path}: two {split} {kind} files: {found[split, kind].name} and {file.name}")
        found[split, kind] = file
    if ("train", "images") not in found:
        raise DataError(f"{path}: no IDX images file (expected a name like train-images-idx3-ubyte.gz)")
    parts = {
        split: (found[split, "images"], found.get((split, "labels")))
        for split in ("train", "test")
        if (split, "images") in found
    }
    return _idx_parts(parts, "idx", path, scratch)
