"""The trainer: one gradient step on the VAE's objective, the training policy around it, and
the optimizer that takes the steps.

The model (pipeline.model.vae) says what the objective is; the trainer decides how it is
minimised: the weight on D at each step (a number, or the KL warm-up's variable), the
article's "aggressive φ" (k proxy steps before each model step) and the score-function
estimator's baseline. It is a Keras model wrapping the VAE so that `fit` and its callbacks
(back-ups, early stopping) run as they do for any Keras model; the VAE alone is saved.
"""

import keras
import tensorflow as tf
from keras import ops

from pipeline.platform.hardware import step_outputs
from pipeline.platform.params.config import TrainConfig


class Trainer(keras.Model):
    """Fits `vae` by minimising `vae.objective(x, kl_weight)`.

    Logged metrics (nats per example): U (the SUBO, always with weight 1 on D), D and the
    reconstruction term, on the fit batches and (as val_*) on the validation batches.

    Args:
        vae: the model to fit.
        kl_weight: the weight on D' (a number, or a scalar variable a schedule moves, e.g.
            `KLWarmup.weight`); None: the loss config's β.
        phi_steps: φ steps per θ step; 1 updates both together.
    """

    def __init__(self, vae, kl_weight=None, phi_steps: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.vae, self.kl_weight, self.phi_steps = vae, kl_weight, phi_steps
        # Running mean of the reconstruction surprisal: the score-function baseline b.
        self.baseline = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="baseline",
            dtype="float32",
            aggregation="mean",
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("U", "D", "reconstruction")}
        self.build()  # fit's back-ups and restores need a built model

    def build(self, input_shape=None):
        # The VAE is built when constructed (its networks are functional models).
        self.built = True

    def call(self, x, training=False):
        return self.vae(x, training=training)

    def _step(self, x, variables):
        """One optimizer update of `variables` on the objective of batch x; its per-example terms."""
        # Replicas' gradients are summed, so each replica's mean is divided by their number;
        # scale_loss is mixed_float16's loss scaling (a no-op otherwise).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        baseline = self.baseline if self.vae.config.loss.score_baseline else 0.0
        with tf.GradientTape() as tape:
            objective = self.vae.objective(x, training=True, kl_weight=self.kl_weight, baseline=baseline)
            scaled = self.optimizer.scale_loss(objective.loss / replicas)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return objective.terms

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        if not self.optimizer.built:  # φ and θ steps update subsets: build on all of them
            self.optimizer.build(self.trainable_weights)
        if self.phi_steps == 1:
            terms = self._step(x, self.trainable_weights)
        else:  # the article's "aggressive φ": k proxy steps, then one model step
            for _ in range(self.phi_steps):
                self._step(x, self.vae.phi_weights)
            terms = self._step(x, self.vae.theta_weights)
        self.baseline.assign(0.9 * self.baseline + 0.1 * ops.mean(terms["reconstruction"]))
        return self._update_trackers(terms)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._update_trackers(self.vae.subo_terms(x))

    def _update_trackers(self, terms) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return step_outputs({name: tracker.result() for name, tracker in self.trackers.items()})

    @property
    def metrics(self):
        return list(self.trackers.values())


OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


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
