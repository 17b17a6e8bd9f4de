"""prepare: validate a source, subsample, split, scale, and write the prepared arrays.

Prepared layout (written atomically as one directory):

    data/prepared/manifest.json
    data/prepared/preprocessing.npz      offset and scale: x' = (x - offset) / scale
    data/prepared/{train,test}/x.npy     float32, (n, *example_shape)
    data/prepared/{train,test}/y.npy     int32 (n,), -1 where a source has no label
    data/prepared/{train,test}/id.npy    int64 (n,), index of the example in the source

`.npy` files are memory-mapped on read, so later stages stream them in batches. The
preprocessing is stored so that new data can be encoded exactly as the training data was.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.auto import pixel_levels, resolve_scaling
from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.io import atomic_dir, sha256_file, write_json
from pipeline.sources import NO_LABEL, Dataset, load_source

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
ARRAYS = ("x", "y", "id")


@dataclass(frozen=True)
class Split:
    """One prepared split: arrays are memory-mapped, rows aligned."""

    x: np.ndarray
    y: np.ndarray
    id: np.ndarray

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True)
class Preprocessor:
    """x' = (x - offset) / scale, then clipping to [0, 1] (unit) and thresholding (static).

    offset and scale broadcast against one example; they are fitted on the train split only.
    """

    scaling: str
    offset: np.ndarray
    scale: np.ndarray
    threshold: float | None = None  # set for static binarization

    @classmethod
    def fit(cls, x: np.ndarray, levels: float | None, scaling: str, threshold: float | None) -> "Preprocessor":
        """levels: the top of the pixel scale (pixels are divided by it), None for other data."""
        features = x.reshape(len(x), -1).astype(np.float64)
        if scaling == "none":
            offset, scale = np.zeros(1), np.ones(1)
        elif scaling == "unit" and levels is not None:
            offset, scale = np.zeros(1), np.array([levels])
        elif scaling == "unit":
            offset, scale = features.min(axis=0), np.ptp(features, axis=0)
        else:  # standardize
            offset, scale = features.mean(axis=0), features.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # constant features map to 0
        shape = (1,) if offset.size == 1 else x.shape[1:]
        return cls(scaling, offset.reshape(shape).astype(np.float32), scale.reshape(shape).astype(np.float32),
                   threshold)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = (np.asarray(x, np.float32) - self.offset) / self.scale
        if self.scaling == "unit":
            out = np.clip(out, 0.0, 1.0)  # test values outside the train range
        if self.threshold is not None:
            out = (out > self.threshold).astype(np.float32)
        return out

    def save(self, path: Path) -> None:
        np.savez(path, offset=self.offset, scale=self.scale, scaling=self.scaling,
                 threshold=np.nan if self.threshold is None else self.threshold)

    @classmethod
    def load(cls, path: Path) -> "Preprocessor":
        with np.load(path) as f:
            threshold = float(f["threshold"])
            return cls(str(f["scaling"]), f["offset"], f["scale"], None if np.isnan(threshold) else threshold)


def validate(dataset: Dataset) -> None:
    """Raise DataError if the examples cannot be modelled as they are."""
    where = dataset.path or dataset.source
    if len(dataset.x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(dataset.x) != len(dataset.y):
        raise DataError(f"{where}: {len(dataset.x)} inputs but {len(dataset.y)} labels")
    if np.issubdtype(dataset.x.dtype, np.floating) and not np.isfinite(dataset.x).all():
        bad = int((~np.isfinite(dataset.x)).reshape(len(dataset.x), -1).any(axis=1).sum())
        raise DataError(f"{where}: inputs contain NaN or infinite values ({bad} examples)")


def split_indices(y: np.ndarray, fraction: float | int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of row indices, stratified by label when there are labels, into (kept, held_out).

    fraction: the share held out, or (an int) the number of rows held out.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    stratify = y if (y != NO_LABEL).all() and np.unique(y).size > 1 else None
    try:
        kept, held = train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as error:  # too few rows of a class, or of the whole set, to split
        raise DataError(f"cannot make the {what} split ({fraction} of {len(y)} examples held out): "
                        f"{error}") from None
    return np.sort(kept), np.sort(held)


def validation_rows(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) row indices of the prepared train split, the same in every stage."""
    if fraction == 0:
        return np.arange(len(y)), np.arange(0)
    return split_indices(y, fraction, seed, "validation")


def binarize_sample(x: np.ndarray, seed: int) -> np.ndarray:
    """One seeded draw x_b ~ Bernoulli(x): the fixed evaluation copy under dynamic binarization."""
    return (np.random.default_rng(seed).uniform(size=x.shape) < x).astype(np.float32)


def fixed_inputs(x: np.ndarray, rows: np.ndarray, binarize: str, seed: int) -> np.ndarray:
    """x[rows] as every score sees it (validation while training, U and S_K in evaluate).

    Under dynamic binarization training resamples x_b ~ Bernoulli(x) every epoch; scores
    use one seeded draw instead, so every epoch and every stage scores the same data.
    """
    subset = np.asarray(x[rows])
    return binarize_sample(subset, seed) if binarize == "dynamic" else subset


def prepare(config: DataConfig, seed: int, out_dir: str | Path, likelihood: str = "auto") -> dict:
    """Load, validate, subsample, split and scale the source; write everything atomically.

    likelihood: model.likelihood, which an `auto` data.scaling follows when it is explicit.
    """
    dataset = load_source(config)
    validate(dataset)
    levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
    scaling, why = resolve_scaling(config.scaling, likelihood, levels)
    log.info("data.scaling=%s (%s)", scaling, why)
    rows = np.arange(len(dataset.x))
    if config.max_examples and config.max_examples < len(rows):
        rows, _ = split_indices(dataset.y, len(rows) - config.max_examples, seed, "max_examples")
    train_rows, test_rows = _train_test_rows(dataset, rows, config.test_fraction, seed)
    _check_classes(dataset, {"train": train_rows, "test": test_rows})
    threshold = config.binarize_threshold if config.binarize == "static" else None
    preprocess = Preprocessor.fit(dataset.x[train_rows], levels, scaling, threshold)
    with atomic_dir(out_dir) as tmp:
        files, value_range = {}, [np.inf, -np.inf]
        for split, split_rows in (("train", train_rows), ("test", test_rows)):
            (tmp / split).mkdir()
            x = preprocess(dataset.x[split_rows])
            value_range = [min(value_range[0], float(x.min())), max(value_range[1], float(x.max()))]
            arrays = {"x": x, "y": dataset.y[split_rows], "id": split_rows.astype(np.int64)}
            for name, array in arrays.items():
                np.save(tmp / split / f"{name}.npy", np.ascontiguousarray(array))
                files[f"{split}/{name}.npy"] = sha256_file(tmp / split / f"{name}.npy")
        preprocess.save(tmp / "preprocessing.npz")
        manifest = _manifest(dataset, config, seed, {"train": train_rows, "test": test_rows}, files, value_range,
                             levels, {"data.scaling": {"value": scaling, "why": why}})
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _train_test_rows(dataset: Dataset, rows: np.ndarray, fraction: float, seed: int):
    if dataset.is_test is not None:  # the source's own split
        return rows[~dataset.is_test[rows]], rows[dataset.is_test[rows]]
    kept, held = split_indices(dataset.y[rows], fraction, seed, "test")
    return rows[kept], rows[held]


def _check_classes(dataset: Dataset, splits: dict) -> None:
    if not dataset.labelled:
        return
    for split, rows in splits.items():
        classes = np.unique(dataset.y[rows])
        if len(rows) and classes.size < 2:
            raise DataError(f"{dataset.path or dataset.source}: the {split} split holds only class "
                            f"{dataset.label_names[classes[0]]!r}; probes need at least two "
                            "(use more examples or another data.test_fraction)")


def _manifest(dataset: Dataset, config: DataConfig, seed: int, rows: dict, files: dict, value_range,
              levels: float | None, choices: dict) -> dict:
    counts = {split: int(len(r)) for split, r in rows.items()}
    per_class = {split: np.bincount(dataset.y[r], minlength=len(dataset.label_names)).tolist()
                 for split, r in rows.items()} if dataset.labelled else None
    fingerprint = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    return {
        "source": dataset.source,
        "path": str(Path(dataset.path).resolve()) if dataset.path and Path(dataset.path).exists() else dataset.path,
        "example_shape": list(dataset.x.shape[1:]),
        # Tables: the feature columns by name, so new data is matched by name, not position.
        "feature_names": list(dataset.feature_names) if dataset.feature_names else None,
        "dtypes": {"x": "float32", "y": "int32", "id": "int64", "source_x": str(dataset.x.dtype)},
        "counts": counts,
        "counts_per_class": per_class,
        "label_names": list(dataset.label_names),
        "value_range": value_range,  # of the prepared (scaled) values
        "pixel_levels": levels,  # the top of the pixel scale; null for real-valued data
        "choices": choices,  # auto choices made here, with the rule (pipeline.auto)
        "preprocessing": {
            "scaling": choices["data.scaling"]["value"],
            "binarize": config.binarize,
            "binarize_threshold": config.binarize_threshold if config.binarize == "static" else None,
            "max_examples": config.max_examples,
            "test_split": ("the source's own" if dataset.is_test is not None
                           else f"seeded stratified, fraction {config.test_fraction}"),
            "seed": seed,
        },
        "sha256": files,
        "fingerprint": fingerprint,
    }


def read_manifest(prepared_dir: str | Path) -> dict:
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


def load_splits(prepared_dir: str | Path) -> dict[str, Split]:
    return {split: load_split(prepared_dir, split) for split in SPLITS}


def is_labelled(manifest: dict, splits: dict[str, Split]) -> bool:
    """Two classes or more and a label on every example: what the probes need."""
    return len(manifest["label_names"]) > 1 and all(int(np.min(s.y)) >= 0 for s in splits.values() if len(s))


def seeded_rows(length: int, n: int, seed: int) -> np.ndarray:
    """At most n distinct row indices out of `length`, chosen with a seed, sorted."""
    return np.sort(np.random.default_rng(seed).choice(length, size=min(n, length), replace=False))
