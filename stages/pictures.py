"""DVC stage pictures: reconstructions, samples from the prior and latent traversals."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.pictures import pictures

    pictures(prepared_dir="data/prepared", model_path="data/model/model.keras", out_dir="data/evaluation",
             binarize=params.data.binarize, seed=params.seed)


if __name__ == "__main__":
    run_stage(main)
