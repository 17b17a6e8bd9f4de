"""DVC stage train: fit the VAE by minimising the SUBO; write data/model."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.train import run

    final = run(params, prepared_dir="data/prepared", model_dir="data/model")
    print("final epoch: " + ", ".join(f"{k}={v:.3f}" for k, v in final.items()))


if __name__ == "__main__":
    run_stage(main)
