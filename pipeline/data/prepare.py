"""The prepare stage: validate a source, subsample, split, fit the scaling, write the prepared arrays.

Prepared layout (written atomically as one directory; `pipeline.data.prepared` reads it):

    data/prepared/manifest.json          pipeline.data.manifest.Manifest
    data/prepared/preprocessing.npz      offset and scale: x' = (x - offset) / scale
    data/prepared/{train,test}/x.npy     the stored values, (n, *example_shape): uint8 pixels
                                         stay uint8, everything else is float32; with
                                         data.covariates, each row's values then one code per
                                         covariate (pipeline.data.covariates)
    data/prepared/{train,test}/y.npy     int32 (n,), -1 where a source has no label
    data/prepared/{train,test}/id.npy    int64 (n,), index of the example in the source

prepare works through the source chunk by chunk and holds no array of the source's length,
and the chunk size changes no byte of the result.
"""

import dataclasses
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.data.covariates import PackedRows, check_packable, coding, covariate_codes, type_covariates
from pipeline.data.manifest import FILE as MANIFEST_FILE
from pipeline.data.manifest import LAYOUT, Manifest, plain_table
from pipeline.data.prepared import ARRAYS, PREPROCESSING_FILE, SPLITS, Preprocessor
from pipeline.data.readers.source_dataset import Dataset, check_float32, chunk_rows
from pipeline.data.readers.sources import load_source
from pipeline.data.resolve_data import pixel_levels, resolve_scaling, sequence_rule, value_type
from pipeline.data.scaling import fit_preprocessor
from pipeline.data.splits import HoldOut
from pipeline.platform.choices import Choice, records
from pipeline.platform.config import DataConfig, Params
from pipeline.platform.engine import open_engine
from pipeline.platform.errors import DataError
from pipeline.platform.io import atomic_dir, sha256_file

log = logging.getLogger(__name__)


def from_params(params: Params, *, out_dir) -> Manifest:
    """The stage's recipe: the params it reads, passed on (stages/prepare.py and pipeline.runner)."""
    with open_engine(params.cluster) as engine:
        return prepare(
            params.data, seed=params.seed, out_dir=out_dir, likelihood=params.model.likelihood, engine=engine
        )


def prepare(
    config: DataConfig,
    seed: int,
    out_dir: str | Path,
    likelihood: str = "auto",
    step: int | None = None,
    engine=None,
) -> Manifest:
    """Load, validate, subsample, split and fit the scaling of the source; write everything atomically.

    Works through the source `step` rows at a time (default: about 16 MiB of them); the
    result does not depend on `step`, nor on the engine that decodes and reads the source
    (pipeline.platform.engine; default here). likelihood: model.likelihood, which an `auto`
    data.scaling follows when it is explicit.

    Args:
        config: the data params.
        seed: seeds the subsample and the splits.
        out_dir: where the prepared data go (data/prepared), replaced whole.
        likelihood: model.likelihood as given (an explicit one decides the scaling).
        step: source rows per chunk (None: about 16 MiB of them).
        engine: where image folders are decoded and tables read (None: this process).

    Returns:
        The manifest written.
    """
    with atomic_dir(out_dir) as tmp:
        (tmp / ".scratch").mkdir()  # sources that must be decoded are decoded here, memory-mapped
        dataset = load_source(config, scratch=tmp / ".scratch", engine=engine)
        step = step or chunk_rows(_row_bytes(dataset))
        choices = _choices(dataset, config, likelihood, validate(dataset, step))
        try:
            assign = _Assignment(dataset, config, seed)
        except DataError as error:  # name the data the split failed on
            raise DataError(f"{dataset.path or dataset.source}: {error}") from None
        counts = _count(dataset, assign, step)
        _check_classes(dataset, counts)
        levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
        preprocess, covariates, stored = _preprocessing(dataset, config, assign, step, choices, levels)
        writers = {split: _ArrayWriter(tmp / split, int(counts[split].sum()), stored) for split in SPLITS}
        for x, y, rows, mask in _chunks(stored, dataset, assign, step):
            for split, writer in writers.items():
                writer.add(x[mask[split]], y[mask[split]], rows[mask[split]], preprocess)
        files = {
            f"{split}/{name}": digest for split, w in writers.items() for name, digest in w.close().items()
        }
        value_range = [min(w.low for w in writers.values()), max(w.high for w in writers.values())]
        choices |= _sequence_choice(
            tmp / "train" / "x.npy", choices["data.value_type"].value, dataset.columns, dataset.x.shape[1:]
        )
        manifest = _manifest(
            dataset,
            config,
            seed,
            counts,
            files,
            value_range,
            levels,
            choices,
            preprocess.output_shape(stored.shape[1:]),
            stored,
            covariates,
        )
        del dataset, writers  # memory maps into the scratch directory and the outputs
        shutil.rmtree(tmp / ".scratch")
        preprocess.save(tmp / PREPROCESSING_FILE)
        manifest.write(tmp / MANIFEST_FILE)
    return manifest


def _row_bytes(dataset: Dataset) -> int:
    """A row's bytes as the model reads it: a table's categorical codes become one-hots."""
    width = sum(c.width for c in dataset.columns or ()) * np.dtype(np.float32).itemsize
    return max(dataset.x[0].nbytes if len(dataset.x) else 1, width)


def validate(dataset: Dataset, step: int | None = None) -> tuple[float, float, bool]:
    """Raise DataError if the examples cannot be modelled as they are (read `step` rows at a time).

    Returns the values' (low, high, all whole numbers) for the value type rule (not read for
    pixels, or for tables, whose reader types each column and marks missing cells NaN).
    """
    where, x = dataset.path or dataset.source, dataset.x
    if len(x) == 0:
        raise DataError(f"{where}: the dataset is empty")
    if len(x) != len(dataset.y):
        raise DataError(f"{where}: {len(x)} inputs but {len(dataset.y)} labels")
    if x.dtype == np.uint8 or dataset.columns is not None:
        return 0.0, 255.0, True
    step = step or chunk_rows(x[0].nbytes)
    low, high, integral, bad = np.inf, -np.inf, True, 0
    for i in range(0, len(x), step):
        chunk = np.asarray(x[i : i + step], np.float64).reshape(min(step, len(x) - i), -1)
        finite = np.isfinite(chunk)
        bad += int((~finite).any(axis=1).sum())
        if not bad:
            low, high = min(low, chunk.min()), max(high, chunk.max())
            integral = integral and bool((chunk == np.round(chunk)).all())
    if bad:
        raise DataError(
            f"{where}: inputs contain NaN or infinite values ({bad} examples); a table marks "
            "missing cells instead (data.source: table)"
        )
    check_float32(where, low, high, integral)
    return float(low), float(high), integral


def _choices(
    dataset: Dataset, config: DataConfig, likelihood: str, stats: tuple[float, float, bool]
) -> dict[str, Choice]:
    """prepare's auto choices with their rules: the reader's, the value type, the scaling, column types."""
    levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
    kind, kind_why = value_type(dataset.x.ndim, levels, *stats, table=dataset.columns is not None)
    if config.binarize != "none" and kind not in ("pixels", "real"):
        raise DataError(
            f"{dataset.path or dataset.source}: data.binarize {config.binarize!r} applies to pixels "
            f"and real values; these values are {kind}. Set data.binarize: none"
        )
    # a table's reader records every column's type, or why it left the column out
    choices = {
        **dataset.choices,
        "data.value_type": Choice(kind, kind_why),
        "data.scaling": resolve_scaling(config.scaling, likelihood, levels, kind),
    }
    log.info("choices at prepare: %s", ", ".join(f"{key}={c.value} ({c.why})" for key, c in choices.items()))
    return choices


def _sequence_choice(train_x: Path, kind: str, columns, shape) -> dict[str, Choice]:
    """data.sequence (resolve_data.sequence_rule) for rows of reals or pixels, and for tables
    whose columns are all real and complete; {} for other data. shape: an example's values
    as stored (less a covariate's codes after them)."""
    if kind not in ("real", "pixels") and not (columns is not None and plain_table(columns)):
        return {}
    stored = np.load(train_x, mmap_mode="r")
    rule = sequence_rule(stored if stored.shape[1:] == tuple(shape) else stored[:, : shape[0]])
    if rule is None:
        return {}
    log.info("choices at prepare: data.sequence=%s (%s)", *rule)
    return {"data.sequence": Choice(*rule)}


def stored_dtype(source_dtype: np.dtype) -> np.dtype:
    """uint8 pixels are kept as they are; every other source is stored as float32."""
    return np.dtype(np.uint8) if source_dtype == np.uint8 else np.dtype(np.float32)


class _Assignment:
    """Which split each source row goes to (or none, under data.max_examples), chunk by chunk."""

    def __init__(self, dataset: Dataset, config: DataConfig, seed: int):
        n = len(dataset.y)
        self.subsample = (
            HoldOut.fit(dataset.y, n - config.max_examples, seed, "max_examples")
            if config.max_examples and config.max_examples < n
            else None
        )
        self.is_test = dataset.is_test  # the source's own split, when it has one
        self.test = (
            HoldOut.fit(dataset.y, config.test_fraction, seed, "test", within=self.subsample)
            if self.is_test is None
            else None
        )

    def masks(self, rows: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        kept = ~self.subsample.held(rows, y) if self.subsample is not None else np.ones(len(rows), bool)
        test = (np.asarray(self.is_test[rows]) & kept) if self.test is None else self.test.held(rows, y)
        return {"train": kept & ~test, "test": test}


def _assigned(dataset: Dataset, assign: _Assignment, step: int):
    """(rows, y, {split: mask}) for every `step` rows of the source: the labels alone."""
    for start in range(0, len(dataset.y), step):
        rows = np.arange(start, min(start + step, len(dataset.y)))
        y = np.asarray(dataset.y[start : start + step])
        yield rows, y, assign.masks(rows, y)


def _chunks(x, dataset: Dataset, assign: _Assignment, step: int):
    """(x, y, rows, {split: mask}) for every `step` rows of the source: x's rows (the dataset's,
    or those with the covariates' codes after them)."""
    for rows, y, masks in _assigned(dataset, assign, step):
        yield np.asarray(x[rows[0] : rows[-1] + 1]), y, rows, masks


def _preprocessing(
    dataset: Dataset, config: DataConfig, assign: _Assignment, step: int, choices: dict, levels: float | None
) -> tuple[Preprocessor, tuple | None, object]:
    """The preprocessing fitted on the train rows, the covariates (or None), and the rows to store."""
    threshold = config.binarize_threshold if config.binarize == "static" else None
    train_x = (x[mask["train"]] for x, _, _, mask in _chunks(dataset.x, dataset, assign, step))
    preprocess = fit_preprocessor(
        train_x, dataset.x.shape[1:], levels, choices["data.scaling"].value, threshold, dataset.columns
    )
    covariates, stored = _covariates(dataset, config, assign, step, choices)
    return (
        dataclasses.replace(preprocess, **coding(covariates)) if covariates else preprocess,
        covariates,
        stored,
    )


def _covariates(dataset: Dataset, config: DataConfig, assign: _Assignment, step: int, choices: dict):
    """(the covariates typed, or None; the rows to store: x, followed by their codes when there are any).
    Records each covariate's type in `choices`."""
    if not dataset.covariates:
        return None, dataset.x
    where = dataset.path or dataset.source
    check_packable(where, dataset.x, choices["data.value_type"].value, config.binarize)
    train = np.zeros(len(dataset.y), bool)
    for rows, _, masks in _assigned(dataset, assign, step):
        train[rows] = masks["train"]
    covariates = type_covariates(where, dataset.covariates, train)
    choices |= {f"data.covariates.{c.name}": Choice(c.type, c.why) for c in covariates}
    log.info("covariates: %s", ", ".join(f"{c.name} ({c.type}: {c.why})" for c in covariates))
    return covariates, PackedRows(dataset.x, covariate_codes(where, dataset.covariates, covariates))


def _count(dataset: Dataset, assign: _Assignment, step: int) -> dict[str, np.ndarray]:
    """Examples per class (one count when unlabelled) of each split."""
    labelled = dataset.labelled
    classes = max(len(dataset.label_names), 1) if labelled else 1
    counts = {split: np.zeros(classes, np.int64) for split in SPLITS}
    for _, y, masks in _assigned(dataset, assign, step):
        for split, mask in masks.items():
            counts[split] += np.bincount(
                y[mask] if labelled else np.zeros(mask.sum(), np.int64), minlength=classes
            )
    return counts


class _ArrayWriter:
    """One split's x, y and id .npy files, filled chunk by chunk; tracks the preprocessed range."""

    def __init__(self, folder: Path, n: int, x: np.ndarray):
        folder.mkdir()
        self.folder, self.at, self.low, self.high = folder, 0, np.inf, -np.inf
        self.arrays = {
            "x": np.lib.format.open_memmap(folder / "x.npy", "w+", stored_dtype(x.dtype), (n, *x.shape[1:])),
            "y": np.lib.format.open_memmap(folder / "y.npy", "w+", np.int32, (n,)),
            "id": np.lib.format.open_memmap(folder / "id.npy", "w+", np.int64, (n,)),
        }

    def add(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray, preprocess: Preprocessor) -> None:
        if len(rows):
            for name, values in (("x", x), ("y", y), ("id", rows)):
                self.arrays[name][self.at : self.at + len(rows)] = values
            scaled = preprocess(x)  # NaN where a table's cell is missing
            scaled = scaled[
                :, : scaled.shape[1] - preprocess.covariate_width
            ]  # the range of x's values alone
            self.low, self.high = (
                min(self.low, float(np.nanmin(scaled))),
                max(self.high, float(np.nanmax(scaled))),
            )
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
            raise DataError(
                f"{dataset.path or dataset.source}: the {split} split holds only class "
                f"{dataset.label_names[present[0]]!r}; probes need at least two "
                "(use more examples or another data.test_fraction)"
            )


def _manifest(
    dataset: Dataset,
    config: DataConfig,
    seed: int,
    per_class: dict,
    files: dict,
    value_range,
    levels: float | None,
    choices: dict,
    input_shape: list[int],
    stored,
    covariates,
) -> Manifest:
    fingerprint = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    return Manifest(
        layout=LAYOUT,
        source=dataset.source,
        path=str(Path(dataset.path).resolve())
        if dataset.path and Path(dataset.path).exists()
        else dataset.path,
        example_shape=list(stored.shape[1:]),
        input_shape=input_shape,
        value_type=choices["data.value_type"].value,
        feature_names=list(dataset.feature_names) if dataset.feature_names else None,
        columns=list(dataset.columns) if dataset.columns is not None else None,
        dtypes={
            "x": str(stored_dtype(stored.dtype)),
            "y": "int32",
            "id": "int64",
            "source_x": str(dataset.x.dtype),
        },
        counts={split: int(c.sum()) for split, c in per_class.items()},
        counts_per_class={split: c.tolist() for split, c in per_class.items()} if dataset.labelled else None,
        label_names=list(dataset.label_names),
        value_range=value_range,
        pixel_levels=levels,
        choices=records(choices),
        preprocessing={
            "scaling": choices["data.scaling"].value,
            "binarize": config.binarize,
            "binarize_threshold": config.binarize_threshold if config.binarize == "static" else None,
            "max_examples": config.max_examples,
            "test_split": (
                "the source's own"
                if dataset.is_test is not None
                else f"seeded stratified, fraction {config.test_fraction}"
            ),
            "seed": seed,
        },
        sha256=files,
        fingerprint=fingerprint,
        covariates=list(covariates) if covariates else None,
    )
