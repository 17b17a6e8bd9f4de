"""DVC stage evaluate: probes on the latents, U / D / S_K / E_K and the φ-gradient variance."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.evaluate import run

    run(params, prepared_dir="data/prepared", model_path="data/model/model.keras", latents_dir="data/latents",
        out_dir="data/evaluation")


if __name__ == "__main__":
    run_stage(main)
