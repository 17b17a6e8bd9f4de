"""DVC stage train: fit the VAE by minimising the SUBO; write data/model."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="train")
    from pipeline.training.train import from_params

    final = from_params(params, prepared_dir="data/prepared", model_dir="data/model")
    print("final epoch: " + ", ".join(f"{k}={v:.3f}" for k, v in final.items()))


if __name__ == "__main__":
    as_command(main)
