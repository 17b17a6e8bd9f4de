"""Readers for every `data.source`: raw examples and labels, checked, nothing scaled yet.

Each reader returns a `Dataset` whose x keeps the source's own dtype (uint8 pixels, float
features). Problems with a file raise DataError naming the file and what was wrong. The
same readers serve prepare and `vae-pipeline encode` on new data.
"""

import difflib
import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DEFAULT_DATA_PATH
from pipeline.errors import DataError

log = logging.getLogger(__name__)
NO_LABEL = -1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
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


def load_source(config) -> Dataset:
    """Read the dataset that `config` (a DataConfig) names."""
    readers = {"digits": lambda: read_digits(),
               "fashion_mnist": lambda: read_idx_release(config.source, config.path),
               "mnist": lambda: read_idx_release(config.source, config.path),
               "idx": lambda: read_idx_dir(_existing(config.path, "data.path")),
               "npz": lambda: read_npz(_existing(config.path, "data.path"), config.npz.x_key, config.npz.y_key),
               "table": lambda: read_table(_existing(config.path, "data.path"), config.table.label_column,
                                           config.table.feature_columns),
               "image_folder": lambda: read_image_folder(_existing(config.path, "data.path"),
                                                         config.images.size, config.images.color)}
    return readers[config.source]()


def encode_labels(raw: np.ndarray | None, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..k-1 (sorted by value) and their names; NO_LABEL for all when raw is None."""
    if raw is None:
        return np.full(n, NO_LABEL, np.int32), ()
    names, y = np.unique(np.asarray(raw), return_inverse=True)
    return y.astype(np.int32).reshape(-1), tuple(str(v) for v in names)


def read_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: no download
    x = digits.images.astype(np.uint8)[..., None]  # (1797, 8, 8, 1), values 0..16
    return Dataset(x=x, y=digits.target.astype(np.int32), source="digits",
                   label_names=tuple(str(n) for n in digits.target_names), declared_levels=16.0)


# --- IDX -------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed when named *.gz) as an array, checking magic and length."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim, dtype = raw[3], np.dtype(IDX_DTYPES[raw[2]])
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset, expected = 4 + 4 * ndim, int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(f"{path}: truncated or padded IDX file: header says {shape} "
                        f"({expected} bytes of data), file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_pair(images: Path, labels: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    x = read_idx(images)
    y = read_idx(labels) if labels else None
    if y is not None and len(x) != len(y):
        raise DataError(f"{images}: {len(x)} images but {labels} has {len(y)} labels")
    return (x[..., None] if x.ndim == 3 else x), y


def _from_parts(parts: dict, source: str, path, names: tuple[str, ...] | None = None) -> Dataset:
    """Concatenate {split: (x, y)} into one Dataset; is_test marks the 'test' part."""
    x = np.concatenate([parts[s][0] for s in parts])
    has_labels = all(parts[s][1] is not None for s in parts)
    raw_y = np.concatenate([parts[s][1] for s in parts]) if has_labels else None
    y, found_names = encode_labels(raw_y, len(x))
    if names is not None and has_labels:  # a known release: keep its class names and indices
        y, found_names = raw_y.astype(np.int32), names
    is_test = np.concatenate([np.full(len(parts[s][0]), s == "test") for s in parts]) if "test" in parts else None
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


def read_idx_release(name: str, path: str | None) -> Dataset:
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
        parts = {split: _idx_pair(found / images, found / labels)
                 for split, (images, labels) in IDX_RELEASE_FILES.items()}
    else:
        found, parts = f"keras.datasets.{name}", _keras_load(name)
    if parts is None:
        raise DataError(f"data.source {name!r}: IDX files ({', '.join(files)}) not found; looked in "
                        f"{', '.join(map(str, candidates))}, and Keras could not download them "
                        f"(set data.path, or on Debian: apt-get install dataset-{IDX_RELEASES[name][0]})")
    return _from_parts(parts, name, found, names=IDX_RELEASES[name][1])


def _keras_load(name: str) -> dict | None:
    """The release through Keras' loader (downloads when a network is there); None offline."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception:  # noqa: BLE001 - any download failure means "not available here"
        return None
    return {"train": (x_train[..., None], y_train), "test": (x_test[..., None], y_test)}


def read_idx_dir(path: Path) -> Dataset:
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
    parts = {split: _idx_pair(found[split, "images"], found.get((split, "labels")))
             for split in ("train", "test") if (split, "images") in found}
    return _from_parts(parts, "idx", path)


# --- npz, table, image folder ----------------------------------------------------------

def read_npz(path: Path, x_key: str, y_key: str | None) -> Dataset:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if x_key not in keys or (y_key is not None and y_key not in keys):
                missing = x_key if x_key not in keys else y_key
                close = difflib.get_close_matches(missing, keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise DataError(f"{path}: no array named {missing!r}; it holds {keys}{hint}")
            x, raw_y = archive[x_key], (archive[y_key] if y_key else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read npz file ({error})") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: array {x_key!r} must be real numbers. Got dtype {x.dtype} instead.")
    if raw_y is not None and len(raw_y) != len(x):
        raise DataError(f"{path}: {len(x)} inputs in {x_key!r} but {len(raw_y)} labels in {y_key!r}")
    y, names = encode_labels(raw_y, len(x))
    return Dataset(x=x, y=y, label_names=names, source="npz", path=str(path))


def read_table(path: Path, label_column: str | None, feature_columns: tuple[str, ...] | None) -> Dataset:
    """A CSV or Parquet file: numeric feature columns plus an optional label column."""
    import pyarrow as pa

    table = _read_arrow_table(path)
    names = table.column_names
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
    bad = [c for c in features if not (pa.types.is_integer(table.schema.field(c).type)
                                       or pa.types.is_floating(table.schema.field(c).type))]
    if bad:
        raise DataError(f"{path}: feature columns must be numeric; not numeric: {bad} "
                        "(set data.table.feature_columns or data.table.label_column)")
    if not features:
        raise DataError(f"{path}: no feature columns")
    nulls = [c for c in features if table.column(c).null_count]
    if nulls:
        raise DataError(f"{path}: feature columns have missing values: {nulls}")
    x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in features]).astype(np.float64)
    raw_y = None
    if label_column:
        labels = table.column(label_column)
        if labels.null_count:
            raise DataError(f"{path}: label column {label_column!r} has {labels.null_count} missing values")
        raw_y = np.asarray(labels.to_pylist())
    y, label_names = encode_labels(raw_y, len(x))
    return Dataset(x=x, y=y, label_names=label_names, source="table", path=str(path), feature_names=tuple(features))


def _read_arrow_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pq.read_table(path)
        if path.suffix.lower() in {".csv", ".tsv", ".txt"}:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read table ({' '.join(str(error).split())})") from None
    raise DataError(f"{path}: a table must be .csv, .tsv or .parquet. Got {path.suffix or 'no suffix'!r} instead.")


def read_image_folder(path: Path, size: tuple[int, int] | None, color: str) -> Dataset:
    """One subfolder per class of PNG/JPEG files -> uint8 (n, H, W, 1 or 3)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise DataError(f"{path}: data.source 'image_folder' needs a directory with one subfolder per class")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no PNG or JPEG files in class subfolders")
    images, first = [], None
    for file, _ in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if color == "grey" else "RGB")
                if size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL: (W, H)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{file}: cannot read image ({error})") from None
        if first is None:
            first = (file, pixels.shape)
        elif pixels.shape != first[1]:
            raise DataError(f"{file}: image of size {pixels.shape[:2]} but {first[0]} is {first[1][:2]}; "
                            "set data.images.size to resize them all")
        images.append(pixels)
    x = np.stack(images)
    x = x[..., None] if x.ndim == 3 else x
    y = np.array([label for _, label in files], np.int32)
    return Dataset(x=x, y=y, label_names=tuple(classes), source="image_folder", path=str(path))


def _existing(path: str | None, key: str) -> Path:
    if not path:
        raise DataError(f"{key}: this data.source reads local files; set {key}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (from {key})")
    return path
