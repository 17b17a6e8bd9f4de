"""Training throughput: this pipeline's trainer against the canonical Keras VAE loop.

    .venv/bin/python -m benchmarks.train [--epochs 3] [--precision mixed_bfloat16] [--jit]
        [--steps-per-execution 32]

Both train the conv VAE shape of the canonical Keras example (Conv2D 32 and 64 with stride
2, latent 16) on Fashion-MNIST (local IDX files, as the fashion_mnist source finds them),
batch 128, for the same number of epochs, one after the other in this process. The
reference is written here the way the Keras example writes it: a Sampling layer, a
Dense(16, relu) before the heads, a sigmoid decoder and a train_step with binary
cross-entropy plus the closed-form KL. Prints samples/s (epochs after the first, so
tracing and compilation are excluded), their ratio, and test U (nats, one sample of
q(z|x) per test image, the same estimator for both models).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results

ROOT = Path(__file__).resolve().parents[1]


def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data.readers.idx import read_idx_release

    data = read_idx_release("fashion_mnist", None)
    x = (data.x / 255.0).astype(np.float32)
    return x[~data.is_test], x[data.is_test]


class EpochTimer:
    """Keras callback factory: wall seconds of every epoch."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.start)

        return Timer()


def _reference_encoder(latent_dim: int):
    """The Keras example's encoder: two strided convolutions, Dense(16, relu), the mean and
    log-variance heads and a Sampling layer drawing z."""
    import keras
    from keras import layers, ops

    class Sampling(layers.Layer):
        def call(self, inputs):
            mean, log_var = inputs
            return mean + ops.exp(0.5 * log_var) * keras.random.normal(ops.shape(mean))

    inputs = keras.Input(shape=(28, 28, 1))
    h = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    h = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(h)
    h = layers.Dense(16, activation="relu")(layers.Flatten()(h))
    z_mean, z_log_var = layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h)
    return keras.Model(inputs, [z_mean, z_log_var, Sampling()([z_mean, z_log_var])])


def _reference_decoder(latent_dim: int):
    """The Keras example's decoder: Dense to 7×7×64, two strided transposed convolutions and
    a sigmoid output (the Bernoulli means)."""
    import keras
    from keras import layers

    z_in = keras.Input(shape=(latent_dim,))
    h = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64, activation="relu")(z_in))
    h = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(h)
    h = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(h)
    return keras.Model(z_in, layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(h))


def reference_vae(latent_dim: int = 16):
    """The canonical Keras VAE example's model and training step, for comparison."""
    import keras
    import tensorflow as tf
    from keras import ops

    encoder = _reference_encoder(latent_dim)
    decoder = _reference_decoder(latent_dim)

    class ReferenceVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.total = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.total]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                mean, log_var, z = self.encoder(data)
                reconstruction = self.decoder(z)
                bce = keras.losses.binary_crossentropy(data, reconstruction)  # mean over the channel axis
                reconstruction_loss = ops.mean(ops.sum(bce, axis=(1, 2)))
                kl = ops.mean(ops.sum(-0.5 * (1 + log_var - ops.square(mean) - ops.exp(log_var)), axis=1))
                loss = reconstruction_loss + kl
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total.update_state(loss)
            return {"loss": self.total.result()}

    model = ReferenceVAE()
    model.compile(optimizer=keras.optimizers.Adam())
    return model


def test_u(encode, decode_logits, x: np.ndarray, seed: int = 0) -> float:
    """Mean Û = D + log 1/p(x|z), one z ~ q(z|x) per image, Bernoulli on logits."""
    from pipeline.model import subo
    from pipeline.model.likelihoods import Bernoulli

    rng, total = np.random.default_rng(seed), 0.0
    for start in range(0, len(x), 1000):
        xb = x[start : start + 1000]
        mean, log_var = (np.asarray(a, np.float32) for a in encode(xb))
        z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape).astype(np.float32)
        u = subo.kl_to_prior(mean, log_var) + Bernoulli().surprisal(xb, decode_logits(z))
        total += float(np.sum(np.asarray(u)))
    return total / len(x)


def samples_per_second(timer, n: int) -> float:
    later = timer.seconds[1:] or timer.seconds  # the first epoch includes tracing and compiling
    return n / float(np.mean(later))


def run_reference(x_train, x_test, epochs: int) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    model, timer = reference_vae(), EpochTimer()
    model.fit(x_train, epochs=epochs, batch_size=128, callbacks=[timer], verbose=2)

    def logits(z):
        p = np.clip(np.asarray(model.decoder.predict_on_batch(z), np.float64), 1e-7, 1 - 1e-7)
        return (np.log(p) - np.log1p(-p)).astype(np.float32)

    u = test_u(lambda xb: model.encoder.predict_on_batch(xb)[:2], logits, x_test)
    return {"samples_per_second": samples_per_second(timer, len(x_train)), "test_U": u}


def _pipeline_params(epochs: int, args):
    """The pipeline's params for the Keras example's shape and budget, with the trainer knobs
    under study from the command line."""
    from pipeline.platform.params.load import parse_params

    return parse_params(
        {
            "model": {
                "architecture": "conv",
                "latent_dim": 16,
                "hidden": [],
                "filters": [32, 64],
                "likelihood": "bernoulli",
            },
            "train": {
                "epochs": epochs,
                "batch_size": 128,
                "precision": args.precision,
                "jit_compile": args.jit,
                "steps_per_execution": args.steps_per_execution,
            },
        }
    )


def run_pipeline_trainer(x_train, x_test, epochs: int, args) -> dict:
    """The pipeline's VAE and trainer at the same shape and budget; samples/s and test U."""
    import keras
    import tensorflow as tf

    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import resolve_model
    from pipeline.training.train import make_optimizer

    params = _pipeline_params(epochs, args)
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(args.precision)
    try:
        vae = build_vae(
            (28, 28, 1), resolve_model(params.model, [28, 28, 1], [0.0, 1.0])[0], params.loss, seed=0
        )
        vae.compile(
            optimizer=make_optimizer(params.train, int(np.ceil(len(x_train) / 128))),
            steps_per_execution=args.steps_per_execution,
            jit_compile=args.jit,
        )
        timer = EpochTimer()
        # The same in-memory input as KE's: this compares the trainers, not the input pipelines.
        batches = tf.data.Dataset.from_tensor_slices(x_train).shuffle(len(x_train), seed=0).batch(128)
        vae.fit(batches.prefetch(tf.data.AUTOTUNE), epochs=epochs, callbacks=[timer], verbose=2)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    u = test_u(vae.encoder.predict_on_batch, lambda z: np.asarray(vae.decoder.predict_on_batch(z)), x_test)
    return {"samples_per_second": samples_per_second(timer, len(x_train)), "test_U": u}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--precision", default="mixed_bfloat16", choices=["float32", "mixed_float16", "mixed_bfloat16"]
    )
    parser.add_argument("--jit", action="store_true", help="XLA-compile the pipeline's train step")
    parser.add_argument("--steps-per-execution", type=int, default=32)
    args = parser.parse_args()
    x_train, x_test = fashion_mnist()
    ours = run_pipeline_trainer(x_train, x_test, args.epochs, args)
    reference = run_reference(x_train, x_test, args.epochs)
    print(
        f"\n{'':28} {'samples/s':>10} {'test U':>8}   ({args.epochs} epochs, batch 128, {len(x_train)} "
        "images)"
    )
    print(
        f"{'reference Keras VAE loop':28} {reference['samples_per_second']:>10,.0f} "
        f"{reference['test_U']:>8.2f}"
    )
    label = f"pipeline ({args.precision}{', XLA' if args.jit else ''}, spe {args.steps_per_execution})"
    print(f"{label:28} {ours['samples_per_second']:>10,.0f} {ours['test_U']:>8.2f}")
    print(
        "speed ratio (pipeline / reference): "
        f"{ours['samples_per_second'] / reference['samples_per_second']:.2f}"
    )
    figures = {"epochs": args.epochs, "images": len(x_train), "reference": reference, label: ours}
    figures["speed_ratio"] = ours["samples_per_second"] / reference["samples_per_second"]
    write_results("train", command_line(__spec__), figures)


if __name__ == "__main__":
    main()
