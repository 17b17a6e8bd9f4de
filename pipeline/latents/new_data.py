"""New data for the encode command, read as the model's training data was.

prepare's readers read it (the source follows from what the path is:
`pipeline.data.readers.sources.source_of`), with the training run's columns, genes, image
size and covariates; its values are checked as prepare checks training data and against
what the model was trained on, and its labels are mapped onto the training label names.
"""

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.data.covariates import PackedRows, covariate_codes
from pipeline.data.manifest import Column, Manifest
from pipeline.data.prepare import validate
from pipeline.data.readers.source_dataset import NO_LABEL, Dataset
from pipeline.data.readers.sources import load_source, source_of
from pipeline.platform.errors import DataError
from pipeline.platform.params.config import (
    AnndataConfig,
    DataConfig,
    ImagesConfig,
    NpzConfig,
    TableConfig,
)


def input_config(
    path: Path,
    example_shape: list[int],
    columns: list[Column] | None = None,
    x_key: str = "x",
    y_key: str | None = None,
    label_column: str | None = None,
    layer: str | None = None,
    covariates: tuple[str, ...] = (),
) -> DataConfig:
    """How to read new data at `path` with prepare's readers, as the model's training data was read.

    A table's features are the file columns the training columns are read from, matched by
    name; images are resized to the training size.

    Args:
        path: the new data's file or folder.
        example_shape: one stored training example's shape.
        columns: a table model's columns, or None.
        x_key, y_key: an npz's members.
        label_column: a table's label column or an .h5ad's obs column of labels, or None.
        layer: an .h5ad's layer, or None for X.
        covariates: the covariates the model was trained with (each example must have them).

    Returns:
        The DataConfig prepare's readers take.
    """
    source = source_of(path)
    _check_image_folder(path, source, example_shape, columns)
    size = tuple(example_shape[:2]) if len(example_shape) == 3 else None
    read_from = tuple(dict.fromkeys(c.read_from for c in columns)) if columns else None  # a timestamp's once
    return DataConfig(
        source=source,
        path=str(path),
        npz=NpzConfig(x_key, y_key),
        table=TableConfig(label_column, read_from),
        anndata=AnndataConfig(layer, label_column),
        images=ImagesConfig(size=size, color="rgb" if example_shape[-1] == 3 else "grey"),
        covariates=covariates,
    )


def _check_image_folder(path: Path, source: str, example_shape: list[int], columns) -> None:
    """Raise DataError for a folder of images given to a model trained on anything but images
    (H×W×C examples): resizing cannot make them that model's input."""
    if source == "image_folder" and len(example_shape) != 3:
        raise DataError(
            f"{path}: a folder of images, but the model was trained on examples of shape "
            f"{example_shape}{' (table rows)' if columns else ''}; give it data of that shape"
        )


def read_input(bundle, input_path: Path, scratch: Path, reader_options: dict) -> Dataset:
    """The new data, read as the training data was (a table's columns and an .h5ad's genes
    matched by name) and checked as prepare checks training data, and against the model's
    input: shape, and counts or pixel levels where it was trained on them."""
    trained_on, covariates = bundle.manifest, bundle.manifest.covariates
    config = input_config(
        input_path,
        bundle.input_shape,
        trained_on.columns,
        **reader_options,
        covariates=tuple(c.name for c in covariates or ()),
    )
    genes = trained_on.feature_names if trained_on.source == "anndata" else None
    dataset = load_source(config, scratch, trained_on.columns, genes=genes)
    _check_values(dataset, trained_on, input_path)
    if covariates:  # coded as the training rows' were; a level never seen there is an error
        codes = covariate_codes(str(input_path), dataset.covariates, covariates)
        dataset = dataclasses.replace(dataset, x=PackedRows(dataset.x, codes))
    bundle.check_shape(bundle.preprocess.output_shape(dataset.x.shape[1:]), input_path)
    return dataset


def _check_values(dataset: Dataset, trained_on: Manifest, where: Path) -> None:
    """Raise DataError unless the values are ones the model can read: finite, within float32
    (prepare's checks), whole and non-negative for a count model, on the pixel scale for a
    pixel model."""
    low, high, integral = validate(dataset)
    if dataset.x.dtype == np.uint8 or dataset.columns is not None:
        return  # uint8 pixels are on their scale; a table's reader checked each column against training
    if trained_on.value_type == "count" and (low < 0 or not integral):
        raise DataError(
            f"{where}: the model was trained on counts (whole numbers >= 0); these values run from "
            f"{low:g} to {high:g}{'' if integral else ', not all whole'}"
        )
    top = trained_on.pixel_levels
    if trained_on.value_type == "pixels" and top is not None and (low < 0 or high > top):
        raise DataError(
            f"{where}: the model was trained on pixels from 0 to {top:g}; these values run from "
            f"{low:g} to {high:g}"
        )


def to_training_labels(dataset: Dataset, training_names: list[str]) -> np.ndarray:
    """The new data's labels as indices into the training label names (NO_LABEL when unknown)."""
    if not len(dataset.label_names):
        return dataset.y
    index = {name: i for i, name in enumerate(training_names)}
    lookup = np.array([index.get(name, NO_LABEL) for name in dataset.label_names], np.int32)
    return np.where(dataset.y == NO_LABEL, NO_LABEL, lookup[dataset.y])
