"""Train-step time of the two decoder tops against the Keras example's model ("KE").

    .venv/bin/python -m benchmarks.decoder_step [--rounds 4] [--steps 40]

One fixed batch of 128 binarized 28×28 images, no input pipeline: each contender's
train_step is traced once, then the contenders run `--steps` steps each, interleaved,
for `--rounds` rounds. KE in float32 (as the example runs); the pipeline's conv VAE
(filters [32, 64], heads on the conv features, latent 16) under the precision that
`train.precision: auto` picks on this machine, with `model.decoder_top` full and
strided. Prints the median milliseconds per step and the speed relative to KE.
"""

import argparse
import statistics
import time
from pathlib import Path

from benchmarks._common import command_line, cpu_flags_line, write_results

ROOT = Path(__file__).resolve().parents[1]

BATCH = 128


def contenders(precision: str) -> dict:
    import keras
    import tensorflow as tf

    from benchmarks.train import reference_vae
    from pipeline.model.networks import build_vae
    from pipeline.model.resolve_model import resolve_model
    from pipeline.platform.params.load import parse_params
    from pipeline.training.train import make_optimizer

    def pipeline_vae(top: str):
        params = parse_params(
            {
                "model": {
                    "architecture": "conv",
                    "latent_dim": 16,
                    "hidden": [],
                    "filters": [32, 64],
                    "likelihood": "bernoulli",
                    "decoder_top": top,
                }
            }
        )
        vae = build_vae(
            (28, 28, 1), resolve_model(params.model, [28, 28, 1], [0.0, 1.0])[0], params.loss, seed=0
        )
        vae.compile(optimizer=make_optimizer(params.train, 1000))
        return vae

    built = {}
    for name, policy, make in (
        ("KE (float32)", "float32", reference_vae),
        (f"full ({precision})", precision, lambda: pipeline_vae("full")),
        (f"strided ({precision})", precision, lambda: pipeline_vae("strided")),
    ):
        keras.mixed_precision.set_global_policy(policy)  # layers take the policy when built
        built[name] = tf.function(make().train_step)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    import tensorflow as tf

    from pipeline.platform.hardware import cpu_flags, gpu_capabilities, onednn_enabled
    from pipeline.training.resolve_run import resolve_precision

    precision = resolve_precision("auto", cpu_flags(), gpu_capabilities(), onednn_enabled()).value
    print(cpu_flags_line(), f"-> {precision}", flush=True)
    x = tf.cast(tf.random.stateless_uniform((BATCH, 28, 28, 1), seed=[0, 0]) < 0.5, tf.float32)
    steps = contenders(precision)
    for step in steps.values():
        step(x)  # trace
    ms = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                out = step(x)
            float(next(iter(out.values())))  # wait for the last step
            ms[name].append((time.perf_counter() - start) / args.steps * 1e3)
    print_and_write(ms, precision)


def print_and_write(ms: dict, precision: str) -> None:
    """Each contender's median ms per step against KE's, printed and written to results/."""
    ke = statistics.median(next(iter(ms.values())))
    figures = {"precision": precision, "contenders": {}}
    for name, times in ms.items():
        median = statistics.median(times)
        print(
            f"{name:24} {median:6.1f} ms/step  {ke / median:4.2f}× KE   rounds: "
            f"{[round(t, 1) for t in times]}"
        )
        figures["contenders"][name] = {"ms_per_step": median, "times_ke": ke / median, "rounds_ms": times}
    write_results("decoder_step", command_line(__spec__), figures)


if __name__ == "__main__":
    main()
