"""DVC stage evaluate: probes on the latents, U / D / S_K / E_K and the φ-gradient variance."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="evaluate")
    from pipeline.evaluation.evaluate import from_params

    from_params(
        params,
        prepared_dir="data/prepared",
        model_path="data/model/model.keras",
        latents_dir="data/latents",
        out_dir="data/evaluation",
    )


if __name__ == "__main__":
    as_command(main)
