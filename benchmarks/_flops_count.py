"""What benchmarks/flops.py counts and times beside the train stage: the train step's useful
FLOPs per example, counted op by op from its traced graph; the time per example of the step's
parts (networks, objective and gradient, Adam); and this CPU's matmul peak.
"""

import math
import statistics
import time
from pathlib import Path


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 7) -> float:
    """GFLOP/s of n×n by n×n products, the median of `repeats` timed chains of ten (each
    product reads the last one's result, so none can be elided)."""
    import tensorflow as tf

    b = tf.cast(tf.random.normal((n, n)) / n**0.5, dtype)  # keeps the chain's scale

    @tf.function
    def ten(x):
        for _ in range(10):
            x = tf.matmul(x, b)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    x = tf.cast(tf.random.normal((n, n)), dtype)
    ten(x).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        ten(x).numpy()
        rates.append(10 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def op_flops(op) -> int:
    """Multiply-adds × 2 of a convolution or matrix product op, from its static shapes; 0 for others.

    A convolution's two backward ops (to its input and to its filter) cost what the forward
    op does: every (output position, filter tap, input channel, output channel) once.
    """

    def shape(tensor):
        return tensor.shape.as_list()

    kind = op.type
    if kind in ("Conv2D", "Conv3D"):
        out, kernel = shape(op.outputs[0]), shape(op.inputs[1])
        return 2 * math.prod(out) * math.prod(kernel[:-1])
    if kind in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):  # inputs: sizes, filter, gradient
        grad, kernel = shape(op.inputs[2]), shape(op.inputs[1])
        return 2 * math.prod(grad) * math.prod(kernel[:-1])
    if kind in ("Conv2DBackpropFilter", "Conv3DBackpropFilterV2"):  # inputs: input, sizes, gradient
        grad, kernel = shape(op.inputs[2]), shape(op.outputs[0])
        return 2 * math.prod(grad) * math.prod(kernel[:-1])
    if kind in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, out = shape(op.inputs[0]), shape(op.outputs[0])
        inner = a[-2] if op.get_attr("transpose_a" if kind == "MatMul" else "adj_x") else a[-1]
        return 2 * math.prod(out) * inner
    return 0


def needed_ops(graph) -> list:
    """The ops the graph's outputs depend on: a gradient function also builds terms nobody
    reads (the first convolution's gradient to the input), which TensorFlow prunes at run time."""
    seen, todo = set(), [tensor.op for tensor in graph.outputs]
    while todo:
        op = todo.pop()
        if op.name not in seen:
            seen.add(op.name)
            todo += [tensor.op for tensor in op.inputs] + list(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in seen]


def resolved_vae(params, manifest):
    """The VAE (and its resolved model config) the shipped `auto` knobs build for the prepared data."""
    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import is_series, levels_of, resolve_model

    model, _ = resolve_model(
        params.model,
        manifest.input_shape,
        manifest.value_range,
        manifest.value_type,
        manifest.columns,
        levels_of(manifest),
        series=is_series(manifest),
    )
    return build_vae(manifest.input_shape, model, params.loss, seed=0), model


def step_flops(params, prepared: Path) -> dict:
    """FLOPs of one training step (objective and its gradient) of the model `params` resolve
    for the data at `prepared`, per example, by op type; and the time per example of its
    parts (`time_parts`)."""
    import tensorflow as tf

    from pipeline.data.manifest import Manifest

    manifest = Manifest.read(prepared)
    vae, model = resolved_vae(params, manifest)
    batch = params.train.batch_size

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            objective = vae.objective(x, training=True).loss
        return tape.gradient(objective, vae.trainable_weights)

    graph = step.get_concrete_function(tf.TensorSpec((batch, *manifest.input_shape), tf.float32)).graph
    by_op: dict = {}
    for op in needed_ops(graph):
        flops = op_flops(op)
        if flops:
            by_op[op.type] = by_op.get(op.type, 0) + flops / batch
    return {
        "mflop": sum(by_op.values()) / 1e6,
        "filters": list(model.filters),
        "likelihood": model.likelihood,
        "by_op_mflop": {k: round(v / 1e6, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "ms_per_example": time_parts(vae, batch, manifest.input_shape, params.train.jit_compile),
    }


def time_parts(vae, batch: int, shape, jit: bool, steps: int = 16, repeats: int = 5) -> dict:
    """Milliseconds per example of three parts of a training step, each run `steps` times
    inside one compiled call as the stage does (train.steps_per_execution), the median of
    `repeats` calls after a warm-up: the networks alone (encoder mean -> decoder, a squared
    loss: the convolutions and Dense layers, forward and backward); the training objective
    and its gradient (adds the sampling, the likelihood's elementwise terms, D); and that
    plus Adam's update."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, *shape)) / 255, tf.float32)
    return {
        name: round(1000 * median_call_seconds(body, jit, steps, repeats) / (steps * batch), 4)
        for name, body in step_parts(vae, x).items()
    }


def step_parts(vae, x) -> dict:
    """The three parts `time_parts` times, each a function of no arguments on the batch x."""
    import keras
    import tensorflow as tf

    weights = vae.trainable_weights
    optimizer = keras.optimizers.Adam()
    optimizer.build(weights)

    def gradients(loss_of):
        with tf.GradientTape() as tape:
            loss = loss_of(x)
        return loss, tape.gradient(loss, weights)

    def networks():
        loss, grads = gradients(lambda x: tf.reduce_mean(tf.square(vae.decoder(vae.encoder(x)[0]))))
        # every gradient computed
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads if g is not None]) * 0.0

    def objective():
        loss, grads = gradients(lambda x: vae.objective(x, training=True).loss)
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads if g is not None]) * 0.0

    def with_adam():
        loss, grads = gradients(lambda x: vae.objective(x, training=True).loss)
        optimizer.apply(grads, weights)
        return loss

    return {"networks": networks, "objective_and_gradient": objective, "with_adam": with_adam}


def median_call_seconds(body, jit: bool, steps: int, repeats: int) -> float:
    """`body` run `steps` times inside one compiled call: the median seconds of `repeats` calls
    after a warm-up."""
    import tensorflow as tf

    @tf.function(jit_compile=jit)
    def run():
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            total += body()
        return total

    run().numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run().numpy()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)
