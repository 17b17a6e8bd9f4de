"""Run the four stages in-process on a chosen configuration and print timings and metrics.

    .venv/bin/python -m benchmarks.run_pipeline data.source=fashion_mnist model.architecture=conv \\
        model.latent_dim=16 model.hidden=[] train.epochs=10 train.batch_size=128

Overrides use params.yaml's dotted keys (values parsed as YAML). Outputs go to a
temporary directory (or --out), so the workspace's data/ is untouched.
"""

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks._common import command_line, write_results
from pipeline.platform.params.config_checker import UniqueKeyLoader, set_dotted
from pipeline.platform.params.load import parse_params

ROOT = Path(__file__).resolve().parents[1]


def parse_overrides(items: list[str]) -> dict:
    """["dotted.key=value", ...] as {dotted key: value}, values parsed as params.yaml's are."""
    return {
        key: yaml.load(value, Loader=UniqueKeyLoader)
        for key, _, value in (item.partition("=") for item in items)
    }


def overridden_params(overrides: dict, source: str = "params.yaml + overrides"):
    """The shipped params.yaml with {dotted key: value} set, validated."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return parse_params(raw, source=source)


def whole_run(params, out: Path) -> dict:
    """prepare, train, encode and the evaluation in this process, under out; the combined metrics."""
    from pipeline.runner import run_all

    return run_all(params, out)["metrics"]


def probe_figures(metrics: dict) -> dict:
    """The linear and kNN probes' accuracies on the latents and on the PCA of a run's metrics."""
    pca = metrics["baselines"]["pca"]
    return {
        "linear": metrics["probe"]["accuracy"],
        "knn": metrics["knn"]["accuracy"],
        "pca_linear": pca["linear"]["accuracy"],
        "pca_knn": pca["knn"],
    }


def stage_steps(params, out: Path) -> list:
    """(stage, a call running it on the outputs under out), in the order dvc.yaml runs them."""
    from pipeline.runner import encode, evaluate_all, prepare, train

    return [
        ("prepare", lambda: prepare(params, out_dir=out / "prepared")),
        ("train", lambda: train(params, prepared_dir=out / "prepared", model_dir=out / "model")),
        (
            "encode",
            lambda: encode(
                params,
                prepared_dir=out / "prepared",
                model_path=out / "model" / "model.keras",
                out_dir=out / "latents",
            ),
        ),
        (
            "evaluate",
            lambda: evaluate_all(
                params,
                prepared_dir=out / "prepared",
                model_path=out / "model" / "model.keras",
                latents_dir=out / "latents",
                out_dir=out / "evaluation",
            ),
        ),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="STAGE",
        help="run only these stages, reusing --out for the others' outputs",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    logging.getLogger("pipeline").setLevel(logging.INFO)
    params = overridden_params(parse_overrides(args.overrides))
    out = args.out or Path(tempfile.mkdtemp(prefix="vae-bench-"))

    seconds = {}
    steps = stage_steps(params, out)
    results = {}
    for name, step in steps:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        results[name] = step()
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {seconds[name]} s", flush=True)
    live = json.loads((out / "model" / "live" / "metrics.json").read_text())
    report = {
        "overrides": args.overrides,
        "seconds": seconds,
        "train_samples_per_second": round(live["train"]["samples_per_second"]),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "metrics": results.get("evaluate"),
        "outputs": str(out),
    }
    print(json.dumps(report, indent=1))
    write_results("run_pipeline", command_line(__spec__), report)


if __name__ == "__main__":
    main()
