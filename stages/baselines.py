"""DVC stage baselines: probes on the raw inputs and on their PCA (the data alone decides them)."""

from pipeline.config import load_params
from pipeline.console import run_stage


def main() -> None:
    params = load_params("params.yaml")
    from pipeline.baselines import baselines
    from pipeline.probes import ProbeProtocol

    protocol = ProbeProtocol.of(params.evaluate.probe, knn_k=params.evaluate.knn_k, seed=params.seed)
    baselines(prepared_dir="data/prepared", out_dir="data/evaluation", dim=params.model.latent_dim,
              protocol=protocol)


if __name__ == "__main__":
    run_stage(main)
