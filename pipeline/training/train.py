"""Fit the VAE on the prepared train split and save it.

Outputs under model_dir: the model bundle (pipeline.model.bundle) and live/ (dvclive per-epoch
metrics). While training, backup/ holds the last completed epoch (weights, optimizer state
and the curves so far, backup/live): a killed run resumes from it, and only a finished run
replaces the previous outputs.

The walk of one run: the distribution strategy first (MultiWorkerMirroredStrategy must
come before any other TensorFlow work), then every `auto` knob resolved in one step
(`pipeline.training.resolve_run.resolve_run`), then the inputs, the model, the fit, the bundle.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.data.manifest import Manifest
from pipeline.data.prepared import (
    PREPROCESSING_FILE,
    Split,
    fixed_inputs,
    load_split,
    seeded_rows,
    validation_rows,
)
from pipeline.model.bundle import save_bundle
from pipeline.model.diagnostics import active_units, collapse_warning
from pipeline.model.networks import build_vae
from pipeline.model.resolve_model import check_model_fits_data
from pipeline.model.vae_config import TrainingPlan
from pipeline.platform.choices import records, summary
from pipeline.platform.config import LossConfig, ModelConfig, Params, TrainConfig, leaf_keys
from pipeline.platform.engine import RayEngine, open_engine, require_shared
from pipeline.platform.errors import PipelineError
from pipeline.platform.hardware import (
    cpu_flags,
    device_summary,
    distribution_strategy,
    gpu_capabilities,
    gpu_count,
    is_chief,
    limit_threads,
    onednn_enabled,
    share_gpus,
)
from pipeline.platform.io import Publication, scratch_dir
from pipeline.training import feed
from pipeline.training.callbacks import KLWarmup, LiveLogger, NonFiniteObjective, StopOnNonFinite
from pipeline.training.resolve_run import Machine, TrainingRun, resolve_distribution, resolve_run

log = logging.getLogger(__name__)
# Every knob `train` takes, as params.yaml keys: dvc.yaml's train stage lists exactly these
# (tests/test_dvc_yaml.py).
TRAIN_PARAMS = (
    "seed",
    "data.validation_fraction",
    "data.binarize",
    *leaf_keys(ModelConfig, "model."),
    *leaf_keys(LossConfig, "loss."),
    *leaf_keys(TrainConfig, "train."),
    "cluster.engine",
    "cluster.address",
)  # not the timeouts: they change no result (config.NO_RESULT)
PUBLICATION = "train"  # the bundle and the curves in model_dir, published together (pipeline.platform.io)
# After training, latent activity is measured on at most about this many validation examples
# (a variance per latent dimension: more would only cost memory on large data).
ACTIVITY_EXAMPLES = 10_000
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def from_params(params: Params, *, prepared_dir, model_dir, callbacks: tuple = ()) -> dict:
    """The stage's recipe: the params it reads, passed on (stages/train.py and pipeline.runner)."""
    arguments = {
        "prepared_dir": prepared_dir,
        "model_dir": model_dir,
        "model": params.model,
        "loss": params.loss,
        "training": params.train,
        "validation_fraction": params.data.validation_fraction,
        "binarize": params.data.binarize,
        "seed": params.seed,
    }
    if params.cluster.engine == "ray":
        if callbacks:  # Keras callbacks made here do not travel to the workers
            raise PipelineError("extra training callbacks run with cluster.engine: local only")
        with open_engine(params.cluster) as engine:
            return train_on_ray(engine, **arguments)
    return train(**arguments, callbacks=callbacks)


def train_on_ray(engine: RayEngine, *, prepared_dir, model_dir, training: TrainConfig, **arguments) -> dict:
    """`train` on train.workers Ray Train workers, one MultiWorkerMirroredStrategy replica
    each (Ray sets TF_CONFIG; one worker trains as `train` does here, on its node's GPUs);
    the first worker is the chief and publishes the model, as `train` does. The last
    epoch's logs."""
    Publication(model_dir, PUBLICATION).recover()  # here, once: the workers never clean up (they would race)
    with scratch_dir(
        model_dir, clear_stale=True
    ) as storage:  # Ray Train's records and the logs, removed after
        storage = engine.shared(storage)
        config = {
            **arguments,
            "prepared_dir": str(engine.shared(prepared_dir)),
            "model_dir": str(engine.shared(model_dir)),
            "training": training,
        }
        engine.train(
            _train_worker, {"train": config, "logs": str(storage / "logs.json")}, training.workers, storage
        )
        return json.loads((storage / "logs.json").read_text(encoding="utf-8"))


def _train_worker(config: dict) -> None:
    """One Ray Train worker: a fresh process on some node of the cluster."""
    import ray
    import ray.train

    limit_threads(int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    require_shared(config["train"]["prepared_dir"], "the prepared data")
    logs = train(**config["train"], launched=True)
    if ray.train.get_context().get_world_rank() == 0:  # the chief: the one whose model is kept
        Path(config["logs"]).write_text(json.dumps(logs), encoding="utf-8")


def train(
    *,
    prepared_dir: str | Path,
    model_dir: str | Path,
    model: ModelConfig,
    loss: LossConfig,
    training: TrainConfig,
    validation_fraction: float,
    binarize: str,
    seed: int,
    callbacks: tuple = (),
    launched: bool = False,
) -> dict:
    """Train on data/prepared; write the model bundle and live/ under model_dir.

    A process a launcher started (train_on_ray) leaves clean-up to the launcher: the other
    workers' scratch would look stale to it. Workers started by hand under multi_worker
    leave it to the chief's publication.

    Args:
        prepared_dir: the prepared data.
        model_dir: where the bundle and live/ go (data/model).
        model, loss, training: the params' blocks.
        validation_fraction, binarize, seed: the data and seed params training records.
        callbacks: extra Keras callbacks (benchmarks use one to score the test split every epoch).
        launched: this process is one of the workers a launcher started.

    Returns:
        The last epoch's logs.
    """
    if keras.backend.backend() != "tensorflow":
        raise PipelineError(f"KERAS_BACKEND must be 'tensorflow'. Got {keras.backend.backend()!r} instead.")
    share_gpus()
    # First: MultiWorkerMirroredStrategy must come before any other TensorFlow work.
    distribution = resolve_distribution(training.distribution, gpu_count(), training.workers)
    alone = not launched and distribution.value != "multi_worker"
    if alone:
        Publication(model_dir, PUBLICATION).recover()  # what a killed run of this stage left
    strategy = distribution_strategy(distribution.value)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    manifest = Manifest.read(prepared_dir)
    split = load_split(prepared_dir, "train", manifest)
    # The fit and validation row indices, memory-mapped: memory stays flat whatever the rows.
    with scratch_dir(model_dir, clear_stale=alone) as scratch:  # and what a killed run left
        fit_rows, val_rows = validation_rows(split.y, validation_fraction, seed, scratch)
        machine = Machine(
            frozenset(cpu_flags()), tuple(gpu_capabilities()), strategy.num_replicas_in_sync, onednn_enabled()
        )
        resolved, choices = resolve_run(
            model,
            loss,
            training,
            manifest,
            fit_rows=len(fit_rows),
            machine=machine,
            distribution=distribution,
            validation_fraction=validation_fraction,
            binarize=binarize,
            seed=seed,
        )
        check_model_fits_data(resolved.model, manifest, prepared_dir)
        log.info("%s; precision policy: %s", device_summary(strategy), resolved.train.precision)
        log.info("choices: %s", summary(choices))
        with _precision_policy(resolved.train.precision):
            inputs = _Inputs.of(resolved, split, fit_rows, val_rows)
            return _fit(
                resolved,
                choices,
                manifest,
                inputs,
                Path(prepared_dir),
                Path(model_dir),
                strategy,
                list(callbacks),
            )


@contextlib.contextmanager
def _precision_policy(precision: str):
    """Keras' global dtype policy for the run; the policy is process-wide: leave it as it was."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@dataclass(frozen=True)
class _Inputs:
    """The fit and validation batches of the prepared train split, and the fixed validation
    examples scored for S_K every epoch (None when there are none)."""

    fit: tf.data.Dataset
    validation: tf.data.Dataset | None
    bound_x: np.ndarray | None

    @classmethod
    def of(cls, run: TrainingRun, split: Split, fit_rows: np.ndarray, val_rows: np.ndarray) -> "_Inputs":
        read = {"seed": run.seed, "in_memory": run.train.input == "memory", "binarize": run.binarize}
        # Endless, so that an epoch may be more than a pass; batches run across passes.
        fit = feed.batches(split, fit_rows, run.train.batch_size, shuffle=True, **read)
        if not len(val_rows):
            return cls(fit, None, None)
        bound_rows = val_rows[seeded_rows(len(val_rows), run.train.bound_examples, run.seed)]
        bound_x = (
            fixed_inputs(split, bound_rows, run.binarize, run.seed) if run.train.bound_examples else None
        )
        return cls(fit, feed.batches(split, val_rows, run.train.batch_size, **read), bound_x)


def _fit(
    run: TrainingRun,
    choices: dict,
    manifest: Manifest,
    inputs: _Inputs,
    prepared_dir: Path,
    model_dir: Path,
    strategy: tf.distribute.Strategy,
    extra: list,
) -> dict:
    cfg = run.train
    if run.loss.kl_warmup_epochs > cfg.epochs:
        log.warning(
            "loss.kl_warmup_epochs (%d) is longer than train.epochs (%d): the weight on D "
            "never reaches loss.beta",
            run.loss.kl_warmup_epochs,
            cfg.epochs,
        )
    with strategy.scope():
        vae = build_vae(manifest.feature_shape, run.model, run.loss, seed=run.seed)
        warmup = KLWarmup(run.loss.beta, run.loss.kl_warmup_epochs)  # the schedule the train step reads
        updates = run.updates_per_epoch * (1 if cfg.phi_steps == 1 else cfg.phi_steps + 1)
        vae.compile(
            optimizer=make_optimizer(cfg, updates),
            steps_per_execution=cfg.steps_per_execution,
            jit_compile=cfg.jit_compile,
        )
        vae.plan = TrainingPlan(warmup.weight, cfg.phi_steps)
        if vae.pseudo_inputs is not None:  # a VampPrior starts on training rows
            batches = math.ceil(run.model.prior_components / cfg.batch_size)
            vae.start_prior_at(np.concatenate([b.numpy() for b in inputs.fit.take(batches)]))
    chief = is_chief(strategy)
    # Another worker's backup and bundle are its own temporaries, removed however it ends.
    with contextlib.ExitStack() as temporaries:
        backup = model_dir / "backup" if chief else _temporary(temporaries, "vae-worker-backup-")
        resuming = _prepare_backup(backup, _run_fingerprint(run, manifest, choices))
        history = _fit_logged(vae, run, inputs, backup, resuming, [warmup, *extra])
        if inputs.validation is not None:
            _report_activity(vae, inputs.validation.take(math.ceil(ACTIVITY_EXAMPLES / cfg.batch_size)))
        bundle = (prepared_dir / PREPROCESSING_FILE, manifest, records(choices), run.as_params())
        if chief:  # the bundle and the curves replace the previous ones all together (pipeline.platform.io)
            with Publication(model_dir, PUBLICATION).staged() as staging:
                save_bundle(vae, staging, *bundle)
                shutil.copytree(
                    backup / "live", staging / "live"
                )  # copied: a kill before the publish can resume
            shutil.rmtree(backup, ignore_errors=True)  # published: nothing left to resume
        else:  # saving a distributed model is collective: every worker saves, only the chief's copy is kept
            save_bundle(vae, _temporary(temporaries, "vae-worker-bundle-"), *bundle)
    return {key: float(values[-1]) for key, values in history.history.items()}


def _temporary(stack: contextlib.ExitStack, prefix: str) -> Path:
    """A temporary directory that `stack` removes when it closes."""
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


def _fit_logged(vae, run: TrainingRun, inputs: _Inputs, backup: Path, resuming: bool, extra: list):
    """vae.fit with the run's callbacks; the curves grow beside the backup and are published
    with the model: a failed run leaves the previous live/ as it was, a resumed one keeps
    every earlier epoch's row."""
    from dvclive import Live

    cfg = run.train
    callbacks = _callbacks(run.loss, cfg, backup, has_validation=inputs.validation is not None)
    with Live(str(backup / "live"), resume=resuming, save_dvc_exp=False, dvcyaml=None) as live:
        if resuming:
            done = json.loads((backup / "training_metadata.json").read_text(encoding="utf-8"))["epoch"]
            log.info("resuming from %s at epoch %d of %d", backup, done + 1, cfg.epochs)
        logger = LiveLogger(
            live, run.updates_per_epoch * cfg.batch_size, inputs.bound_x, cfg.importance_samples
        )
        try:
            return vae.fit(
                inputs.fit,
                validation_data=inputs.validation,
                epochs=cfg.epochs,
                steps_per_epoch=run.updates_per_epoch,
                shuffle=False,  # the tf.data pipeline shuffles, seeded
                callbacks=[*callbacks, logger, *extra],
                verbose=1 if sys.stdout.isatty() else 2,
            )
        except NonFiniteObjective as error:
            raise PipelineError(
                f"training diverged: {error}; the last good epoch is kept in {backup} "
                "(lower train.learning_rate or set train.clipnorm, then re-run)"
            ) from None


def make_optimizer(cfg: TrainConfig, updates_per_epoch: int) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[cfg.optimizer](
        learning_rate=learning_rate(cfg, updates_per_epoch),
        **({"clipnorm": cfg.clipnorm} if cfg.clipnorm else {}),
    )


def learning_rate(
    cfg: TrainConfig, updates_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """train.learning_rate under train.lr_schedule (cosine: to 0 over all epochs; warmup_cosine:
    a linear ramp from 0 over the first epoch, then cosine)."""
    total = cfg.epochs * updates_per_epoch
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    if cfg.lr_schedule == "warmup_cosine":
        warmup = min(updates_per_epoch, total - 1)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=cfg.learning_rate, warmup_steps=warmup
        )
    return cfg.learning_rate


def _report_activity(vae, validation_data: tf.data.Dataset) -> None:
    """Log the active latent units on (the first batches of) the validation examples; warn on collapse."""
    z_mean = np.concatenate([vae.predict_posterior(batch.numpy())[0] for batch in validation_data])
    active = active_units(np.var(np.asarray(z_mean, np.float64), axis=0))
    log.info("active latent units on validation examples: %d of %d", active["count"], active["of"])
    if warning := collapse_warning(active):
        log.warning("%s", warning)


def _callbacks(loss: LossConfig, cfg: TrainConfig, backup: Path, has_validation: bool) -> list:
    callbacks = [
        StopOnNonFinite(),
        # double_checkpoint: a kill while saving leaves the previous epoch's copy
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False, double_checkpoint=True),
    ]
    if cfg.early_stopping_patience and has_validation:
        # Not during the KL warm-up: U (weight 1 on D) is not what those epochs minimise.
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_U",
                mode="min",
                restore_best_weights=True,
                patience=cfg.early_stopping_patience,
                start_from_epoch=loss.kl_warmup_epochs,
            )
        )
    return callbacks


def _run_fingerprint(run: TrainingRun, manifest: Manifest, choices: dict) -> str:
    """What a backup must match to be resumed: the data, every resolved input of the run,
    and the rules that resolved them (rules may change between versions of this code)."""
    text = json.dumps(
        {"run": dataclasses.asdict(run), "data": manifest.fingerprint, "choices": records(choices)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _prepare_backup(backup: Path, fingerprint: str) -> bool:
    """True when backup/ holds a completed epoch of this very run; otherwise start it afresh."""
    stamp = backup / "run_fingerprint.txt"
    resumable = (
        (backup / "training_metadata.json").is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8") == fingerprint
    )
    if not resumable:
        shutil.rmtree(backup, ignore_errors=True)
        backup.mkdir(parents=True)
        stamp.write_text(fingerprint, encoding="utf-8")
    return resumable
