"""Encode examples with a trained model's q_φ(z|x) and write latent Parquet.

Two entry points: `encode`, the DVC stage (every prepared example), and the command line
for new data in another project, through the same readers and preprocessing as prepare:

    python -m pipeline.encode --model data/model/model.keras --input new.npz --output out/
"""

import argparse
import importlib.metadata
import json
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.config import DataConfig, ImagesConfig, NpzConfig, Params, TableConfig, as_dict
from pipeline.data import SPLITS, Preprocessor, load_split, read_manifest
from pipeline.errors import DataError, run_stage
from pipeline.io import sha256_file
from pipeline.latents import LatentBatch, write_latents, write_partition
from pipeline.sources import NO_LABEL, Dataset, load_source

PACKAGES = ("vae-pipeline", "tensorflow", "keras", "numpy", "pyarrow")
# Written by the train stage beside model.keras: how its inputs were preprocessed.
PREPROCESSING_FILE, DATA_MANIFEST_FILE = "preprocessing.npz", "data_manifest.json"


def load_vae(model_path: str | Path):
    """Load model.keras, naming the file when it is missing or not a VAE of this package."""
    import keras

    import pipeline.model  # noqa: F401  (registers the custom layers)

    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"{model_path}: model file not found; run the train stage first")
    try:
        model = keras.saving.load_model(model_path)
    except (OSError, ValueError, TypeError) as error:
        raise DataError(f"{model_path}: cannot load Keras model ({error})") from None
    if not isinstance(model, pipeline.model.VAE):
        raise DataError(f"{model_path}: expected a saved VAE, got {type(model).__name__}")
    return model


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


def _input_shape(vae) -> list[int]:
    return list(vae.encoder.inputs[0].shape[1:])


def _check_shape(vae, shape, model_path, where) -> None:
    model_shape = _input_shape(vae)
    if model_shape != list(shape):
        raise DataError(f"{model_path}: model takes examples of shape {model_shape}, but {where} holds "
                        f"{list(shape)}; retrain the model or resize the input")


def encode(params: Params, prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path) -> int:
    """The encode stage: latents of the train and test splits; returns the number of rows."""
    manifest = read_manifest(prepared_dir)
    vae = load_vae(model_path)
    _check_shape(vae, manifest["example_shape"], model_path, prepared_dir)
    metadata = {
        "dataset_fingerprint": manifest["fingerprint"],
        "dataset_source": manifest["source"],
        "label_names": manifest["label_names"],
        "model_sha256": sha256_file(model_path),
        "params": as_dict(params),
        "versions": package_versions(),
    }

    def batches():
        for split in SPLITS:
            data = load_split(prepared_dir, split)
            yield from encoded_batches(vae.encoder, split, data.x, data.y, data.id, params.encode.batch_size)

    return write_latents(out_dir, batches(), vae.latent_dim, metadata)


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
    vae = load_vae(model_path)
    trained_on = _training_manifest(model_path) or {"example_shape": _input_shape(vae)}
    dataset = load_source(input_config(input_path, trained_on, **reader_options))
    _check_shape(vae, dataset.x.shape[1:], model_path, input_path)
    preprocess_file = model_path.parent / PREPROCESSING_FILE
    preprocess = Preprocessor.load(preprocess_file) if preprocess_file.is_file() else None
    label_names = trained_on.get("label_names", list(dataset.label_names))
    y = _to_training_labels(dataset, label_names)
    metadata = {
        "dataset_source": f"{dataset.source}: {input_path}",
        "dataset_fingerprint": sha256_file(input_path) if input_path.is_file() else None,
        "label_names": label_names,
        "model_sha256": sha256_file(model_path),
        "versions": package_versions(),
    }
    batches = encoded_batches(vae.encoder, split, dataset.x, y, np.arange(len(y), dtype=np.int64),
                              batch_size, preprocess)
    return write_partition(out_dir, split, batches, vae.latent_dim, metadata, overwrite=overwrite)


def _training_manifest(model_path: Path) -> dict | None:
    path = model_path.parent / DATA_MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _to_training_labels(dataset: Dataset, training_names: list[str]) -> np.ndarray:
    """The new data's labels as indices into the training label names (NO_LABEL when unknown)."""
    if not len(dataset.label_names):
        return dataset.y
    index = {name: i for i, name in enumerate(training_names)}
    lookup = np.array([index.get(name, NO_LABEL) for name in dataset.label_names], np.int32)
    return np.where(dataset.y == NO_LABEL, NO_LABEL, lookup[dataset.y])


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1. Got {text!r} instead.")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.encode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model.keras")
    parser.add_argument("--input", type=Path, required=True,
                        help="an .npz, a .csv/.parquet table, a directory of IDX files or of class folders")
    parser.add_argument("--output", type=Path, required=True, help="directory for the latent Parquet dataset")
    parser.add_argument("--split", default="new", help="partition name for these rows (default: new)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing partition of that name")
    parser.add_argument("--batch-size", type=_positive_int, default=1024)
    parser.add_argument("--x-key", default="x", help="npz: array of inputs")
    parser.add_argument("--y-key", default=None, help="npz: array of labels (optional)")
    parser.add_argument("--label-column", default=None, help="table: label column (optional)")
    args = parser.parse_args(argv)
    rows = encode_new_data(args.model, args.input, args.output, args.batch_size, args.split, args.overwrite,
                           x_key=args.x_key, y_key=args.y_key, label_column=args.label_column)
    print(f"encoded {rows} rows of {args.input} into {args.output / f'split={args.split}'}")


if __name__ == "__main__":
    run_stage(main)
