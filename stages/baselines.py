"""DVC stage baselines: probes on the raw inputs and on their PCA (the data alone decides them)."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.baselines import run

    run(params, prepared_dir="data/prepared", out_dir="data/evaluation")


if __name__ == "__main__":
    run_stage(main)
