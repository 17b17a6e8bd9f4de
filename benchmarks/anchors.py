"""The pipeline with its shipped defaults against the canonical Keras VAE example ("KE").

    .venv/bin/python -m benchmarks.anchors                 # KE, pipeline, KE, pipeline: ~20 min on 2 cores
    .venv/bin/python -m benchmarks.anchors --repeats 3 --ke-epochs 10

On Fashion-MNIST (Debian's dataset-fashion-mnist). KE is the example's conv model and
train step (benchmarks/train.py), batch 128, `--ke-epochs` epochs. The pipeline is
`pipeline.training.train.train` with the shipped params.yaml and only `data.source: fashion_mnist`
set: every `auto` knob (architecture, epochs, precision, steps per execution, ...) is
resolved as `dvc repro` would on this machine. Each run is its own process (clean peak
memory), the contenders interleaved, KE first.

Printed: the CPU flags that decided the precision; per run the median training samples/s
(epochs after the first: tracing excluded), peak resident memory, and the time to
quality: training wall seconds (test scoring excluded) until the test U (one z per image,
nats; scored four times an epoch) first reaches KE's 10-epoch 298.5 and pythae's 258.8;
then medians and the ratio.
"""

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, cpu_flags_line, module_command, write_results

ROOT = Path(__file__).resolve().parents[1]

THRESHOLDS = {"KE 10 epochs": 298.5, "pythae 10 epochs": 258.8}
# Test U is scored this many times an epoch (time to quality to a quarter of an epoch).
SCORES_PER_EPOCH = 4


def _epoch_rate(epoch: int, samples: int, seconds: float) -> dict:
    """One finished epoch's row: its number (from 1) and its training samples/s (scoring excluded)."""
    return {"epoch": epoch + 1, "samples_per_second": samples / seconds}


def scorer(score, batch_size: int, per_epoch: int):
    """A Keras callback: per epoch the training samples/s, and `per_epoch` times an epoch the
    test U with the training seconds so far (scoring time not counted).

    Scores are taken after the compiled call that crosses each fraction of the epoch, so
    time to quality is known to a fraction of an epoch, not a whole one.
    """
    import keras

    class Scorer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.rows, self.epochs, self.done = [], [], 0.0  # done: training seconds of finished epochs

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.start, self.paused, self.next = epoch, time.perf_counter(), 0.0, 1

        def in_epoch(self) -> float:
            return time.perf_counter() - self.start - self.paused

        def on_train_batch_end(self, batch, logs=None):
            steps = self.params["steps"]
            if batch + 1 < steps and batch + 1 >= self.next * steps / per_epoch:
                self.record(self.epoch + (batch + 1) / steps, self.done + self.in_epoch())
                self.next = math.floor((batch + 1) * per_epoch / steps) + 1

        def on_epoch_end(self, epoch, logs=None):
            took = self.in_epoch()
            self.done += took
            self.epochs.append(_epoch_rate(epoch, self.params["steps"] * batch_size, took))
            self.record(epoch + 1, self.done)

        def record(self, epochs: float, seconds: float):
            begin = time.perf_counter()
            self.rows.append(
                {"epochs": round(epochs, 3), "seconds": round(seconds, 2), "test_U": score(self.model)}
            )
            print(json.dumps(self.rows[-1]), flush=True)
            self.paused += time.perf_counter() - begin

    return Scorer()


def run_ke(epochs: int) -> dict:
    import keras

    from benchmarks.train import fashion_mnist, reference_vae, test_u

    x_train, x_test = fashion_mnist()
    keras.utils.set_random_seed(0)
    model = reference_vae()

    def score(m):
        def logits(z):
            p = np.clip(np.asarray(m.decoder.predict_on_batch(z), np.float64), 1e-7, 1 - 1e-7)
            return (np.log(p) - np.log1p(-p)).astype(np.float32)

        return test_u(lambda xb: m.encoder.predict_on_batch(xb)[:2], logits, x_test)

    watch = scorer(score, 128, SCORES_PER_EPOCH)
    model.fit(x_train, epochs=epochs, batch_size=128, callbacks=[watch], verbose=0)
    return {
        "choices": {"batch_size": 128, "latent_dim": 16, "precision": "float32", "steps_per_execution": 1},
        "epochs": watch.epochs,
        "scores": watch.rows,
    }


def run_pipeline(work: Path, overrides: list[str]) -> dict:
    from keras import ops

    from benchmarks.run_pipeline import overridden_params, parse_overrides
    from pipeline import runner
    from pipeline.data.prepared import load_split

    params = overridden_params(
        {"data.source": "fashion_mnist", **parse_overrides(overrides)}, source="params.yaml + data.source"
    )
    x_test = load_split(work / "prepared", "test").inputs(slice(None))  # preprocessed, float32

    def score(vae):
        total = sum(
            float(ops.sum(vae.subo_terms(x_test[i : i + 1000])["U"])) for i in range(0, len(x_test), 1000)
        )
        return total / len(x_test)

    model_dir = Path(tempfile.mkdtemp(prefix="anchors-model-"))
    watch = scorer(score, params.train.batch_size, SCORES_PER_EPOCH)
    runner.train(params, prepared_dir=work / "prepared", model_dir=model_dir, callbacks=(watch,))
    choices = json.loads((model_dir / "choices.json").read_text())
    shutil.rmtree(model_dir)
    return {
        "choices": {key: item["value"] for key, item in choices.items()},
        "epochs": watch.epochs,
        "scores": watch.rows,
    }


def child(kind: str, work: Path, ke_epochs: int, overrides: list[str]) -> None:
    result = run_ke(ke_epochs) if kind == "ke" else run_pipeline(work, overrides)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result), flush=True)


def summarise(kind: str, result: dict) -> dict:
    epochs, scores = result["epochs"], result["scores"]
    rates = [e["samples_per_second"] for e in epochs[1:]] or [epochs[0]["samples_per_second"]]
    reach = {
        name: next((s["seconds"] for s in scores if s["test_U"] <= u), None) for name, u in THRESHOLDS.items()
    }
    return {
        "kind": kind,
        "samples_per_second": statistics.median(rates),
        "peak_rss_mib": result["peak_rss_mib"],
        "final_test_U": scores[-1]["test_U"],
        "epochs": len(epochs),
        "seconds": scores[-1]["seconds"],
        "seconds_to": reach,
        "choices": result["choices"],
        "per_epoch": epochs,
        "scores": scores,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ke-epochs", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vae-anchors"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="change the pipeline's knobs (to study an alternative; not the shipped defaults)",
    )
    parser.add_argument("--child", choices=["ke", "pipeline"], help=argparse.SUPPRESS)
    return parser.parse_args()


def one_child(kind: str, args: argparse.Namespace) -> dict:
    """One run of `kind` in its own process (clean peak memory), summarised."""
    out = subprocess.run(
        [
            *module_command(__spec__),
            "--child",
            kind,
            "--work",
            str(args.work),
            "--ke-epochs",
            str(args.ke_epochs),
            *(["--set", *args.set] if args.set else []),
        ],
        capture_output=True,
        text=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or line is None:
        sys.exit(f"{kind} run failed:\n{out.stderr[-3000:]}")
    return summarise(kind, json.loads(line[7:]))


def print_medians(runs: list[dict], ke_epochs: int) -> dict:
    """The medians and ratios over the runs, printed; returned as the figures."""
    median = {
        kind: statistics.median(r["samples_per_second"] for r in runs if r["kind"] == kind)
        for kind in ("ke", "pipeline")
    }
    print(
        f"\nmedian samples/s: KE {median['ke']:,.0f}, pipeline {median['pipeline']:,.0f}, "
        f"ratio {median['pipeline'] / median['ke']:.2f}"
    )
    figures = {"median_samples_per_second": median, "ratio": median["pipeline"] / median["ke"]}
    figures["seconds_to"] = {}
    for name in THRESHOLDS:
        times = {
            kind: [r["seconds_to"][name] for r in runs if r["kind"] == kind] for kind in ("ke", "pipeline")
        }
        figures["seconds_to"][name] = times
        print(
            f"seconds to test U <= {THRESHOLDS[name]} ({name}): KE {times['ke']}, pipeline "
            f"{times['pipeline']}"
        )
    ke_total = statistics.median(r["seconds"] for r in runs if r["kind"] == "ke")
    reached = [r["seconds_to"]["KE 10 epochs"] for r in runs if r["kind"] == "pipeline"]
    if all(t is not None for t in reached):
        print(
            f"pipeline's median time to KE's 10-epoch U / KE's median {ke_epochs}-epoch time: "
            f"{statistics.median(reached):.0f} s / {ke_total:.0f} s = "
            f"{statistics.median(reached) / ke_total:.2f}"
        )
        figures["time_to_ke_u_share"] = statistics.median(reached) / ke_total
    return figures


def main() -> None:
    args = parse_args()
    if args.child:
        return child(args.child, args.work, args.ke_epochs, args.set)

    print(cpu_flags_line(), flush=True)
    if not (args.work / "prepared" / "manifest.json").is_file():
        from pipeline import runner
        from pipeline.platform.params.load import parse_params

        runner.prepare(parse_params({"data": {"source": "fashion_mnist"}}), out_dir=args.work / "prepared")
    runs = []
    for _ in range(args.repeats):
        for kind in ("ke", "pipeline"):
            runs.append(one_child(kind, args))
            print(
                json.dumps({k: v for k, v in runs[-1].items() if k not in ("per_epoch", "scores")}),
                flush=True,
            )
    figures = print_medians(runs, args.ke_epochs)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    runs_printed = [{k: v for k, v in r.items() if k not in ("per_epoch", "scores")} for r in runs]
    write_results("anchors", command_line(__spec__), {"runs": runs_printed, **figures})


if __name__ == "__main__":
    main()
