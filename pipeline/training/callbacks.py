"""Keras callbacks of a training run: stop on a non-finite U, the per-epoch dvclive log
(with the bound's tightness, S_K and E_K), and the KL warm-up."""

import logging
import math
import time

import keras
import numpy as np

from pipeline.model.diagnostics import BoundEstimator

log = logging.getLogger(__name__)


class NonFiniteObjective(RuntimeError):
    pass


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise as soon as U is NaN or infinite (Keras' TerminateOnNaN watches a `loss` we do not log)."""

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("U")
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteObjective(f"U became {float(value)} at batch {batch}")


# The per-epoch bound (K decodes of each fixed example) takes at most this share of the time
# training has taken: on 64×64×3 photos one evaluation costs about as much as an epoch.
BOUND_TIME_SHARE = 0.1


class LiveLogger(keras.callbacks.Callback):
    """Per epoch to dvclive: train/<metric>, validation/<metric>, learning rate, samples/s,
    and bound/U, bound/S_K, bound/E_K on fixed validation examples when `bound_x` is given.

    The bound figures answer the article's "we don't know how good our upper bound is
    during optimization": S_K (K = `importance_samples`) estimates S from above, E_K = U − S_K
    the gap, on the same examples and samples. They are computed after the first two epochs
    of this process, then after every epoch at which the time they took so far (tracing
    aside) is at most BOUND_TIME_SHARE of the time training took: every epoch for small
    models, every few for large ones.
    """

    def __init__(
        self, live, examples_per_epoch: int, bound_x: np.ndarray | None = None, importance_samples: int = 1
    ):
        super().__init__()
        self.live = live
        self.examples_per_epoch = examples_per_epoch
        self.bound_x, self.importance_samples = bound_x, importance_samples
        self.seconds, self.traced = {"train": 0.0, "bound": 0.0}, False

    def on_train_begin(self, logs=None):
        # Smaller batches than evaluate's: this runs beside training, whose memory is held.
        self.bound = (
            BoundEstimator(self.model.vae, self.importance_samples, decodes_per_batch=1024)
            if self.bound_x is not None
            else None
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.seconds["train"] += seconds
        self.live.step = epoch  # one row per epoch, also when a resumed run repeats one
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.live.log_metric(f"{split}/{name}", float(value))
        # a variable under tf.distribute
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.live.log_metric("train/learning_rate", float(rate))
        self.live.log_metric("train/samples_per_second", self.examples_per_epoch / seconds)
        if self.bound is not None and self.seconds["bound"] <= BOUND_TIME_SHARE * self.seconds["train"]:
            start = time.perf_counter()
            figures = self.bound(self.bound_x)
            k = str(self.importance_samples)
            for name, value in (("U", figures["U"]), ("S_K", figures["S_K"][k]), ("E_K", figures["E_K"][k])):
                self.live.log_metric(f"bound/{name}", value)
            # the first call traces the estimator (as the first epoch does the train step): not its cost
            self.seconds["bound"] += (time.perf_counter() - start) if self.traced else 0.0
            self.traced = True
        self.live.next_step()
        self._log_progress(epoch, time.perf_counter() - self._start)

    def _log_progress(self, epoch: int, seconds: float) -> None:
        """One line per epoch in the stage log: the rate and, from this epoch's time, the most
        time the remaining epochs can take (early stopping may end the run sooner)."""
        total = self.params.get("epochs") or epoch + 1
        left = (total - epoch - 1) * seconds
        log.info(
            "epoch %d/%d: %.0f samples/s, %.1f s; at most %s left",
            epoch + 1,
            total,
            self.examples_per_epoch / seconds,
            seconds,
            _duration(left),
        )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class KLWarmup(keras.callbacks.Callback):
    """The trainer's schedule of the weight on D: β·min(1, t / `epochs`), t in epochs, updated
    by compiled call (update by update without steps_per_execution). A weight held at 0 for
    a whole epoch lets D grow to thousands of nats, which the next epoch must first undo.

    It owns `weight`, the scalar variable the trainer's step reads (`Trainer(vae, weight)`);
    create it in the distribution strategy's scope.
    """

    def __init__(self, beta: float, epochs: int):
        super().__init__()
        self.beta, self.epochs, self.epoch = float(beta), epochs, 0
        self.weight = keras.Variable(self.beta, dtype="float32", trainable=False, name="kl_weight")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.on_train_batch_begin(0)

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps") or 1
        ramp = min(1.0, (self.epoch + batch / steps) / self.epochs) if self.epochs else 1.0
        self.weight.assign(self.beta * ramp)
