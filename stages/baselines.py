"""DVC stage baselines: probes on the raw inputs and on their PCA (the data alone decides them)."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="baselines")
    from pipeline.evaluation.baselines import from_params

    from_params(params, prepared_dir="data/prepared", out_dir="data/evaluation")


if __name__ == "__main__":
    as_command(main)
