"""DVC stage encode: write the latent representation of every example to data/latents (Parquet)."""

from pipeline.config import as_dict, load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.encode import encode

    rows = encode(prepared_dir="data/prepared", model_path="data/model/model.keras", out_dir="data/latents",
                  batch_size=params.encode.batch_size, run_params=as_dict(params), workers=params.encode.workers)
    print(f"encoded {rows} rows into data/latents")


if __name__ == "__main__":
    run_stage(main)
