"""Encode every prepared example with a trained model's q_φ(z|x) and write latent Parquet."""

import importlib.metadata
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.config import Params, as_dict
from pipeline.data import SPLITS, load_split, read_manifest
from pipeline.errors import DataError
from pipeline.io import sha256_file
from pipeline.latents import LatentBatch, write_latents

PACKAGES = ("vae-pipeline", "tensorflow", "keras", "numpy", "pyarrow")


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


def encoded_batches(encoder, prepared_dir: str | Path, batch_size: int) -> Iterator[LatentBatch]:
    """Stream (split, rows) through the encoder, one batch in memory at a time."""
    for split in SPLITS:
        data = load_split(prepared_dir, split)
        for start in range(0, len(data), batch_size):
            rows = slice(start, start + batch_size)
            z_mean, z_log_var = encoder.predict_on_batch(np.asarray(data.x[rows]))
            yield LatentBatch(split, np.asarray(data.id[rows]), np.asarray(data.y[rows]),
                              np.asarray(z_mean), np.asarray(z_log_var))


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def encode(params: Params, prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path) -> int:
    """Write data/latents for the train and test splits; returns the number of rows."""
    manifest = read_manifest(prepared_dir)
    vae = load_vae(model_path)
    model_shape = list(vae.encoder.inputs[0].shape[1:])
    if model_shape != manifest["example_shape"]:
        raise DataError(f"{model_path}: model takes examples of shape {model_shape}, but "
                        f"{prepared_dir} holds {manifest['example_shape']}; retrain the model")
    metadata = {
        "dataset_fingerprint": manifest["fingerprint"],
        "dataset_source": manifest["source"],
        "label_names": manifest["label_names"],
        "model_sha256": sha256_file(model_path),
        "params": as_dict(params),
        "versions": package_versions(),
    }
    batches = encoded_batches(vae.encoder, prepared_dir, params.encode.batch_size)
    return write_latents(out_dir, batches, vae.latent_dim, metadata)
