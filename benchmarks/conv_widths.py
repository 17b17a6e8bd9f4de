"""Which convolutions reach the CPU's matmul units: one 3×3 convolution's forward pass and both
gradients (to its input and to its filter), in float32 and bfloat16, at the widths the
shipped models use and wider.

    .venv/bin/python -m benchmarks.conv_widths [--repeats 20]

Each layer is traced once as a TensorFlow function, then timed --repeats times, the two
dtypes interleaved; GFLOP/s = 3 × 2 × B × H_out × W_out × C_out × 9 × C_in / the median time.
The first rows are Fashion-MNIST's default encoder (1 → 32 on 28×28, 32 → 64 on 14×14) and
the photos' (3 → 32 on 64×64, 32 → 64 on 32×32, 64 → 128 on 16×16); the last two show what a
wide layer gets.
"""

import argparse
import statistics
import time

from benchmarks._common import command_line, write_results

LAYERS = [  # (batch, side, channels in, channels out, stride)
    (64, 28, 1, 32, 2),
    (64, 14, 32, 64, 2),
    (64, 64, 3, 32, 2),
    (64, 32, 32, 64, 2),
    (64, 16, 64, 128, 2),
    (64, 16, 256, 256, 1),
    (256, 14, 32, 64, 2),
]


def timed_step(dtype, batch: int, side: int, c_in: int, c_out: int, stride: int):
    import tensorflow as tf

    x = tf.random.normal((batch, side, side, c_in), dtype=dtype)
    w = tf.random.normal((3, 3, c_in, c_out), dtype=dtype)

    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, w, stride, "SAME"), tf.float32))
        return tape.gradient(loss, [x, w])

    step(x, w)  # traced outside the timing

    def once() -> float:
        start = time.perf_counter()
        step(x, w)[0].numpy()
        return time.perf_counter() - start

    return once


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import tensorflow as tf

    print(
        f"{'batch':>5} {'side':>4} {'in':>4} {'out':>4} {'stride':>6} {'float32 GFLOP/s':>16} "
        f"{'bf16 GFLOP/s':>13}"
    )
    rows = []
    for batch, side, c_in, c_out, stride in LAYERS:
        steps = {
            dtype: timed_step(dtype, batch, side, c_in, c_out, stride) for dtype in (tf.float32, tf.bfloat16)
        }
        seconds = {dtype: [] for dtype in steps}
        for _ in range(args.repeats):
            for dtype, once in steps.items():
                seconds[dtype].append(once())
        flops = 3 * 2 * batch * (side // stride) ** 2 * c_out * 9 * c_in
        rates = [flops / statistics.median(seconds[dtype]) / 1e9 for dtype in steps]
        print(
            f"{batch:>5} {side:>4} {c_in:>4} {c_out:>4} {stride:>6} {rates[0]:>16,.0f} {rates[1]:>13,.0f}",
            flush=True,
        )
        rows.append(
            {
                "batch": batch,
                "side": side,
                "in": c_in,
                "out": c_out,
                "stride": stride,
                "float32_gflops": rates[0],
                "bf16_gflops": rates[1],
            }
        )
    write_results("conv_widths", command_line(__spec__), {"layers": rows})


if __name__ == "__main__":
    main()
