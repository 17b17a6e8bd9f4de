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
from pipeline.sources import Dataset, chunk_rows, load_source
from pipeline.splits import HoldOut

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
    def fit(cls, chunks, shape: tuple[int, ...], levels: float | None, scaling: str,
            threshold: float | None) -> "Preprocessor":
        """Statistics of the train rows, given as consecutive chunks of examples of `shape`.

        They are summed over blocks of STATS_ROWS rows whatever the chunks, so that the
        chunk size changes nothing. levels: the top of the pixel scale (pixels are divided
        by it), None for other data.
        """
        if scaling == "none":
            offset, scale = np.zeros(1), np.ones(1)
        elif scaling == "unit" and levels is not None:
            offset, scale = np.zeros(1), np.array([levels])
        else:
            stats = _FeatureStats()
            for block in _reblock(chunks, STATS_ROWS):
                stats.add(np.asarray(block, np.float64).reshape(len(block), -1))
            offset, scale = (stats.low, stats.high - stats.low) if scaling == "unit" else (stats.mean, stats.std)
        scale = np.where(scale > 0, scale, 1.0)  # constant features map to 0
        shape = (1,) if offset.size == 1 else tuple(shape)
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


def _reblock(chunks, n: int):
    """The rows of `chunks` again, as blocks of exactly n rows (the last one shorter)."""
    pending, held = [], 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= n:
            rows = np.concatenate(pending)
            yield rows[:n]
            pending, held = [rows[n:]], held - n
    if held:
        yield np.concatenate(pending)


class _FeatureStats:
    """Per-feature min, max, mean and standard deviation, merged block by block (Chan et al.)."""

    def __init__(self):
        self.n, self.mean, self.m2, self.low, self.high = 0, 0.0, 0.0, np.inf, -np.inf

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
        bad = sum(int((~np.isfinite(x[i:i + step])).reshape(min(step, len(x) - i), -1).any(axis=1).sum())
                  for i in range(0, len(x), step))
        if bad:
            raise DataError(f"{where}: inputs contain NaN or infinite values ({bad} examples)")


def validation_rows(y: np.ndarray, fraction: float, seed: int, scratch: Path | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) row indices of the prepared train split, the same in every stage;
    memory-mapped in `scratch` when given."""
    if fraction == 0:
        return np.arange(len(y)), np.arange(0)
    return HoldOut.fit(y, fraction, seed, "validation").indices(y, scratch)


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

    Works through the source `step` rows at a time (default: about 16 MiB of them) and
    holds no array of the source's length; the result does not depend on `step`.
    likelihood: model.likelihood, which an `auto` data.scaling follows when it is explicit.
    """
    with atomic_dir(out_dir) as tmp:
        (tmp / ".scratch").mkdir()  # sources that must be decoded are decoded here, memory-mapped
        dataset = load_source(config, scratch=tmp / ".scratch")
        step = step or chunk_rows(dataset.x[0].nbytes if len(dataset.x) else 1)
        validate(dataset, step)
        levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
        scaling, why = resolve_scaling(config.scaling, likelihood, levels)
        log.info("data.scaling=%s (%s)", scaling, why)
        assign = _Assignment(dataset, config, seed)
        counts = _count(dataset, assign, step)
        _check_classes(dataset, counts)
        threshold = config.binarize_threshold if config.binarize == "static" else None
        train_x = (x[mask["train"]] for x, _, _, mask in _chunks(dataset, assign, step))
        preprocess = Preprocessor.fit(train_x, dataset.x.shape[1:], levels, scaling, threshold)
        writers = {split: _SplitWriter(tmp / split, int(counts[split].sum()), dataset.x) for split in SPLITS}
        for x, y, rows, mask in _chunks(dataset, assign, step):
            for split, writer in writers.items():
                writer.add(x[mask[split]], y[mask[split]], rows[mask[split]], preprocess)
        files = {f"{split}/{name}": digest for split, w in writers.items() for name, digest in w.close().items()}
        value_range = [min(w.low for w in writers.values()), max(w.high for w in writers.values())]
        manifest = _manifest(dataset, config, seed, counts, files, value_range, levels,
                             {"data.scaling": {"value": scaling, "why": why}})
        del dataset, writers  # memory maps into the scratch directory and the outputs
        shutil.rmtree(tmp / ".scratch")
        preprocess.save(tmp / PREPROCESSING_FILE)
        write_json(tmp / "manifest.json", manifest)
    return manifest


class _Assignment:
    """Which split each source row goes to (or none, under data.max_examples), chunk by chunk."""

    def __init__(self, dataset: Dataset, config: DataConfig, seed: int):
        n = len(dataset.y)
        self.subsample = (HoldOut.fit(dataset.y, n - config.max_examples, seed, "max_examples")
                          if config.max_examples and config.max_examples < n else None)
        self.is_test = dataset.is_test  # the source's own split, when it has one
        self.test = (HoldOut.fit(dataset.y, config.test_fraction, seed, "test", within=self.subsample)
                     if self.is_test is None else None)

    def masks(self, rows: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        kept = ~self.subsample.held(rows, y) if self.subsample is not None else np.ones(len(rows), bool)
        test = (np.asarray(self.is_test[rows]) & kept) if self.test is None else self.test.held(rows, y)
        return {"train": kept & ~test, "test": test}


def _assigned(dataset: Dataset, assign: _Assignment, step: int):
    """(rows, y, {split: mask}) for every `step` rows of the source: the labels alone."""
    for start in range(0, len(dataset.y), step):
        rows = np.arange(start, min(start + step, len(dataset.y)))
        y = np.asarray(dataset.y[start:start + step])
        yield rows, y, assign.masks(rows, y)


def _chunks(dataset: Dataset, assign: _Assignment, step: int):
    """(x, y, rows, {split: mask}) for every `step` rows of the source."""
    for rows, y, masks in _assigned(dataset, assign, step):
        yield np.asarray(dataset.x[rows[0]:rows[-1] + 1]), y, rows, masks


def _count(dataset: Dataset, assign: _Assignment, step: int) -> dict[str, np.ndarray]:
    """Examples per class (one count when unlabelled) of each split."""
    labelled = dataset.labelled
    classes = max(len(dataset.label_names), 1) if labelled else 1
    counts = {split: np.zeros(classes, np.int64) for split in SPLITS}
    for _, y, masks in _assigned(dataset, assign, step):
        for split, mask in masks.items():
            counts[split] += np.bincount(y[mask] if labelled else np.zeros(mask.sum(), np.int64), minlength=classes)
    return counts


class _SplitWriter:
    """One split's x, y and id .npy files, filled chunk by chunk; tracks the preprocessed range."""

    def __init__(self, folder: Path, n: int, x: np.ndarray):
        folder.mkdir()
        self.folder, self.at, self.low, self.high = folder, 0, np.inf, -np.inf
        self.arrays = {"x": np.lib.format.open_memmap(folder / "x.npy", "w+", stored_dtype(x.dtype), (n, *x.shape[1:])),
                       "y": np.lib.format.open_memmap(folder / "y.npy", "w+", np.int32, (n,)),
                       "id": np.lib.format.open_memmap(folder / "id.npy", "w+", np.int64, (n,))}

    def add(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray, preprocess: Preprocessor) -> None:
        if len(rows):
            for name, values in (("x", x), ("y", y), ("id", rows)):
                self.arrays[name][self.at:self.at + len(rows)] = values
            scaled = preprocess(x)
            self.low, self.high = min(self.low, float(scaled.min())), max(self.high, float(scaled.max()))
            self.at += len(rows)

    def close(self) -> dict[str, str]:
        """Flush the files; their sha256 by name."""
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        return {f"{name}.npy": sha256_file(self.folder / f"{name}.npy") for name in ARRAYS}


def _check_classes(dataset: Dataset, counts: dict[str, np.ndarray]) -> None:
    if not dataset.labelled:
        return
    for split, per_class in counts.items():
        present = np.flatnonzero(per_class)
        if per_class.sum() and present.size < 2:
            raise DataError(f"{dataset.path or dataset.source}: the {split} split holds only class "
                            f"{dataset.label_names[present[0]]!r}; probes need at least two "
                            "(use more examples or another data.test_fraction)")


def _manifest(dataset: Dataset, config: DataConfig, seed: int, per_class: dict, files: dict, value_range,
              levels: float | None, choices: dict) -> dict:
    counts = {split: int(c.sum()) for split, c in per_class.items()}
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
        "counts_per_class": {split: c.tolist() for split, c in per_class.items()} if dataset.labelled else None,
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
