"""DVC stage explore: the UMAP's points as a page to hover, search and click, and as TensorBoard
Embedding Projector files."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="explore")
    from pipeline.evaluation.explorer.explore import from_params

    from_params(
        params,
        prepared_dir="data/prepared",
        model_path="data/model/model.keras",
        latents_dir="data/latents",
        out_dir="data/evaluation",
    )


if __name__ == "__main__":
    as_command(main)
