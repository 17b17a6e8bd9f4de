"""DVC stage prepare: load the source named in params.yaml, validate, split, write data/prepared."""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    from pipeline.data.prepare import from_params

    manifest = from_params(load_params("params.yaml", stage="prepare"), out_dir="data/prepared")
    print(f"prepared {manifest.source}: {manifest.counts} examples of shape {manifest.example_shape}")


if __name__ == "__main__":
    as_command(main)
