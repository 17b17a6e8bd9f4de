"""Data sources, validation, the seeded splits, and the prepared-array format.

Prepared layout (written atomically as one directory):

    data/prepared/manifest.json
    data/prepared/{train,test}/x.npy    float32, (n, *example_shape), values in [0, 1]
    data/prepared/{train,test}/y.npy    int32 (n,), -1 where a source has no label
    data/prepared/{train,test}/id.npy   int64 (n,), index of the example in the source

`.npy` files are memory-mapped on read, so later stages stream them in batches.
"""

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.io import atomic_dir, sha256_file, write_json

SPLITS = ("train", "test")
ARRAYS = ("x", "y", "id")
NO_LABEL = -1

# IDX sources: the file names of the standard releases and their class names.
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_SOURCES = {
    "fashion_mnist": ("fashion-mnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    """Examples of one source: x is (n, *example_shape) float32, y is (n,) int32."""

    x: np.ndarray
    y: np.ndarray
    label_names: tuple[str, ...]
    source: str
    path: str | None = None
    is_test: np.ndarray | None = None  # (n,) bool where the source fixes its own test split


@dataclass(frozen=True)
class Split:
    """One prepared split: arrays are memory-mapped, rows aligned."""

    x: np.ndarray
    y: np.ndarray
    id: np.ndarray

    def __len__(self) -> int:
        return len(self.id)


def load_source(config: DataConfig) -> Dataset:
    """Load the dataset named by `data.source`."""
    if config.source == "digits":
        return _load_digits()
    if config.source in IDX_SOURCES:
        return _load_idx_source(config.source, config.path)
    raise DataError(f"data.source: unsupported source {config.source!r}")  # config validates first


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as an array, checking magic and length."""
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
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def idx_candidates(name: str, path: str | None) -> list[Path]:
    """Where an IDX source may live: data.path, else the Keras cache, else Debian's datasets."""
    if path:
        return [Path(path)]
    folder = IDX_SOURCES[name][0]
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return [keras_home / "datasets" / folder, Path("/usr/share/datasets") / folder]


def _load_idx_source(name: str, path: str | None) -> Dataset:
    candidates = idx_candidates(name, path)
    found = next((c for c in candidates if all((c / f).is_file() for pair in IDX_FILES.values() for f in pair)), None)
    if found is None:
        looked = ", ".join(str(c) for c in candidates)
        raise DataError(f"data.source {name!r}: IDX files {', '.join(IDX_FILES['train'] + IDX_FILES['test'])} "
                        f"not found; looked in {looked} (set data.path, or on Debian: "
                        f"apt-get install dataset-{IDX_SOURCES[name][0]})")
    parts = {}
    for split, (images, labels) in IDX_FILES.items():
        x, y = read_idx(found / images), read_idx(found / labels)
        if len(x) != len(y):
            raise DataError(f"{found / images}: {len(x)} images but {found / labels} has {len(y)} labels")
        parts[split] = (x, y)
    x = np.concatenate([parts["train"][0], parts["test"][0]])
    y = np.concatenate([parts["train"][1], parts["test"][1]]).astype(np.int32)
    is_test = np.arange(len(x)) >= len(parts["train"][0])
    return Dataset(x=(x / 255.0).astype(np.float32)[..., None], y=y, label_names=IDX_SOURCES[name][1],
                   source=name, path=str(found), is_test=is_test)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: no download
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), [0, 1]
    names = tuple(str(n) for n in digits.target_names)
    return Dataset(x=x, y=digits.target.astype(np.int32), label_names=names, source="digits")


def validate(dataset: Dataset) -> None:
    """Raise DataError if the examples cannot be modelled as they are."""
    where = dataset.path or dataset.source
    if len(dataset.x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(dataset.x) != len(dataset.y):
        raise DataError(f"{where}: {len(dataset.x)} inputs but {len(dataset.y)} labels")
    if not np.isfinite(dataset.x).all():
        raise DataError(f"{where}: inputs contain NaN or infinite values")
    lo, hi = float(dataset.x.min()), float(dataset.x.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{where}: inputs must be scaled to [0, 1]; got values in [{lo}, {hi}]")


def split_indices(y: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of row indices, stratified by label, into (kept, held_out)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    stratify = y if (y != NO_LABEL).all() and np.unique(y).size > 1 else None
    try:
        kept, held = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as error:  # too few rows of a class, or of the whole set, to split
        raise DataError(f"cannot make the {what} split with fraction {fraction}: {error}") from None
    return np.sort(kept), np.sort(held)


def validation_rows(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) row indices of the prepared train split, the same in every stage."""
    if fraction == 0:
        return np.arange(len(y)), np.arange(0)
    return split_indices(y, fraction, seed, "validation")


def prepare(config: DataConfig, seed: int, out_dir: str | Path) -> dict:
    """Load, validate and split the source; write arrays and manifest.json atomically."""
    dataset = load_source(config)
    validate(dataset)
    if dataset.is_test is not None:  # the source's own split
        train_rows, test_rows = np.flatnonzero(~dataset.is_test), np.flatnonzero(dataset.is_test)
    else:
        train_rows, test_rows = split_indices(dataset.y, config.test_fraction, seed, "test")
    with atomic_dir(out_dir) as tmp:
        files = {}
        for split, rows in zip(SPLITS, (train_rows, test_rows)):
            (tmp / split).mkdir()
            arrays = {"x": dataset.x[rows], "y": dataset.y[rows], "id": rows.astype(np.int64)}
            for name, array in arrays.items():
                np.save(tmp / split / f"{name}.npy", np.ascontiguousarray(array))
                files[f"{split}/{name}.npy"] = sha256_file(tmp / split / f"{name}.npy")
        manifest = _manifest(dataset, config, seed, {"train": train_rows, "test": test_rows}, files)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _manifest(dataset: Dataset, config: DataConfig, seed: int, rows: dict, files: dict) -> dict:
    counts = {split: int(len(r)) for split, r in rows.items()}
    per_class = {split: np.bincount(dataset.y[r], minlength=len(dataset.label_names)).tolist()
                 for split, r in rows.items()}
    fingerprint = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    return {
        "source": dataset.source,
        "path": dataset.path,
        "example_shape": list(dataset.x.shape[1:]),
        "dtypes": {"x": "float32", "y": "int32", "id": "int64"},
        "counts": counts,
        "counts_per_class": per_class,
        "label_names": list(dataset.label_names),
        "preprocessing": {"scaling": "[0, 1]", "seed": seed,
                          "test_split": "the source's own" if dataset.is_test is not None
                          else f"seeded stratified, fraction {config.test_fraction}"},
        "sha256": files,
        "fingerprint": fingerprint,
    }


def read_manifest(prepared_dir: str | Path) -> dict:
    import json

    path = Path(prepared_dir) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run the prepare stage first (dvc repro prepare)") from None
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def load_split(prepared_dir: str | Path, split: str) -> Split:
    """Memory-map one prepared split, checking it against the manifest."""
    manifest = read_manifest(prepared_dir)
    arrays = {}
    for name in ARRAYS:
        path = Path(prepared_dir) / split / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read prepared array ({error})") from None
    expected = (manifest["counts"][split], *manifest["example_shape"])
    if arrays["x"].shape != expected or not len(arrays["y"]) == len(arrays["id"]) == expected[0]:
        raise DataError(f"{Path(prepared_dir) / split}: arrays do not match manifest.json "
                        f"(expected x of shape {expected}, got {arrays['x'].shape})")
    return Split(**arrays)
