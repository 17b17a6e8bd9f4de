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
import json
import logging
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.data.manifest import Manifest
from pipeline.data.prepared import (
    PREPROCESSING_FILE,
    load_split,
    validation_rows,
)
from pipeline.model.bundle import save_bundle
from pipeline.model.networks import build_vae
from pipeline.model.resolve_model import check_model_fits_data
from pipeline.platform.choices import records, summary
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
from pipeline.platform.params.config import LossConfig, ModelConfig, Params, TrainConfig
from pipeline.training.backup import prepare_backup, run_fingerprint, temporary
from pipeline.training.callbacks import KLWarmup
from pipeline.training.fit import ACTIVITY_EXAMPLES, Inputs, fit_logged, report_activity
from pipeline.training.resolve_run import Machine, TrainingRun, resolve_distribution, resolve_run
from pipeline.training.trainer import Trainer, make_optimizer

log = logging.getLogger(__name__)
# Every knob `train` takes, as params.yaml keys: dvc.yaml's train stage lists exactly these
# (tests/pipeline/test_dvc_yaml.py). The model, loss and train blocks whole: train reads every knob of
# them, so a knob added there re-runs it with no edit here or in dvc.yaml. Not the cluster's
# timeouts: they change no result (param_watch.NO_RESULT).
TRAIN_PARAMS = (
    "seed",
    "data.validation_fraction",
    "data.binarize",
    "model",
    "loss",
    "train",
    "cluster.engine",
    "cluster.address",
)
PUBLICATION = "train"  # the bundle and the curves in model_dir, published together (pipeline.platform.io)


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
    """Train on data/prepared; write the model bundle and live/ under model_dir; return the
    last epoch's logs. callbacks: extra Keras callbacks (benchmarks score the test split with
    one); launched: this process is one of the workers a launcher started (see `_start`)."""
    distribution, strategy, alone = _start(training, seed, model_dir, launched)
    manifest = Manifest.read(prepared_dir)
    split = load_split(prepared_dir, "train", manifest)
    with scratch_dir(model_dir, clear_stale=alone) as scratch:  # and what a killed run left
        # memory-mapped row indices: memory stays flat whatever the rows
        fit_rows, val_rows = validation_rows(split.y, validation_fraction, seed, scratch)
        resolved, choices = resolve_run(
            model,
            loss,
            training,
            manifest,
            fit_rows=len(fit_rows),
            machine=_machine(strategy),
            distribution=distribution,
            validation_fraction=validation_fraction,
            binarize=binarize,
            seed=seed,
        )
        _check_and_log(resolved, choices, manifest, prepared_dir, strategy)
        with _precision_policy(resolved.train.precision):
            inputs = Inputs.of(resolved, split, fit_rows, val_rows)
            return _fit(
                resolved, choices, manifest, inputs, Path(prepared_dir), Path(model_dir), strategy, callbacks
            )


def _start(training: TrainConfig, seed: int, model_dir, launched: bool):
    """The process made ready for the run, in the order TensorFlow needs: train.distribution's
    choice, its strategy, and whether this process is the run alone (it then recovers what a
    killed run of this stage left, and clears its stale scratch). A worker a launcher
    (train_on_ray) started leaves clean-up to the launcher: the other workers' scratch would
    look stale to it; workers started by hand under multi_worker leave it to the chief's
    publication."""
    if keras.backend.backend() != "tensorflow":
        raise PipelineError(f"KERAS_BACKEND must be 'tensorflow'. Got {keras.backend.backend()!r} instead.")
    share_gpus()
    # First: MultiWorkerMirroredStrategy must come before any other TensorFlow work.
    distribution = resolve_distribution(training.distribution, gpu_count(), training.workers)
    alone = not launched and distribution.value != "multi_worker"
    if alone:
        Publication(model_dir, PUBLICATION).recover()
    strategy = distribution_strategy(distribution.value)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    return distribution, strategy, alone


def _check_and_log(run: TrainingRun, choices: dict, manifest: Manifest, prepared_dir, strategy) -> None:
    """Stop before training a model the data cannot feed; log the device and every choice."""
    check_model_fits_data(run.model, manifest, prepared_dir)
    log.info("%s; precision policy: %s", device_summary(strategy), run.train.precision)
    log.info("choices: %s", summary(choices))


def _machine(strategy: tf.distribute.Strategy) -> Machine:
    """What this machine offers the run's `auto` rules."""
    replicas = strategy.num_replicas_in_sync
    return Machine(frozenset(cpu_flags()), tuple(gpu_capabilities()), replicas, onednn_enabled())


def _fit(
    run: TrainingRun,
    choices: dict,
    manifest: Manifest,
    inputs: Inputs,
    prepared_dir: Path,
    model_dir: Path,
    strategy: tf.distribute.Strategy,
    extra: tuple,
) -> dict:
    """Build, fit and save the run's model; the last epoch's logs."""
    vae, trainer, warmup = _compiled(run, manifest, inputs, strategy)
    chief = is_chief(strategy)
    # Another worker's backup and bundle are its own temporaries, removed however it ends.
    with contextlib.ExitStack() as temporaries:
        backup = model_dir / "backup" if chief else temporary(temporaries, "vae-worker-backup-")
        resuming = prepare_backup(backup, run_fingerprint(run, manifest, choices))
        history = fit_logged(trainer, run, inputs, backup, resuming, [warmup, *extra])
        if inputs.validation is not None:
            report_activity(vae, inputs.validation.take(math.ceil(ACTIVITY_EXAMPLES / run.train.batch_size)))
        bundle = (prepared_dir / PREPROCESSING_FILE, manifest, records(choices), run.as_params())
        if chief:  # the bundle and the curves replace the previous ones all together (pipeline.platform.io)
            with Publication(model_dir, PUBLICATION).staged() as staging:
                save_bundle(vae, staging, *bundle)
                # copied: a kill before the publish can resume
                shutil.copytree(backup / "live", staging / "live")
            shutil.rmtree(backup, ignore_errors=True)  # published: nothing left to resume
        else:  # saving a distributed model is collective: every worker saves, only the chief's copy is kept
            save_bundle(vae, temporary(temporaries, "vae-worker-bundle-"), *bundle)
    return {key: float(values[-1]) for key, values in history.history.items()}


def _compiled(run: TrainingRun, manifest: Manifest, inputs: Inputs, strategy: tf.distribute.Strategy):
    """The run's VAE, its trainer compiled with the run's optimizer, and the KL warm-up that
    sets the trainer's weight on D: made in the strategy's scope."""
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
        warmup = KLWarmup(run.loss.beta, run.loss.kl_warmup_epochs)
        trainer = Trainer(vae, warmup.weight, cfg.phi_steps)
        updates = run.updates_per_epoch * (1 if cfg.phi_steps == 1 else cfg.phi_steps + 1)
        trainer.compile(
            optimizer=make_optimizer(cfg, updates),
            steps_per_execution=cfg.steps_per_execution,
            jit_compile=cfg.jit_compile,
        )
        vae.compile(optimizer=trainer.optimizer)  # so that model.keras saves the optimizer's state too
        if vae.pseudo_inputs is not None:  # a VampPrior starts on training rows
            batches = math.ceil(run.model.prior_components / cfg.batch_size)
            vae.start_prior_at(np.concatenate([b.numpy() for b in inputs.fit.take(batches)]))
    return vae, trainer, warmup


@contextlib.contextmanager
def _precision_policy(precision: str):
    """Keras' global dtype policy for the run; the policy is process-wide: leave it as it was."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
