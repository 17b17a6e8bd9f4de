"""Fit the VAE on the prepared train split and save it.

Outputs: model.keras (the whole VAE, optimizer included), encoder.keras (built-in layers
only, loads with plain Keras), and dvclive per-epoch metrics for train and validation.
"""

import logging
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import Params
from pipeline.data import load_split, read_manifest, validation_rows
from pipeline.errors import PipelineError
from pipeline.io import atomic_path
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


def make_dataset(x: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Batches of x; reshuffled every epoch with a seeded order when `seed` is given."""
    ds = tf.data.Dataset.from_tensor_slices(x)
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
    if params.model.architecture == "conv" and len(manifest["example_shape"]) != 3:
        raise PipelineError(f"model.architecture 'conv' needs H×W×C images, but {prepared_dir} holds "
                            f"examples of shape {manifest['example_shape']}; use 'mlp'")
    with distribution_strategy().scope():
        vae = build_vae(manifest["example_shape"], params.model, params.loss,
                        phi_steps=params.train.phi_steps, seed=params.seed)
        vae.compile(optimizer=keras.optimizers.Adam(params.train.learning_rate))

    model_dir = Path(model_dir)
    with Live(str(model_dir / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        history = vae.fit(
            make_dataset(x[fit_rows], params.train.batch_size, params.seed),
            validation_data=make_dataset(x[val_rows], params.train.batch_size, None) if len(val_rows) else None,
            epochs=params.train.epochs,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            callbacks=[KLWarmup(params.loss.kl_warmup_epochs), LiveLogger(live, len(fit_rows))],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    with atomic_path(model_dir / "model.keras") as tmp:
        vae.save(tmp)
    with atomic_path(model_dir / "encoder.keras") as tmp:
        vae.encoder.save(tmp)
    return {key: float(values[-1]) for key, values in history.history.items()}
