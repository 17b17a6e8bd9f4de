"""Readers for every `data.source`: raw examples and labels, checked, nothing scaled yet.

Each reader returns a `Dataset` whose x keeps the source's own dtype (uint8 pixels, float
features). Problems with a file raise DataError naming the file and what was wrong. The
same readers serve prepare and `vae-pipeline encode` on new data.

Memory does not grow with the data: uncompressed sources (`.npz` written by `np.savez`,
plain IDX files) are memory-mapped where they lie, and sources that must be decoded
(gzip IDX, images, Parquet) are decoded chunk by chunk into a memory-mapped array in a
`scratch` directory. Without one (small data, tests) the arrays are in memory.
"""

import difflib
import functools
import gzip
import logging
import multiprocessing
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DEFAULT_DATA_PATH
from pipeline.errors import DataError
from pipeline.io import allocate

log = logging.getLogger(__name__)
NO_LABEL = -1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# Rows are read, decoded and copied in chunks of about this many bytes (of the source's
# dtype; a uint8 chunk becomes four times this as float32 inputs).
CHUNK_BYTES = 16 << 20
# Image folders with at least this many files are decoded by worker processes (one per core).
PARALLEL_DECODE_FILES = 4096
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The standard MNIST-style releases: file names and class names.
IDX_RELEASE_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                     "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_RELEASES = {
    "fashion_mnist": ("fashion-mnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
}


@dataclass(frozen=True)
class Dataset:
    """Examples of one source, rows aligned.

    x: (n, *example_shape) in the source's dtype; y: (n,) int32 class indices into
    label_names, NO_LABEL where there is none; is_test: (n,) bool where the source fixes
    its own test split, else None.
    """

    x: np.ndarray
    y: np.ndarray
    label_names: tuple[str, ...]
    source: str
    path: str | None = None
    is_test: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None  # tables: the columns of x, in order
    # Images whose pixel scale the reader knows tops out below 255 (digits: 0..16).
    # uint8 arrays are pixels on 0..255 without saying so (pipeline.auto.pixel_levels).
    declared_levels: float | None = None

    @property
    def labelled(self) -> bool:
        return bool(len(self.y)) and bool((self.y != NO_LABEL).all())


def load_source(config, scratch: Path | None = None) -> Dataset:
    """Read the dataset that `config` (a DataConfig) names.

    scratch: a directory for decoded arrays (memory-mapped); None keeps them in memory.
    """
    readers = {"digits": lambda: read_digits(),
               "fashion_mnist": lambda: read_idx_release(config.source, config.path, scratch),
               "mnist": lambda: read_idx_release(config.source, config.path, scratch),
               "idx": lambda: read_idx_dir(_existing(config.path, "data.path"), scratch),
               "npz": lambda: read_npz(_existing(config.path, "data.path"), config.npz.x_key, config.npz.y_key,
                                       scratch),
               "table": lambda: read_table(_existing(config.path, "data.path"), config.table.label_column,
                                           config.table.feature_columns, scratch),
               "image_folder": lambda: read_image_folder(_existing(config.path, "data.path"),
                                                         config.images.size, config.images.color, scratch)}
    return readers[config.source]()


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk of about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def encode_labels(raw: np.ndarray | None, n: int, scratch: Path | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..k-1 (sorted by value) and their names; NO_LABEL for all when raw is None.

    Works through `raw` a chunk at a time (it may be a memory map); the indices go to a
    scratch memory map when given.
    """
    y = allocate(scratch, "labels", (n,), np.int32)
    if raw is None:
        y[:] = NO_LABEL
        return y, ()
    step = 1 << 20
    names = np.unique(np.concatenate([np.unique(np.asarray(raw[i:i + step]).reshape(-1)) for i in range(0, n, step)]
                                     or [np.zeros(0)]))
    for i in range(0, n, step):
        y[i:i + step] = np.searchsorted(names, np.asarray(raw[i:i + step]).reshape(-1))
    return y, tuple(str(v) for v in names)


def read_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: no download
    x = digits.images.astype(np.uint8)[..., None]  # (1797, 8, 8, 1), values 0..16
    return Dataset(x=x, y=digits.target.astype(np.int32), source="digits",
                   label_names=tuple(str(n) for n in digits.target_names), declared_levels=16.0)


# --- IDX -------------------------------------------------------------------------------

def _idx_header(path: Path, f) -> tuple[tuple[int, ...], np.dtype]:
    head = f.read(4)
    if len(head) < 4 or head[0:2] != b"\0\0" or head[2] not in IDX_DTYPES or head[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {head.hex()})")
    dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(head[3]))
    return shape, np.dtype(IDX_DTYPES[head[2]])


def idx_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The array shape and dtype an IDX file's header declares (reads the header only)."""
    with _open_idx(path) as f:
        return _idx_header(path, f)


def _open_idx(path: Path):
    try:
        return (gzip.open if Path(path).suffix == ".gz" else open)(path, "rb")
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
                out[start:start + step] = np.frombuffer(raw, dtype).reshape(-1, *shape[1:])
            while block := f.read(1 << 20):  # padding: count it for the message
                held += len(block)
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if held != expected:
        raise DataError(f"{path}: truncated or padded IDX file: header says {shape} "
                        f"({expected} bytes of data), file holds {held}")
    return out


def _idx_parts(files: dict, source: str, path, scratch: Path | None,
               names: tuple[str, ...] | None = None) -> Dataset:
    """{split: (images, labels or None)} IDX files as one Dataset; is_test marks the 'test' part.

    The images of every part are decoded into one array (a scratch memory map when given).
    """
    headers = {split: idx_header(images) for split, (images, _) in files.items()}
    rows = {split: shape[0] for split, (shape, _) in headers.items()}
    first_file, (first, dtype) = next(iter(files.values()))[0], next(iter(headers.values()))
    for split, (shape, _) in headers.items():
        if shape[1:] != first[1:]:
            raise DataError(f"{files[split][0]}: images of shape {list(shape[1:])}, but "
                            f"{first_file} holds {list(first[1:])}")
    x = allocate(scratch, "idx_x", (sum(rows.values()), *first[1:]), dtype.newbyteorder("="))
    raw_y, start = [], 0
    for split, (images, labels) in files.items():
        read_idx(images, out=x[start:start + rows[split]])
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
    return [*([Path(path)] if path else []), keras_home / "datasets" / folder, Path("/usr/share/datasets") / folder]


def read_idx_release(name: str, path: str | None, scratch: Path | None = None) -> Dataset:
    """fashion_mnist / mnist from local IDX files, else Keras' download, else a clear error."""
    candidates = idx_release_candidates(name, path)
    files = [f for pair in IDX_RELEASE_FILES.values() for f in pair]
    found = next((c for c in candidates if all((c / f).is_file() for f in files)), None)
    if found is None and path and path != DEFAULT_DATA_PATH:  # an explicit data.path: looked there only
        missing = [f for f in files if not (candidates[0] / f).is_file()]
        raise DataError(f"{candidates[0]}: data.source {name!r} needs {', '.join(files)} here (from data.path); "
                        f"missing: {', '.join(missing)}. Leave data.path at {DEFAULT_DATA_PATH!r} to use a "
                        "system copy instead")
    if found is not None:
        parts = {split: (found / images, found / labels) for split, (images, labels) in IDX_RELEASE_FILES.items()}
        return _idx_parts(parts, name, found, scratch, names=IDX_RELEASES[name][1])
    loaded = _keras_load(name)
    if loaded is None:
        raise DataError(f"data.source {name!r}: IDX files ({', '.join(files)}) not found; looked in "
                        f"{', '.join(map(str, candidates))}, and Keras could not download them "
                        f"(set data.path, or on Debian: apt-get install dataset-{IDX_RELEASES[name][0]})")
    return loaded


def _keras_load(name: str) -> Dataset | None:
    """The release through Keras' loader (downloads when a network is there); None offline."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception:  # noqa: BLE001 - any download failure means "not available here"
        return None
    return Dataset(x=np.concatenate([x_train, x_test])[..., None],
                   y=np.concatenate([y_train, y_test]).astype(np.int32), label_names=IDX_RELEASES[name][1],
                   source=name, path=f"keras.datasets.{name}",
                   is_test=np.repeat([False, True], [len(x_train), len(x_test)]))


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
    parts = {split: (found[split, "images"], found.get((split, "labels")))
             for split in ("train", "test") if (split, "images") in found}
    return _idx_parts(parts, "idx", path, scratch)


# --- npz, table, image folder ----------------------------------------------------------

def read_npz(path: Path, x_key: str, y_key: str | None, scratch: Path | None = None) -> Dataset:
    """Arrays of an .npz; members stored uncompressed (np.savez) are memory-mapped, not loaded."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
        if x_key not in keys or (y_key is not None and y_key not in keys):
            missing = x_key if x_key not in keys else y_key
            close = difflib.get_close_matches(missing, keys, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DataError(f"{path}: no array named {missing!r}; it holds {keys}{hint}")
        x = npz_member(path, x_key)
        raw_y = npz_member(path, y_key) if y_key else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read npz file ({error})") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: array {x_key!r} must be real numbers. Got dtype {x.dtype} instead.")
    if raw_y is not None and len(raw_y) != len(x):
        raise DataError(f"{path}: {len(x)} inputs in {x_key!r} but {len(raw_y)} labels in {y_key!r}")
    y, names = encode_labels(raw_y, len(x), scratch)
    return Dataset(x=x, y=y, label_names=names, source="npz", path=str(path))


def npz_member(path: Path, key: str) -> np.ndarray:
    """One array of an .npz: a read-only memory map when stored uncompressed, else loaded."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(member)
                header = member.tell()
            if not dtype.hasobject:
                with open(path, "rb") as f:  # the member's data starts after its local file header
                    f.seek(info.header_offset + 26)
                    name_length, extra_length = np.frombuffer(f.read(4), "<u2")
                start = info.header_offset + 30 + int(name_length) + int(extra_length) + header
                return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape,
                                 order="F" if fortran else "C")
    log.info("%s: array %r is compressed; it is loaded into memory (np.savez, not savez_compressed, "
             "lets it be memory-mapped)", path, key)
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def read_table(path: Path, label_column: str | None, feature_columns: tuple[str, ...] | None,
               scratch: Path | None = None) -> Dataset:
    """A CSV or Parquet file: numeric feature columns plus an optional label column.

    Parquet is read in record batches into x (a scratch memory map when given); a CSV is
    parsed whole by pyarrow (its row count is unknown until then) and copied the same way.
    """
    import pyarrow as pa

    schema, num_rows, batches = _arrow_batches(path)
    names = schema.names
    wanted = [c for c in ([label_column] if label_column else []) + list(feature_columns or []) if c not in names]
    if wanted:
        close = difflib.get_close_matches(wanted[0], names, n=1)
        raise DataError(f"{path}: no column {wanted[0]!r}; columns are {names}"
                        + (f" (did you mean '{close[0]}'?)" if close else ""))
    features = list(feature_columns) if feature_columns else [c for c in names if c != label_column]
    ignored = [c for c in names if c not in features and c != label_column]
    if ignored:
        log.warning("%s: ignoring columns %s: neither feature columns nor the label column "
                    "(data.table.label_column, or --label-column for the encode command)", path, ignored)
    bad = [c for c in features if not (pa.types.is_integer(schema.field(c).type)
                                       or pa.types.is_floating(schema.field(c).type))]
    if bad:
        raise DataError(f"{path}: feature columns must be numeric; not numeric: {bad} "
                        "(set data.table.feature_columns or data.table.label_column)")
    if not features:
        raise DataError(f"{path}: no feature columns")
    x = allocate(scratch, "table_x", (num_rows, len(features)), np.float64)
    labels, nulls, start = [], {}, 0
    for batch in batches([*features, *([label_column] if label_column else [])]):
        for c in features:
            nulls[c] = nulls.get(c, 0) + batch.column(c).null_count
        x[start:start + batch.num_rows] = np.column_stack(
            [batch.column(c).to_numpy(zero_copy_only=False) for c in features])
        if label_column:
            labels.append(batch.column(label_column))
        start += batch.num_rows
    if missing := [c for c, n in nulls.items() if n]:
        raise DataError(f"{path}: feature columns have missing values: {missing}")
    raw_y = None
    if label_column:
        column = pa.chunked_array(labels, schema.field(label_column).type)
        if column.null_count:
            raise DataError(f"{path}: label column {label_column!r} has {column.null_count} missing values")
        raw_y = np.asarray(column.to_pylist())
    y, label_names = encode_labels(raw_y, len(x))
    return Dataset(x=x, y=y, label_names=label_names, source="table", path=str(path), feature_names=tuple(features))


def _arrow_batches(path: Path):
    """(schema, rows, batches(columns)) of a Parquet or CSV file; batches yields record batches."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            file = pq.ParquetFile(path)
            return (file.schema_arrow, file.metadata.num_rows,
                    lambda columns: file.iter_batches(batch_size=65_536, columns=columns))
        if suffix in {".csv", ".tsv", ".txt"}:
            options = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            table = pacsv.read_csv(path, parse_options=options)
            return table.schema, table.num_rows, lambda columns: table.select(columns).to_batches()
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read table ({' '.join(str(error).split())})") from None
    raise DataError(f"{path}: a table must be .csv, .tsv or .parquet. Got {path.suffix or 'no suffix'!r} instead.")


def read_image_folder(path: Path, size: tuple[int, int] | None, color: str, scratch: Path | None = None) -> Dataset:
    """One subfolder per class of PNG/JPEG files -> uint8 (n, H, W, 1 or 3).

    Decoded into a preallocated array (a scratch memory map when given), in chunks; large
    folders by worker processes, one per core.
    """
    if not path.is_dir():
        raise DataError(f"{path}: data.source 'image_folder' needs a directory with one subfolder per class")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no PNG or JPEG files in class subfolders")
    paths = [f for f, _ in files]
    reference = (paths[0], decode_images(paths[:1], size, color)[0].shape)
    x = allocate(scratch, "images_x", (len(paths), *reference[1]), np.uint8)
    # Chunks of at most 1,024 images: small enough to keep every worker busy to the end.
    step = min(chunk_rows(x[0].nbytes), 1024)
    chunks = [paths[start:start + step] for start in range(0, len(paths), step)]
    decode = functools.partial(decode_images, size=size, color=color, reference=reference)
    workers = os.cpu_count() or 1
    if len(paths) >= PARALLEL_DECODE_FILES and workers > 1:
        # spawn, not fork: the calling process may hold TensorFlow's threads (the encode command).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            _fill(x, pool.map(decode, chunks), step)
    else:
        _fill(x, map(decode, chunks), step)
    x = x[..., None] if x.ndim == 3 else x
    y = np.array([label for _, label in files], np.int32)
    return Dataset(x=x, y=y, label_names=tuple(classes), source="image_folder", path=str(path))


def _fill(x: np.ndarray, chunks, step: int) -> None:
    for i, chunk in enumerate(chunks):
        x[i * step:i * step + len(chunk)] = chunk


def decode_images(paths: list[Path], size: tuple[int, int] | None, color: str,
                  reference: tuple[Path, tuple] | None = None) -> np.ndarray:
    """uint8 (n, H, W) or (n, H, W, 3) of image files, each of the shape of `reference`
    ((file, shape); the first of `paths` when None)."""
    from PIL import Image, UnidentifiedImageError

    out = None
    for i, file in enumerate(paths):
        try:
            with Image.open(file) as image:
                image = image.convert("L" if color == "grey" else "RGB")
                if size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL: (W, H)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{file}: cannot read image ({error})") from None
        reference = reference or (file, pixels.shape)
        if pixels.shape != reference[1]:
            raise DataError(f"{file}: image of size {pixels.shape[:2]} but {reference[0]} is {reference[1][:2]}; "
                            "set data.images.size to resize them all")
        if out is None:
            out = np.empty((len(paths), *pixels.shape), np.uint8)
        out[i] = pixels
    return out


def _existing(path: str | None, key: str) -> Path:
    if not path:
        raise DataError(f"{key}: this data.source reads local files; set {key}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (from {key})")
    return path
