"""DVC stage encode: write the latent representation of every example to data/latents (Parquet)."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.encode import run

    rows = run(params, prepared_dir="data/prepared", model_path="data/model/model.keras", out_dir="data/latents")
    print(f"encoded {rows} rows into data/latents")


if __name__ == "__main__":
    run_stage(main)
