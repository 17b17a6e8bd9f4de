"""DVC stage evaluate: probes on the latents, U / D / S_K / E_K and the φ-gradient variance."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.evaluate import evaluate
    from pipeline.probes import ProbeProtocol

    cfg = params.evaluate
    protocol = ProbeProtocol.of(params.evaluate.probe, knn_k=params.evaluate.knn_k, seed=params.seed)
    evaluate(prepared_dir="data/prepared", model_path="data/model/model.keras", latents_dir="data/latents",
             out_dir="data/evaluation", protocol=protocol, importance_samples=cfg.importance_samples,
             surprisal_examples=cfg.surprisal_examples, gradient_variance=cfg.gradient_variance,
             validation_fraction=params.data.validation_fraction, binarize=params.data.binarize, seed=params.seed)


if __name__ == "__main__":
    run_stage(main)
