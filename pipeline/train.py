"""Fit the VAE on the prepared train split and save it.

Outputs: model.keras (the whole VAE, optimizer included), encoder.keras (built-in layers
only, loads with plain Keras), the data's preprocessing and manifest (for encoding new
data), and dvclive per-epoch metrics for train and validation.
"""

import logging
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import Params
from pipeline.data import binarize_sample, load_split, read_manifest, validation_rows
from pipeline.errors import PipelineError
from pipeline.encode import DATA_MANIFEST_FILE, PREPROCESSING_FILE
from pipeline.io import atomic_path, write_json
from pipeline.model import KLWarmup, build_vae

log = logging.getLogger(__name__)


class LiveLogger(keras.callbacks.Callback):
    """Log every epoch's metrics to dvclive as train/<name> and validation/<name>."""

    def __init__(self, live, examples_per_epoch: int):
        super().__init__()
        self.live = live
        self.examples_per_epoch = examples_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.live.log_metric(f"{split}/{name}", float(value))
        self.live.log_metric("train/samples_per_second", self.examples_per_epoch / seconds)
        self.live.next_step()


def make_dataset(x: np.ndarray, batch_size: int, seed: int | None, binarize: bool = False) -> tf.data.Dataset:
    """Batches of x; reshuffled every epoch in a seeded order when `seed` is given.

    binarize: draw x_b ~ Bernoulli(x) afresh for every batch (dynamic binarization).
    """
    ds = tf.data.Dataset.from_tensor_slices(x)
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if binarize:
        ds = ds.map(lambda b: tf.cast(tf.random.uniform(tf.shape(b), seed=seed) < b, b.dtype),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def distribution_strategy() -> tf.distribute.Strategy:
    """Every visible GPU through MirroredStrategy; the default strategy otherwise."""
    gpus = tf.config.list_physical_devices("GPU")
    log.info("devices: %s", ", ".join(d.name for d in gpus) or "CPU only")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def train(params: Params, prepared_dir: str | Path, model_dir: str | Path) -> dict:
    """Train on data/prepared; write model.keras, encoder.keras and live/ under model_dir."""
    from dvclive import Live

    if keras.backend.backend() != "tensorflow":
        raise PipelineError(f"KERAS_BACKEND must be 'tensorflow'. Got {keras.backend.backend()!r} instead.")
    keras.utils.set_random_seed(params.seed)
    manifest = read_manifest(prepared_dir)
    split = load_split(prepared_dir, "train")
    x = np.asarray(split.x)
    fit_rows, val_rows = validation_rows(split.y, params.data.validation_fraction, params.seed)

    if params.loss.kl_warmup_epochs > params.train.epochs:
        log.warning("loss.kl_warmup_epochs (%d) is longer than train.epochs (%d): the weight on D "
                    "never reaches loss.beta", params.loss.kl_warmup_epochs, params.train.epochs)
    _check_model_fits_data(params, manifest, prepared_dir)
    with distribution_strategy().scope():
        vae = build_vae(manifest["example_shape"], params.model, params.loss,
                        phi_steps=params.train.phi_steps, seed=params.seed)
        vae.compile(optimizer=keras.optimizers.Adam(params.train.learning_rate))

    model_dir = Path(model_dir)
    dynamic = params.data.binarize == "dynamic"
    x_val = binarize_sample(x[val_rows], params.seed) if dynamic else x[val_rows]
    with Live(str(model_dir / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        history = vae.fit(
            make_dataset(x[fit_rows], params.train.batch_size, params.seed, binarize=dynamic),
            validation_data=make_dataset(x_val, params.train.batch_size, None) if len(val_rows) else None,
            epochs=params.train.epochs,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            callbacks=[KLWarmup(params.loss.kl_warmup_epochs), LiveLogger(live, len(fit_rows))],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    with atomic_path(model_dir / "model.keras") as tmp:
        vae.save(tmp)
    with atomic_path(model_dir / "encoder.keras") as tmp:
        vae.encoder.save(tmp)
    # What `python -m pipeline.encode` needs to preprocess new data as this model's was.
    with atomic_path(model_dir / PREPROCESSING_FILE) as tmp:
        shutil.copyfile(Path(prepared_dir) / "preprocessing.npz", tmp)
    write_json(model_dir / DATA_MANIFEST_FILE, manifest)
    return {key: float(values[-1]) for key, values in history.history.items()}


def _check_model_fits_data(params: Params, manifest: dict, prepared_dir) -> None:
    shape, (lo, hi) = manifest["example_shape"], manifest["value_range"]
    if params.model.architecture == "conv" and len(shape) != 3:
        raise PipelineError(f"model.architecture 'conv' needs H×W×C images, but {prepared_dir} holds "
                            f"examples of shape {shape}; use 'mlp'")
    if params.model.likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise PipelineError(f"model.likelihood 'bernoulli' needs inputs in [0, 1], but {prepared_dir} holds "
                            f"values in [{lo:.3g}, {hi:.3g}] (data.scaling "
                            f"{manifest['preprocessing']['scaling']!r}); use model.likelihood: gaussian "
                            "or data.scaling: unit")
