"""Training near the CPU's limit: the train step's FLOPs per sample (counted from its graph),
the samples/s the shipped defaults reach, and their share of this machine's matmul peak.

    .venv/bin/python -m benchmarks.flops                                # 28×28×1 and 64×64×3
    .venv/bin/python -m benchmarks.flops --set train.jit_compile=true   # a variant, interleaved

FLOPs: the model the shipped defaults resolve for the data (auto likelihood, architecture,
filters) is built and one training step (the objective, its gradient with respect to every
weight) is traced as a TensorFlow graph for a batch of the default size. Its useful FLOPs
are counted op by op from the graph's static shapes: every convolution (forward, and its
two backward ops: to the input and to the filter) and every matrix product, 2 per
multiply-add (`op_flops`). The elementwise work (the likelihood's terms, activations, the
optimizer's update) is not counted: it is what keeps a step from the peak.

Peak: the median rate of float32 (and, where the CPU has native bf16, bfloat16) products
of two 2048×2048 matrices, in one compiled function, after a warm-up.

Samples/s: the real train stage (`pipeline.runner.train`) on prepared data with
`train.epochs: 4`, the median of epochs 2–4 from its dvclive log (epoch 1 compiles):
Fashion-MNIST (the Debian package's IDX files, 10,000 examples) for 28×28×1, the photo crops
of benchmarks/photos.py for 64×64×3. Contenders (the defaults and each --set) alternate, and
the whole sequence repeats --repeats times.
"""

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.photos import generate
from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


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


def step_flops(params, prepared: Path) -> dict:
    """FLOPs of one training step (objective and its gradient) of the model `params` resolve
    for the data at `prepared`, per example, by op type; and the time per example of its
    parts (`time_parts`)."""
    import tensorflow as tf

    from pipeline.data.manifest import Manifest
    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import is_series, levels_of, resolve_model

    manifest = Manifest.read(prepared)
    model, _ = resolve_model(
        params.model,
        manifest.input_shape,
        manifest.value_range,
        manifest.value_type,
        manifest.columns,
        levels_of(manifest),
        series=is_series(manifest),
    )
    vae = build_vae(manifest.input_shape, model, params.loss, seed=0)
    batch = params.train.batch_size

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            objective, _ = vae.objective(x, training=True)
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
    import keras
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, *shape)) / 255, tf.float32)
    weights = vae.trainable_weights
    optimizer = keras.optimizers.Adam()
    optimizer.build(weights)

    def gradients(loss_of):
        with tf.GradientTape() as tape:
            loss = loss_of(x)
        return loss, tape.gradient(loss, weights)

    def networks():
        loss, grads = gradients(lambda x: tf.reduce_mean(tf.square(vae.decoder(vae.encoder(x)[0]))))
        return (
            loss + tf.add_n([tf.reduce_sum(g) for g in grads if g is not None]) * 0.0
        )  # every gradient computed

    def objective():
        loss, grads = gradients(lambda x: vae.objective(x, training=True)[0])
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads if g is not None]) * 0.0

    def with_adam():
        loss, grads = gradients(lambda x: vae.objective(x, training=True)[0])
        optimizer.apply(grads, weights)
        return loss

    out = {}
    for name, body in (
        ("networks", networks),
        ("objective_and_gradient", objective),
        ("with_adam", with_adam),
    ):

        @tf.function(jit_compile=jit)
        def run():
            total = tf.constant(0.0)
            for _ in tf.range(steps):
                total += body()  # noqa: B023 - traced and run within this iteration
            return total

        run().numpy()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run().numpy()
            seconds.append(time.perf_counter() - start)
        out[name] = round(1000 * statistics.median(seconds) / (steps * batch), 4)
    return out


def samples_per_second(params, prepared: Path, out: Path) -> float:
    """The train stage's median samples/s over epochs 2.. (dvclive's per-epoch figure)."""
    from pipeline.runner import train

    train(params, prepared_dir=prepared, model_dir=out)
    rows = (
        (out / "live" / "plots" / "metrics" / "train" / "samples_per_second.tsv").read_text().split("\n")[2:]
    )
    return statistics.median(float(row.split("\t")[-1]) for row in rows if row)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help="a variant to time beside the shipped defaults (repeatable)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the train stage's timing (0: none)")
    parser.add_argument(
        "--python",
        default=str(ROOT / ".venv-peers" / "bin" / "python"),
        help="a python with scikit-image (make peers-env), for the photo crops",
    )
    parser.add_argument(
        "--data",
        choices=("28x28x1", "64x64x3"),
        action="append",
        help="only these inputs (repeatable; default: both)",
    )
    args = parser.parse_args()
    from pipeline.platform.hardware import cpu_flags, onednn_enabled
    from pipeline.runner import prepare
    from pipeline.training.resolve_run import NATIVE_BF16_CPU_FLAGS

    work = Path(tempfile.mkdtemp(prefix="vae-flops-"))
    data = {
        "28x28x1": {"data.source": "fashion_mnist", "data.max_examples": 10_000},
        "64x64x3": {"data.source": "image_folder", "data.path": str(work / "photos")},
    }
    data = {name: keys for name, keys in data.items() if name in (args.data or data)}
    if "64x64x3" in data:
        generate(work / "photos", args.python, 400, 64)
    flags = cpu_flags()
    native = sorted(set(NATIVE_BF16_CPU_FLAGS) & flags)
    peaks = {"float32": matmul_peak("float32"), **({"bfloat16": matmul_peak("bfloat16")} if native else {})}
    print(
        json.dumps(
            {
                "cpu_native_bf16": native,
                "amx": sorted({"amx_bf16", "amx_tile"} & flags),
                "onednn": onednn_enabled(),
                "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
            }
        )
    )
    variants = [{}] + [parse_overrides(v.split(";")) for v in args.set]
    rates: dict = {}
    for name, keys in data.items():
        prepare(overridden_params(keys), out_dir=work / name / "prepared")
        for i, overrides in enumerate(variants):
            flops = step_flops(overridden_params({**keys, **overrides}), work / name / "prepared")
            print(json.dumps({"data": name, "set": overrides, **flops}), flush=True)
            rates[name, i] = {"flops": flops, "rates": []}
    for repeat in range(args.repeats):
        for name, keys in data.items():
            for i, overrides in enumerate(variants):
                params = overridden_params(
                    {**keys, **overrides, "train.epochs": 4, "train.early_stopping_patience": None}
                )
                rate = samples_per_second(
                    params, work / name / "prepared", work / name / f"model-{i}-{repeat}"
                )
                rates[name, i]["rates"].append(rate)
                print(
                    json.dumps(
                        {"data": name, "set": overrides, "repeat": repeat, "samples_per_s": round(rate)}
                    ),
                    flush=True,
                )
    peak = max(peaks.values())
    for (name, i), figures in rates.items():
        flops, parts = figures["flops"]["mflop"] * 1e6, figures["flops"]["ms_per_example"]
        line = (
            f"{name} {variants[i] or 'defaults'}: {flops / 1e6:.1f} useful MFLOP/example; per example "
            f"networks {parts['networks']:.3f} ms ({flops / parts['networks'] / 1e6:.1f} GFLOP/s), + "
            "objective "
            f"{parts['objective_and_gradient'] - parts['networks']:.3f}, + Adam "
            f"{parts['with_adam'] - parts['objective_and_gradient']:.3f}"
        )
        if figures["rates"]:
            rate = statistics.median(figures["rates"])
            line += (
                f"; the stage: {rate:,.0f} samples/s, {1000 / rate:.3f} ms (the rest: Keras' loop, input, "
                f"metrics {1000 / rate - parts['with_adam']:.3f}) -> {flops * rate / 1e9:.1f} GFLOP/s = "
                f"{100 * flops * rate / 1e9 / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak"
            )
        print(line)


if __name__ == "__main__":
    main()
