"""DVC stage encode: write the latent representation of every example to data/latents (Parquet)."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="encode")
    from pipeline.latents.encode import from_params

    rows = from_params(
        params, prepared_dir="data/prepared", model_path="data/model/model.keras", out_dir="data/latents"
    )
    print(f"encoded {rows} rows into data/latents")


if __name__ == "__main__":
    as_command(main)
