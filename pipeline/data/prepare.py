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
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.data.covariates import PackedRows, check_packable, coding, covariate_codes, type_covariates
from pipeline.data.manifest import FILE as MANIFEST_FILE
from pipeline.data.manifest import Manifest, plain_table
from pipeline.data.prepared import PREPROCESSING_FILE, Preprocessor
from pipeline.data.prepared_writer import build_manifest, write_splits
from pipeline.data.readers.source_dataset import Dataset, check_float32, chunk_rows
from pipeline.data.readers.sources import load_source
from pipeline.data.resolve_data import pixel_levels, resolve_scaling, sequence_rule, value_type
from pipeline.data.row_assignment import Assignment, assigned, check_classes, chunks, count
from pipeline.data.scaling import fit_preprocessor
from pipeline.platform.choices import Choice
from pipeline.platform.engine import open_engine
from pipeline.platform.errors import DataError
from pipeline.platform.io import atomic_dir
from pipeline.platform.params.config import DataConfig, Params

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
        manifest, preprocess = _prepare_into(tmp, dataset, config, seed, likelihood, step)
        del dataset  # memory maps into the scratch directory
        shutil.rmtree(tmp / ".scratch")
        preprocess.save(tmp / PREPROCESSING_FILE)
        manifest.write(tmp / MANIFEST_FILE)
    return manifest


def _prepare_into(
    folder: Path, dataset: Dataset, config: DataConfig, seed: int, likelihood: str, step: int | None
) -> tuple[Manifest, Preprocessor]:
    """The prepared data of `dataset` in `folder`: the choices, the splits and the preprocessing
    decided, each split's arrays written; returns the manifest that describes them and the
    preprocessing to save."""
    step = step or chunk_rows(_row_bytes(dataset))
    choices = _choices(dataset, config, likelihood, validate(dataset, step))
    assign = _assignment(dataset, config, seed)
    counts = count(dataset, assign, step)
    check_classes(dataset, counts)
    levels = pixel_levels(dataset.x.dtype, dataset.declared_levels)
    preprocess, covariates, stored = _preprocessing(dataset, config, assign, step, choices, levels)
    written = write_splits(folder, stored, counts, chunks(stored, dataset, assign, step), preprocess)
    choices |= _sequence_choice(
        folder / "train" / "x.npy", choices["data.value_type"].value, dataset.columns, dataset.x.shape[1:]
    )
    manifest = build_manifest(dataset, config, seed, counts, written, choices, preprocess, stored, covariates)
    return manifest, preprocess


def _assignment(dataset: Dataset, config: DataConfig, seed: int) -> Assignment:
    """The rows' splits, fitted; a split that cannot be made names the data it failed on."""
    try:
        return Assignment(dataset, config, seed)
    except DataError as error:  # name the data the split failed on
        raise DataError(f"{dataset.path or dataset.source}: {error}") from None


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


def _preprocessing(
    dataset: Dataset, config: DataConfig, assign: Assignment, step: int, choices: dict, levels: float | None
) -> tuple[Preprocessor, tuple | None, object]:
    """The preprocessing fitted on the train rows, the covariates (or None), and the rows to store."""
    threshold = config.binarize_threshold if config.binarize == "static" else None
    train_x = (x[mask["train"]] for x, _, _, mask in chunks(dataset.x, dataset, assign, step))
    preprocess = fit_preprocessor(
        train_x, dataset.x.shape[1:], levels, choices["data.scaling"].value, threshold, dataset.columns
    )
    covariates, stored = _covariates(dataset, config, assign, step, choices)
    return (
        dataclasses.replace(preprocess, **coding(covariates)) if covariates else preprocess,
        covariates,
        stored,
    )


def _covariates(dataset: Dataset, config: DataConfig, assign: Assignment, step: int, choices: dict):
    """(the covariates typed, or None; the rows to store: x, followed by their codes when there are any).
    Records each covariate's type in `choices`."""
    if not dataset.covariates:
        return None, dataset.x
    where = dataset.path or dataset.source
    check_packable(where, dataset.x, choices["data.value_type"].value, config.binarize)
    train = np.zeros(len(dataset.y), bool)
    for rows, _, masks in assigned(dataset, assign, step):
        train[rows] = masks["train"]
    covariates = type_covariates(where, dataset.covariates, train)
    choices |= {f"data.covariates.{c.name}": Choice(c.type, c.why) for c in covariates}
    log.info("covariates: %s", ", ".join(f"{c.name} ({c.type}: {c.why})" for c in covariates))
    return covariates, PackedRows(dataset.x, covariate_codes(where, dataset.covariates, covariates))
