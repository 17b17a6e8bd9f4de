"""DVC stage prepare: load the source named in params.yaml, validate, split, write data/prepared."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    from pipeline.prepare import run

    manifest = run(load_params("params.yaml"), out_dir="data/prepared")
    print(f"prepared {manifest.source}: {manifest.counts} examples of shape {manifest.example_shape}")


if __name__ == "__main__":
    run_stage(main)
