"""The evaluation in one place: metrics.json for `dvc metrics show`, report.md, a short summary.

The evaluation stages each write their own part (baselines.json, latent_metrics.json,
umap.json); this module only reads and arranges them, so the report is
rebuilt in a second whenever one part changes. metrics.json's schema is
pipeline.evaluation.metrics'; report.md's text is pipeline.evaluation.report_text's.
"""

import json
from pathlib import Path

from pipeline.evaluation.metrics import Metrics
from pipeline.evaluation.report_text.page import report_text
from pipeline.evaluation.report_text.sections import (
    active_units_lines,
    d_estimate_lines,
    likelihood_lines,
    probe_table,
    subo_table,
)
from pipeline.platform.errors import DataError
from pipeline.platform.io import Publication, write_json

PARTS = {
    "baselines": "baselines",
    "latent_metrics": "evaluate",
    "umap": "umap",
}  # part -> the stage writing it


def combine(parts: dict) -> dict:
    """The metrics of every part, with each baseline set beside the latents, checked against
    their schema (pipeline.evaluation.metrics) and in its order."""
    latent, base = parts["latent_metrics"], parts["baselines"]
    # active_units included; the choices are text, for the report rather than `dvc metrics`
    metrics = {key: value for key, value in latent.items() if key not in ("latent_dim", "choices")}
    if "probe" in latent and base.get("labelled"):
        baselines = {}
        for name in ("pca", "raw"):
            difference = latent["probe"]["accuracy"] - base[name]["linear"]["accuracy"]
            baselines[name] = {
                **base[name],
                "latent_minus_baseline": difference,
                "latent_beats_baseline": bool(difference > 0),
            }
        metrics["baselines"] = {**baselines, "majority_class_accuracy": base["majority_class_accuracy"]}
    if "covariates" in latent:  # each covariate's embeddings: the latents', then the baselines'
        base_figures = base.get("covariates", {})
        metrics["covariates"] = {
            name: {
                **figures,
                "embeddings": {**figures["embeddings"], **base_figures.get(name, {}).get("embeddings", {})},
            }
            for name, figures in latent["covariates"].items()
        }
    return Metrics.of({**metrics, "umap": parts["umap"]}).as_dict()


def write_report(out_dir: str | Path) -> tuple[dict, str]:
    """metrics.json and report.md from the parts under out_dir; returns the metrics and the text."""
    out_dir = Path(out_dir)
    publication = Publication(out_dir, "report")
    publication.recover()  # what a killed run of this stage left
    parts = {}
    for name, stage in PARTS.items():
        path = out_dir / f"{name}.json"
        try:
            parts[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run the {stage} stage first (dvc repro {stage})") from None
    metrics = combine(parts)
    latent = parts["latent_metrics"]
    text = report_text(
        metrics, parts["baselines"]["dataset"], latent["latent_dim"], latent.get("choices", {})
    )
    with publication.staged() as staging:
        write_json(staging / "metrics.json", metrics)
        (staging / "report.md").write_text(text, encoding="utf-8")
    return metrics, text


def summary(metrics: dict) -> str:
    """What the report stage prints: the probe and SUBO tables."""
    return "\n".join(
        [
            "Probes:",
            *probe_table(metrics),
            "SUBO (nats per example):",
            *subo_table(metrics),
            *likelihood_lines(metrics),
            *d_estimate_lines(metrics),
            *active_units_lines(metrics["active_units"], "mean_kl_per_dim" in metrics["generative"]),
        ]
    )
