"""Encode examples with a trained model's q_φ(z|x) and write latent Parquet.

Two entry points: `encode`, the DVC stage (every prepared example), and `encode_new_data`
for new data in another project (the `vae-pipeline encode` command), through the same
readers and preprocessing as prepare.
"""

import functools
import importlib.metadata
import multiprocessing
import platform
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.bundle import Bundle, load_bundle
from pipeline.config import DataConfig, ImagesConfig, NpzConfig, TableConfig
from pipeline.data import SPLITS, load_split, read_manifest
from pipeline.errors import DataError
from pipeline.io import atomic_dir, scratch_dir, sha256_file
from pipeline.latents import LatentBatch, write_part, write_partition
from pipeline.sources import NO_LABEL, Dataset, load_source

PACKAGES = ("vae-pipeline", "tensorflow", "keras", "numpy", "pyarrow")


def encoded_batches(encoder, split: str, x: np.ndarray, y: np.ndarray, ids: np.ndarray,
                    batch_size: int, preprocess=None) -> Iterator[LatentBatch]:
    """Stream rows through the encoder, one batch in memory at a time."""
    for start in range(0, len(ids), batch_size):
        rows = slice(start, start + batch_size)
        xb = np.asarray(x[rows])
        z_mean, z_log_var = encoder.predict_on_batch(preprocess(xb) if preprocess else xb)
        yield LatentBatch(split, np.asarray(ids[rows]), np.asarray(y[rows]), np.asarray(z_mean),
                          np.asarray(z_log_var))


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _check_shape(bundle: Bundle, shape, where) -> None:
    model_shape = bundle.example_shape
    if model_shape != list(shape):
        raise DataError(f"{bundle.model_path}: model takes examples of shape {model_shape}, but {where} holds "
                        f"{list(shape)}; retrain the model or resize the input")


def encode(*, prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path, batch_size: int,
           run_params: dict, workers: int = 1) -> int:
    """The encode stage: latents of the train and test splits; returns the number of rows.

    workers > 1: that many processes, worker k encoding the k-th contiguous share of each
    split's rows into part-<k>.parquet; together one dataset, replaced atomically.
    run_params (the whole params.yaml) goes into the files' metadata as provenance.
    """
    manifest = read_manifest(prepared_dir)
    bundle = load_bundle(model_path)
    _check_shape(bundle, manifest["example_shape"], prepared_dir)
    metadata = {
        "dataset_fingerprint": manifest["fingerprint"],
        "dataset_source": manifest["source"],
        "label_names": manifest["label_names"],
        "model_sha256": sha256_file(model_path),
        "choices": bundle.choices,  # every auto knob's value and rule
        "params": run_params,
        "versions": package_versions(),
    }
    share = functools.partial(encode_share, prepared_dir, model_path, batch_size=batch_size, metadata=metadata,
                              workers=workers)
    with atomic_dir(out_dir) as tmp:
        if workers == 1:
            return share(tmp, 0, vae=bundle.vae)
        # spawn: a forked child would inherit this process's TensorFlow threads mid-flight.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return sum(pool.map(share, [tmp] * workers, range(workers)))


def encode_share(prepared_dir, model_path, directory: Path, worker: int, *, batch_size: int, metadata: dict,
                 workers: int, vae=None) -> int:
    """Worker `worker` of `workers`: its share of every split into directory/split=<s>/part-<worker>.parquet."""
    vae = vae or load_bundle(model_path).vae

    def batches():
        for split in SPLITS:
            data = load_split(prepared_dir, split)
            rows = slice(worker * len(data) // workers, (worker + 1) * len(data) // workers)
            yield from encoded_batches(vae.encoder, split, data.x[rows], data.y[rows], data.id[rows], batch_size,
                                       data.preprocess)

    return write_part(directory, batches(), vae.latent_dim, metadata, part=worker)


def input_config(path: Path, trained_on: dict, x_key: str = "x", y_key: str | None = None,
                 label_column: str | None = None) -> DataConfig:
    """How to read new data at `path` with prepare's readers, as the model's training data was read.

    The source follows from what `path` is; a table's features are the training columns,
    matched by name; images are resized to the training size.
    """
    shape, features = trained_on["example_shape"], trained_on.get("feature_names")
    if path.is_file():
        source = "npz" if path.suffix == ".npz" else "table"
    elif path.is_dir():
        source = "idx" if any("idx" in p.name.lower() for p in path.iterdir()) else "image_folder"
    else:
        raise DataError(f"{path}: not found (expected an .npz, a .csv/.parquet table, a directory of IDX files "
                        "or a folder of class subfolders of images)")
    if source == "image_folder" and len(shape) != 3:
        raise DataError(f"{path}: a folder of images, but the model was trained on examples of shape {shape}"
                        f"{' (table rows)' if features else ''}; give it data of that shape")
    size = tuple(shape[:2]) if len(shape) == 3 else None
    return DataConfig(source=source, path=str(path), npz=NpzConfig(x_key, y_key),
                      table=TableConfig(label_column, tuple(features) if features else None),
                      images=ImagesConfig(size=size, color="rgb" if shape[-1] == 3 else "grey"))


def encode_new_data(model_path: Path, input_path: Path, out_dir: Path, batch_size: int = 1024,
                    split: str = "new", overwrite: bool = False, **reader_options) -> int:
    """Encode `input_path` with a trained model, preprocessed as its training data was.

    Writes only the partition out_dir/split=<split>; an existing one is replaced only
    with `overwrite`, and no other partition is touched.
    """
    bundle = load_bundle(model_path)
    vae, preprocess = bundle.vae, bundle.preprocess
    trained_on = bundle.manifest or {"example_shape": bundle.example_shape}
    with scratch_dir(out_dir) as scratch:  # for sources that must be decoded (images, gzip IDX)
        dataset = load_source(input_config(input_path, trained_on, **reader_options), scratch)
        _check_shape(bundle, dataset.x.shape[1:], input_path)
        label_names = trained_on.get("label_names", list(dataset.label_names))
        y = _to_training_labels(dataset, label_names)
        metadata = {
            "dataset_source": f"{dataset.source}: {input_path}",
            "dataset_fingerprint": sha256_file(input_path) if input_path.is_file() else None,
            "label_names": label_names,
            "model_sha256": sha256_file(model_path),
            "choices": bundle.choices,
            "versions": package_versions(),
        }
        batches = encoded_batches(vae.encoder, split, dataset.x, y, np.arange(len(y), dtype=np.int64),
                                  batch_size, preprocess)
        return write_partition(out_dir, split, batches, vae.latent_dim, metadata, overwrite=overwrite)


def _to_training_labels(dataset: Dataset, training_names: list[str]) -> np.ndarray:
    """The new data's labels as indices into the training label names (NO_LABEL when unknown)."""
    if not len(dataset.label_names):
        return dataset.y
    index = {name: i for i, name in enumerate(training_names)}
    lookup = np.array([index.get(name, NO_LABEL) for name in dataset.label_names], np.int32)
    return np.where(dataset.y == NO_LABEL, NO_LABEL, lookup[dataset.y])

