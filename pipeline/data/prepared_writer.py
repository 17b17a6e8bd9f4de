"""What prepare writes: each split's x, y and id arrays, chunk by chunk, and the manifest that describes them.

The arrays are .npy memory maps filled in place (pipeline.data.prepare documents the layout);
each file's sha256 goes into the manifest, and all of them make its fingerprint.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.manifest import LAYOUT, Manifest
from pipeline.data.prepared import ARRAYS, SPLITS, Preprocessor
from pipeline.data.readers.source_dataset import Dataset
from pipeline.data.resolve_data import pixel_levels
from pipeline.platform.choices import records
from pipeline.platform.io import sha256_file
from pipeline.platform.params.config import DataConfig


def stored_dtype(source_dtype: np.dtype) -> np.dtype:
    """uint8 pixels are kept as they are; every other source is stored as float32."""
    return np.dtype(np.uint8) if source_dtype == np.uint8 else np.dtype(np.float32)


class ArrayWriter:
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


@dataclass(frozen=True)
class Written:
    """What `write_splits` wrote: each file's sha256 (by "split/name") and the preprocessed values' range."""

    files: dict[str, str]
    value_range: list[float]


def write_splits(
    folder: Path, stored, counts: dict[str, np.ndarray], chunks, preprocess: Preprocessor
) -> Written:
    """Each split's arrays under folder/<split>/, from `chunks`: (x, y, rows, {split: mask}) of
    consecutive rows of `stored` (pipeline.data.row_assignment.chunks); counts: examples per
    class of each split, which size the files."""
    writers = {split: ArrayWriter(folder / split, int(counts[split].sum()), stored) for split in SPLITS}
    for x, y, rows, mask in chunks:
        for split, writer in writers.items():
            writer.add(x[mask[split]], y[mask[split]], rows[mask[split]], preprocess)
    files = {f"{split}/{name}": digest for split, w in writers.items() for name, digest in w.close().items()}
    value_range = [min(w.low for w in writers.values()), max(w.high for w in writers.values())]
    return Written(files, value_range)


def build_manifest(
    dataset: Dataset,
    config: DataConfig,
    seed: int,
    per_class: dict,
    written: Written,
    choices: dict,
    preprocess: Preprocessor,
    stored,
    covariates,
) -> Manifest:
    """The manifest of the prepared data: what the source was, what was decided, what was written."""
    files = written.files
    fingerprint = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    return Manifest(
        layout=LAYOUT,
        source=dataset.source,
        path=_resolved_path(dataset.path),
        example_shape=list(stored.shape[1:]),
        input_shape=preprocess.output_shape(stored.shape[1:]),
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
        value_range=written.value_range,
        pixel_levels=pixel_levels(dataset.x.dtype, dataset.declared_levels),
        choices=records(choices),
        preprocessing=_preprocessing_record(dataset, config, choices, seed),
        sha256=files,
        fingerprint=fingerprint,
        covariates=list(covariates) if covariates else None,
    )


def _resolved_path(path: str | None) -> str | None:
    """The source's path, absolute where it exists here; as the reader gave it otherwise (None, or a name)."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def _preprocessing_record(dataset: Dataset, config: DataConfig, choices: dict, seed: int) -> dict:
    """The manifest's account of how the rows were chosen and scaled."""
    return {
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
    }
