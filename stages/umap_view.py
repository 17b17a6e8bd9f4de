"""DVC stage umap: a UMAP picture of the latents (re-runs alone when evaluate.umap.* changes).

Named umap_view.py, not umap.py: a script's folder comes first on sys.path, and `import umap`
would find the script instead of umap-learn.
"""

from pipeline.platform.console import as_command
from pipeline.platform.params.load import load_params


def main() -> None:
    params = load_params("params.yaml", stage="umap")
    from pipeline.evaluation.umap_view import from_params

    from_params(params, prepared_dir="data/prepared", latents_dir="data/latents", out_dir="data/evaluation")


if __name__ == "__main__":
    as_command(main)
