"""Fit the VAE on the prepared train split and save it.

Outputs under model_dir: model.keras (the whole VAE, optimizer included), encoder.keras
(built-in layers only, loads with plain Keras), the data's preprocessing and manifest (for
encoding new data), and live/ (dvclive per-epoch metrics). While training, backup/ holds
the last completed epoch (weights, optimizer state and the curves so far, backup/live):
a killed run resumes from it, and only a finished run replaces the previous outputs.
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import auto, feed
from pipeline.bundle import save_bundle
from pipeline.config import LossConfig, ModelConfig, TrainConfig, leaf_keys
from pipeline.data import fixed_inputs, load_split, read_manifest, seeded_rows, validation_rows
from pipeline.diagnostics import BoundEstimator, active_units, collapse_warning
from pipeline.errors import PipelineError
from pipeline.io import replace_dir, scratch_dir
from pipeline.model import KLWarmup, build_vae

log = logging.getLogger(__name__)
# Every knob `train` takes, as params.yaml keys: dvc.yaml's train stage lists exactly these
# (tests/test_dvc_yaml.py), and a backup is resumed only by a run that agrees on all of them.
TRAIN_PARAMS = ("seed", "data.validation_fraction", "data.binarize", *leaf_keys(ModelConfig, "model."),
                *leaf_keys(LossConfig, "loss."), *leaf_keys(TrainConfig, "train."))
# An epoch is one pass over the fit examples, but at least this many updates: on a table of
# a hundred rows one pass is two updates, and per-epoch work (validation, backup, logging,
# early stopping's patience) would then dominate and stop training after a few dozen updates.
MIN_UPDATES_PER_EPOCH = 50
# After training, latent activity is measured on at most about this many validation examples
# (a variance per latent dimension: more would only cost memory on large data).
ACTIVITY_EXAMPLES = 10_000
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}


class NonFiniteObjective(RuntimeError):
    pass


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise as soon as U is NaN or infinite (Keras' TerminateOnNaN watches a `loss` we do not log)."""

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("U")
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteObjective(f"U became {float(value)} at batch {batch}")


class LiveLogger(keras.callbacks.Callback):
    """Per epoch to dvclive: train/<metric>, validation/<metric>, learning rate, samples/s,
    and bound/U, bound/S_K, bound/E_K on fixed validation examples when `bound_x` is given.

    The bound figures answer the article's "we don't know how good our upper bound is
    during optimization": S_K (K = `bound_samples`) estimates S from above, E_K = U − S_K
    the gap, on the same examples and samples.
    """

    def __init__(self, live, examples_per_epoch: int, bound_x: np.ndarray | None = None, bound_samples: int = 1):
        super().__init__()
        self.live = live
        self.examples_per_epoch = examples_per_epoch
        self.bound_x, self.bound_samples = bound_x, bound_samples

    def on_train_begin(self, logs=None):
        # Smaller batches than evaluate's: this runs beside training, whose memory is held.
        self.bound = (BoundEstimator(self.model, self.bound_samples, decodes_per_batch=1024)
                      if self.bound_x is not None else None)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.live.step = epoch  # one row per epoch, also when a resumed run repeats one
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.live.log_metric(f"{split}/{name}", float(value))
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)  # a variable under tf.distribute
        self.live.log_metric("train/learning_rate", float(rate))
        self.live.log_metric("train/samples_per_second", self.examples_per_epoch / seconds)
        if self.bound is not None:
            figures = self.bound(self.bound_x)
            k = str(self.bound_samples)
            for name, value in (("U", figures["U"]), ("S_K", figures["S_K"][k]), ("E_K", figures["E_K"][k])):
                self.live.log_metric(f"bound/{name}", value)
        self.live.next_step()


def distribution_strategy(kind: str) -> tf.distribute.Strategy:
    """auto: every visible GPU (MirroredStrategy when there are several); multi_worker: TF_CONFIG.

    Created before any other TensorFlow work, as MultiWorkerMirroredStrategy requires.
    """
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise PipelineError("train.distribution 'multi_worker' needs the TF_CONFIG environment variable "
                                "(cluster and task of this worker); see README 'Several machines'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored" or (kind == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def make_optimizer(cfg: TrainConfig, updates_per_epoch: int) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[cfg.optimizer](learning_rate=learning_rate(cfg, updates_per_epoch),
                                     **({"clipnorm": cfg.clipnorm} if cfg.clipnorm else {}))


def learning_rate(cfg: TrainConfig, updates_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """train.learning_rate under train.lr_schedule (cosine: to 0 over all epochs; warmup_cosine:
    a linear ramp from 0 over the first epoch, then cosine)."""
    total = cfg.epochs * updates_per_epoch
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    if cfg.lr_schedule == "warmup_cosine":
        warmup = min(updates_per_epoch, total - 1)
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup,
                                                      warmup_target=cfg.learning_rate, warmup_steps=warmup)
    return cfg.learning_rate


@dataclass(frozen=True)
class _Run:
    """What one training run reads: the arguments of `train`, minus the paths."""

    model: ModelConfig
    loss: LossConfig
    cfg: TrainConfig
    validation_fraction: float
    binarize: str
    seed: int


def train(*, prepared_dir: str | Path, model_dir: str | Path, model: ModelConfig, loss: LossConfig,
          training: TrainConfig, validation_fraction: float, binarize: str, seed: int,
          callbacks: tuple = ()) -> dict:
    """Train on data/prepared; write the model bundle and live/ under model_dir; return the last epoch's logs.

    callbacks: extra Keras callbacks (benchmarks use one to score the test split every epoch).
    """
    if keras.backend.backend() != "tensorflow":
        raise PipelineError(f"KERAS_BACKEND must be 'tensorflow'. Got {keras.backend.backend()!r} instead.")
    run = _Run(model, loss, training, validation_fraction, binarize, seed)
    strategy = distribution_strategy(training.distribution)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    precision, precision_choice = auto.resolve_precision(training.precision, cpu_flags(), gpu_capabilities())
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        # The fit and validation row indices, memory-mapped: memory stays flat whatever the rows.
        with scratch_dir(model_dir) as scratch:
            return _train(run, prepared_dir, Path(model_dir), strategy, precision_choice, list(callbacks), scratch)
    finally:  # the policy is process-wide: leave it as it was
        keras.mixed_precision.set_global_policy(previous_policy)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def gpu_capabilities() -> list[tuple[int, int]]:
    """The CUDA compute capability of every visible GPU."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found


def _train(run: _Run, prepared_dir, model_dir: Path, strategy, precision_choice: dict, extra: list,
           scratch: Path) -> dict:
    from dvclive import Live

    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")]
    log.info("devices: %s; replicas in sync: %d (%s); precision policy: %s", ", ".join(devices),
             strategy.num_replicas_in_sync, type(strategy).__name__, keras.mixed_precision.global_policy().name)

    manifest = read_manifest(prepared_dir)
    fit_data, validation_data, steps, bound_x, input_choice = _datasets(run, prepared_dir, scratch)
    model, model_choices = auto.resolve_model(run.model, manifest)
    cfg, epoch_choice = auto.resolve_epochs(run.cfg, steps)
    cfg, steps, execution_choice = auto.resolve_steps_per_execution(cfg, steps)
    loss, warmup_choice = auto.resolve_warmup(run.loss, cfg.epochs)
    choices = {**manifest.get("choices", {}), **model_choices, **epoch_choice, **warmup_choice,
               **precision_choice, **execution_choice, **input_choice}
    log.info("choices: %s", auto.summary(choices))
    _check_model_fits_data(model, manifest, prepared_dir)
    if loss.kl_warmup_epochs > cfg.epochs:
        log.warning("loss.kl_warmup_epochs (%d) is longer than train.epochs (%d): the weight on D "
                    "never reaches loss.beta", loss.kl_warmup_epochs, cfg.epochs)
    updates = steps * (1 if cfg.phi_steps == 1 else cfg.phi_steps + 1)

    with strategy.scope():
        vae = build_vae(manifest["example_shape"], model, loss, phi_steps=cfg.phi_steps, seed=run.seed)
        vae.compile(optimizer=make_optimizer(cfg, updates), steps_per_execution=cfg.steps_per_execution,
                    jit_compile=cfg.jit_compile)

    chief = is_chief(strategy)
    backup = model_dir / "backup" if chief else Path(tempfile.mkdtemp(prefix="vae-worker-backup-"))
    resuming = _prepare_backup(backup, _run_fingerprint(run, manifest, choices))
    callbacks = _callbacks(loss, cfg, backup, has_validation=validation_data is not None)
    # The curves grow beside the backup and are published with the model: a failed run
    # leaves the previous live/ as it was, a resumed one keeps every earlier epoch's row.
    with Live(str(backup / "live"), resume=resuming, save_dvc_exp=False, dvcyaml=None) as live:
        if resuming:
            done = json.loads((backup / "training_metadata.json").read_text())["epoch"]
            log.info("resuming from %s at epoch %d of %d", backup, done + 1, cfg.epochs)
        try:
            history = vae.fit(
                fit_data, validation_data=validation_data, epochs=cfg.epochs, steps_per_epoch=steps,
                shuffle=False,  # the tf.data pipeline shuffles, seeded
                callbacks=[*callbacks, LiveLogger(live, steps * cfg.batch_size, bound_x, cfg.bound_samples), *extra],
                verbose=1 if sys.stdout.isatty() else 2,
            )
        except NonFiniteObjective as error:
            raise PipelineError(f"training diverged: {error}; the last good epoch is kept in {backup} "
                                "(lower train.learning_rate or set train.clipnorm, then re-run)") from None
    if validation_data is not None:
        _report_activity(vae, validation_data.take(math.ceil(ACTIVITY_EXAMPLES / run.cfg.batch_size)))
    # Every worker saves (saving a distributed model is collective); only the chief's copy is kept.
    save_bundle(vae, model_dir if chief else Path(tempfile.mkdtemp()), Path(prepared_dir) / "preprocessing.npz",
                manifest, choices)
    if chief:
        replace_dir(backup / "live", model_dir / "live")
    shutil.rmtree(backup, ignore_errors=True)  # finished: nothing left to resume
    return {key: float(values[-1]) for key, values in history.history.items()}


def _report_activity(vae, validation_data: tf.data.Dataset) -> None:
    """Log the active latent units on (the first batches of) the validation examples; warn on collapse."""
    z_mean, _ = vae.encoder.predict(validation_data, verbose=0)
    active = active_units(z_mean)
    log.info("active latent units on validation examples: %d of %d", active["count"], active["of"])
    if warning := collapse_warning(active):
        log.warning("%s", warning)


def _datasets(run: _Run, prepared_dir, scratch: Path) -> tuple[tf.data.Dataset, tf.data.Dataset | None, int, np.ndarray | None,
                                               dict]:
    """The fit and validation parts of the prepared train split, the updates per epoch, the
    fixed validation examples scored for S_K each epoch (None when there are none), and
    the train.input choice."""
    split = load_split(prepared_dir, "train")
    fit_rows, val_rows = validation_rows(split.y, run.validation_fraction, run.seed, scratch)
    source, choice = auto.resolve_input(run.cfg.input, len(fit_rows) * split.x[:1].nbytes)
    read = {"seed": run.seed, "in_memory": source == "memory", "binarize": run.binarize}
    # Endless, so that an epoch may be more than a pass; batches run across passes.
    fit = feed.batches(split, fit_rows, run.cfg.batch_size, shuffle=True, **read)
    steps = max(math.ceil(len(fit_rows) / run.cfg.batch_size), MIN_UPDATES_PER_EPOCH)
    if not len(val_rows):
        return fit, None, steps, None, choice
    bound_rows = val_rows[seeded_rows(len(val_rows), run.cfg.bound_examples, run.seed)]
    bound_x = fixed_inputs(split, bound_rows, run.binarize, run.seed) if run.cfg.bound_examples else None
    return fit, feed.batches(split, val_rows, run.cfg.batch_size, **read), steps, bound_x, choice


def _callbacks(loss: LossConfig, cfg: TrainConfig, backup: Path, has_validation: bool) -> list:
    callbacks = [KLWarmup(loss.kl_warmup_epochs), StopOnNonFinite(),
                 # double_checkpoint: a kill while saving leaves the previous epoch's copy
                 keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False, double_checkpoint=True)]
    if cfg.early_stopping_patience and has_validation:
        # Not during the KL warm-up: U (weight 1 on D) is not what those epochs minimise.
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_U", mode="min", restore_best_weights=True,
                                                       patience=cfg.early_stopping_patience,
                                                       start_from_epoch=loss.kl_warmup_epochs))
    return callbacks


def _run_fingerprint(run: _Run, manifest: dict, choices: dict) -> str:
    """What a backup must match to be resumed: the data, every input of the run, and what
    its `auto` knobs became (rules may change between versions of this code)."""
    text = json.dumps({"run": dataclasses.asdict(run), "data": manifest["fingerprint"], "choices": choices},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _prepare_backup(backup: Path, fingerprint: str) -> bool:
    """True when backup/ holds a completed epoch of this very run; otherwise start it afresh."""
    stamp = backup / "run_fingerprint.txt"
    resumable = (backup / "training_metadata.json").is_file() and stamp.is_file() and stamp.read_text() == fingerprint
    if not resumable:
        shutil.rmtree(backup, ignore_errors=True)
        backup.mkdir(parents=True)
        stamp.write_text(fingerprint)
    return resumable


def _check_model_fits_data(model: ModelConfig, manifest: dict, prepared_dir) -> None:
    shape, (lo, hi) = manifest["example_shape"], manifest["value_range"]
    values = math.prod(shape)
    if model.latent_dim > values:
        raise PipelineError(f"model.latent_dim must be at most the number of values per example "
                            f"({values} for {prepared_dir}, shape {shape}). Got {model.latent_dim} instead.")
    if model.architecture == "conv" and len(shape) != 3:
        raise PipelineError(f"model.architecture 'conv' needs H×W×C images, but {prepared_dir} holds "
                            f"examples of shape {shape}; use 'mlp'")
    if model.likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise PipelineError(f"model.likelihood 'bernoulli' needs inputs in [0, 1], but {prepared_dir} holds "
                            f"values in [{lo:.3g}, {hi:.3g}] (data.scaling "
                            f"{manifest['preprocessing']['scaling']!r}); use model.likelihood: gaussian "
                            "or data.scaling: unit")
