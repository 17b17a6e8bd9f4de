"""DVC stage evaluate: probes, PCA baseline, SUBO / S_K figures and UMAP into data/evaluation."""

import json

from pipeline.config import load_params
from pipeline.errors import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.evaluate import evaluate

    metrics = evaluate(params, prepared_dir="data/prepared", model_path="data/model/model.keras",
                       latents_dir="data/latents", out_dir="data/evaluation")
    summary = {key: metrics[key] for key in ("probe", "knn", "subo", "gradient_variance") if key in metrics}
    print(json.dumps(summary, indent=1))
    print("report: data/evaluation/report.md")


if __name__ == "__main__":
    run_stage(main)
