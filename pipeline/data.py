"""prepare: validate a source, subsample, split, scale, and write the prepared arrays.

Prepared layout (written atomically as one directory):

    data/prepared/manifest.json
    data/prepared/preprocessing.npz      offset and scale: x' = (x - offset) / scale
    data/prepared/{train,test}/x.npy     the stored values, (n, *example_shape): uint8 pixels
                                         stay uint8, everything else is float32
    data/prepared/{train,test}/y.npy     int32 (n,), -1 where a source has no label
    data/prepared/{train,test}/id.npy    int64 (n,), index of the example in the source

The preprocessing (scaling, static binarization) is applied per batch by the one
`Preprocessor` every reader of the data uses (`Split.inputs`), so pixels take a byte each
on disk and in the page cache, and new data is encoded exactly as the training data was.
`.npy` files are memory-mapped on read; prepare itself works chunk by chunk, so no stage
holds a whole split in memory.
"""

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.auto import pixel_levels, resolve_scaling
from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.io import atomic_dir, sha256_file, write_json
from pipeline.sources import NO_LABEL, Dataset, chunk_rows, load_source

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
ARRAYS = ("x", "y", "id")
PREPROCESSING_FILE = "preprocessing.npz"
# The prepared format's version: 2 stores raw values and applies the preprocessing per batch.
LAYOUT = 2
# Scaling statistics are summed over blocks of this many rows whatever the chunk size of
# prepare, so that chunking changes nothing in the prepared data, not even a rounding.
STATS_ROWS = 4096


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
    def fit(cls, x: np.ndarray, rows: np.ndarray, levels: float | None, scaling: str,
            threshold: float | None) -> "Preprocessor":
        """Statistics of x[rows] (the train split), read STATS_ROWS rows at a time.

        levels: the top of the pixel scale (pixels are divided by it), None for other data.
        """
        if scaling == "none":
            offset, scale = np.zeros(1), np.ones(1)
        elif scaling == "unit" and levels is not None:
            offset, scale = np.zeros(1), np.array([levels])
        else:
            stats = _FeatureStats()
            for start in range(0, len(rows), STATS_ROWS):
                stats.add(np.asarray(x[rows[start:start + STATS_ROWS]], np.float64).reshape(-1, stats.width(x)))
            offset, scale = (stats.low, stats.high - stats.low) if scaling == "unit" else (stats.mean, stats.std)
        scale = np.where(scale > 0, scale, 1.0)  # constant features map to 0
        shape = (1,) if offset.size == 1 else x.shape[1:]
        return cls(scaling, offset.reshape(shape).astype(np.float32), scale.reshape(shape).astype(np.float32),
                   threshold)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, np.float32)  # a copy; the rest works in place: one float32 array per call
        out -= self.offset
        out /= self.scale
        if self.scaling == "unit":
            np.clip(out, 0.0, 1.0, out=out)  # test values outside the train range
        if self.threshold is not None:
            np.greater(out, self.threshold, out=out)
        return out

    def save(self, path: Path) -> None:
        np.savez(path, offset=self.offset, scale=self.scale, scaling=self.scaling,
                 threshold=np.nan if self.threshold is None else self.threshold)

    @classmethod
    def load(cls, path: Path) -> "Preprocessor":
        try:
            f = np.load(path)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read the preprocessing ({error})") from None
        with f:
            threshold = float(f["threshold"])
            return cls(str(f["scaling"]), f["offset"], f["scale"], None if np.isnan(threshold) else threshold)


class _FeatureStats:
    """Per-feature min, max, mean and standard deviation, merged block by block (Chan et al.)."""

    def __init__(self):
        self.n, self.mean, self.m2, self.low, self.high = 0, 0.0, 0.0, np.inf, -np.inf

    @staticmethod
    def width(x: np.ndarray) -> int:
        return int(np.prod(x.shape[1:]))

    def add(self, block: np.ndarray) -> None:
        n, mean = len(block), block.mean(axis=0)
        m2, delta, total = ((block - mean) ** 2).sum(axis=0), mean - self.mean, self.n + len(block)
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.n * n / total
        self.n = total
        self.low, self.high = np.minimum(self.low, block.min(axis=0)), np.maximum(self.high, block.max(axis=0))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n)


@dataclass(frozen=True)
class Split:
    """One prepared split: arrays are memory-mapped, rows aligned; x holds the stored values."""

    x: np.ndarray
    y: np.ndarray
    id: np.ndarray
    preprocess: Preprocessor

    def __len__(self) -> int:
        return len(self.id)

    def inputs(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The model's inputs for those rows: the stored values, preprocessed (float32)."""
        return self.preprocess(self.x[rows])


def stored_dtype(source_dtype: np.dtype) -> np.dtype:
    """uint8 pixels are kept as they are; every other source is stored as float32."""
    return np.dtype(np.uint8) if source_dtype == np.uint8 else np.dtype(np.float32)


def validate(dataset: Dataset, step: int | None = None) -> None:
    """Raise DataError if the examples cannot be modelled as they are (read `step` rows at a time)."""
    where, x = dataset.path or dataset.source, dataset.x
    if len(x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(x) != len(dataset.y):
        raise DataError(f"{where}: {len(x)} inputs but {len(dataset.y)} labels")
    if np.issubdtype(x.dtype, np.floating):
        step = step or chunk_rows(x[0].nbytes)
        bad = sum(int((~np.isfinite(x[i:i + step])).reshape(-1, _FeatureStats.width(x)).any(axis=1).sum())
                  for i in range(0, len(x), step))
        if bad:
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


def fixed_inputs(split: Split, rows: np.ndarray, binarize: str, seed: int) -> np.ndarray:
    """The inputs of split rows `rows` as the scores of evaluate see them (a few thousand at most).

    Under dynamic binarization training resamples x_b ~ Bernoulli(x) every epoch; scores
    use one seeded draw instead, so that every model is scored on the same data.
    """
    subset = split.inputs(rows)
    return binarize_sample(subset, seed) if binarize == "dynamic" else subset


def prepare(config: DataConfig, seed: int, out_dir: str | Path, likelihood: str = "auto",
            step: int | None = None) -> dict:
    """Load, validate, subsample, split and fit the scaling of the source; write everything atomically.

    likelihood: model.likelihood, which an `auto` data.scaling follows when it is explicit.
    step: rows per chunk (default: about 64 MiB); the result does not depend on it.
    """
    with atomic_dir(out_dir) as tmp:
        (tmp / ".scratch").mkdir()  # sources that must be decoded are decoded here, memory-mapped
        dataset = load_source(config, scratch=tmp / ".scratch")
        step = step or chunk_rows(dataset.x[0].nbytes if len(dataset.x) else 1)
        validate(dataset, step)
        levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
        scaling, why = resolve_scaling(config.scaling, likelihood, levels)
        log.info("data.scaling=%s (%s)", scaling, why)
        rows = np.arange(len(dataset.x))
        if config.max_examples and config.max_examples < len(rows):
            rows, _ = split_indices(dataset.y, len(rows) - config.max_examples, seed, "max_examples")
        split_rows = dict(zip(SPLITS, _train_test_rows(dataset, rows, config.test_fraction, seed)))
        _check_classes(dataset, split_rows)
        threshold = config.binarize_threshold if config.binarize == "static" else None
        preprocess = Preprocessor.fit(dataset.x, split_rows["train"], levels, scaling, threshold)
        files, value_range = {}, [np.inf, -np.inf]
        for split, chosen in split_rows.items():
            (tmp / split).mkdir()
            low, high = _write_rows(dataset.x, chosen, preprocess, tmp / split / "x.npy", step)
            value_range = [min(value_range[0], low), max(value_range[1], high)]
            np.save(tmp / split / "y.npy", dataset.y[chosen])
            np.save(tmp / split / "id.npy", chosen.astype(np.int64))
            for name in ARRAYS:
                files[f"{split}/{name}.npy"] = sha256_file(tmp / split / f"{name}.npy")
        manifest = _manifest(dataset, config, seed, split_rows, files, value_range, levels,
                             {"data.scaling": {"value": scaling, "why": why}})
        del dataset  # its memory maps point into the scratch directory
        shutil.rmtree(tmp / ".scratch")
        preprocess.save(tmp / PREPROCESSING_FILE)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _write_rows(x: np.ndarray, rows: np.ndarray, preprocess: Preprocessor, path: Path,
                step: int) -> tuple[float, float]:
    """x[rows] in its stored dtype to a new .npy, `step` rows at a time; the (min, max) of
    those rows once preprocessed."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=stored_dtype(x.dtype), shape=(len(rows), *x.shape[1:]))
    low, high = np.inf, -np.inf
    for start in range(0, len(rows), step):
        chunk = np.asarray(x[rows[start:start + step]])
        out[start:start + len(chunk)] = chunk
        scaled = preprocess(chunk)
        low, high = min(low, float(scaled.min())), max(high, float(scaled.max()))
    out.flush()
    del out
    return low, high


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
        "layout": LAYOUT,
        "source": dataset.source,
        "path": str(Path(dataset.path).resolve()) if dataset.path and Path(dataset.path).exists() else dataset.path,
        "example_shape": list(dataset.x.shape[1:]),
        # Tables: the feature columns by name, so new data is matched by name, not position.
        "feature_names": list(dataset.feature_names) if dataset.feature_names else None,
        "dtypes": {"x": str(stored_dtype(dataset.x.dtype)), "y": "int32", "id": "int64", "source_x": str(dataset.x.dtype)},
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
    if (manifest.get("layout") != LAYOUT or arrays["x"].shape != expected or str(arrays["x"].dtype) !=
            manifest["dtypes"]["x"] or not len(arrays["y"]) == len(arrays["id"]) == expected[0]):
        raise DataError(f"{Path(prepared_dir) / split}: arrays do not match manifest.json (expected x of shape "
                        f"{expected}, got {arrays['x'].shape} {arrays['x'].dtype}, layout {manifest.get('layout')} "
                        f"for {LAYOUT}); re-run the prepare stage (dvc repro prepare)")
    return Split(**arrays, preprocess=Preprocessor.load(Path(prepared_dir) / PREPROCESSING_FILE))


def load_splits(prepared_dir: str | Path) -> dict[str, Split]:
    return {split: load_split(prepared_dir, split) for split in SPLITS}


def is_labelled(manifest: dict, splits: dict[str, Split]) -> bool:
    """Two classes or more and a label on every example: what the probes need."""
    return len(manifest["label_names"]) > 1 and all(int(np.min(s.y)) >= 0 for s in splits.values() if len(s))


def seeded_rows(length: int, n: int, seed: int) -> np.ndarray:
    """At most n distinct row indices out of `length`, chosen with a seed, sorted."""
    return np.sort(np.random.default_rng(seed).choice(length, size=min(n, length), replace=False))
