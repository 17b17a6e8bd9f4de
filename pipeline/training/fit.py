"""One fit of a compiled trainer: the run's batches, its callbacks and curves (dvclive,
beside the backup), and what the fitted model's latent units carry."""

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.data.prepared import Split, fixed_inputs, seeded_rows
from pipeline.model.diagnostics import active_units, collapse_warning
from pipeline.platform.errors import PipelineError
from pipeline.platform.params.config import LossConfig, TrainConfig
from pipeline.training import feed
from pipeline.training.callbacks import LiveLogger, NonFiniteObjective, StopOnNonFinite
from pipeline.training.resolve_run import TrainingRun
from pipeline.training.trainer import Trainer

log = logging.getLogger(__name__)
# After training, latent activity is measured on at most about this many validation examples
# (a variance per latent dimension: more would only cost memory on large data).
ACTIVITY_EXAMPLES = 10_000


@dataclass(frozen=True)
class Inputs:
    """The fit and validation batches of the prepared train split, and the fixed validation
    examples scored for S_K every epoch (None when there are none)."""

    fit: tf.data.Dataset
    validation: tf.data.Dataset | None
    bound_x: np.ndarray | None

    @classmethod
    def of(cls, run: TrainingRun, split: Split, fit_rows: np.ndarray, val_rows: np.ndarray) -> "Inputs":
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


def fit_logged(trainer: Trainer, run: TrainingRun, inputs: Inputs, backup: Path, resuming: bool, extra: list):
    """trainer.fit with the run's callbacks; the curves grow beside the backup and are published
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
            return trainer.fit(
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


def report_activity(vae, validation_data: tf.data.Dataset) -> None:
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
