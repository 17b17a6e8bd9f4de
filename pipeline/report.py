"""report.md: the evaluation's metrics and pictures on one page."""

from pathlib import Path

from pipeline.io import atomic_path


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_text(metrics: dict, manifest: dict, latent_dim: int) -> str:
    lines = [f"# Evaluation: {manifest['source']}, latent_dim = {latent_dim}", "",
             f"{manifest['counts']['train']} train / {manifest['counts']['test']} test examples of shape "
             f"{manifest['example_shape']}; values are nats per example.", ""]
    if "probe" in metrics:
        base = metrics["baselines"]
        lines += ["## Probes (same protocol for every feature set)", "",
                  _row("features", "dim", "linear accuracy", "macro-F1", "C", "kNN accuracy"),
                  _row("---", "---", "---", "---", "---", "---"),
                  _row("latents z_mean", metrics["probe"]["dim"], _num(metrics["probe"]["accuracy"]),
                       _num(metrics["probe"]["macro_f1"]), metrics["probe"]["C"], _num(metrics["knn"]["accuracy"]))]
        for name, label in (("pca", "PCA of inputs"), ("raw", "raw inputs")):
            b = base[name]
            lines.append(_row(label, b["dim"], _num(b["linear"]["accuracy"]), _num(b["linear"]["macro_f1"]),
                              b["linear"]["C"], _num(b["knn"])))
        lines += ["", f"Majority class: {_num(base['majority_class_accuracy'])}. "
                      f"Latents minus PCA: {base['pca']['latent_minus_baseline']:+.3f}; "
                      f"minus raw: {base['raw']['latent_minus_baseline']:+.3f}.", ""]
    lines += ["## SUBO, surprisal and gap", "", _row("split", "examples", "U", "D", "reconstruction",
                                                    *[f"S_{k}" for k in metrics["subo"]["test"]["S_K"]],
                                                    *[f"E_{k}" for k in metrics["subo"]["test"]["E_K"]]),
              _row(*["---"] * (5 + 2 * len(metrics["subo"]["test"]["S_K"])))]
    for split, f in metrics["subo"].items():
        lines.append(_row(split, f["examples"], _num(f["U"], 2), _num(f["D"], 2), _num(f["reconstruction"], 2),
                          *[_num(v, 2) for v in f["S_K"].values()], *[_num(v, 2) for v in f["E_K"].values()]))
    g = metrics["gradient_variance"]
    lines += ["", f"φ-gradient variance on one batch of {g['batch_size']} ({g['repeats']} draws): "
                  f"reparameterized {g['reparameterized']:.4g}, score function {g['score_function']:.4g}, "
                  f"ratio {g['ratio']:.1f}.", "", "## Pictures", "", "![UMAP](images/umap.png)", ""]
    if latent_dim == 2:
        lines += ["![latents](images/latents.png)", ""]
    if metrics["generative"]["images"]:
        lines += ["![reconstructions](images/reconstructions.png)", "", "![samples](images/samples.png)", "",
                  "![traversals](images/traversals.png)", ""]
    return "\n".join(lines)


def write_report(metrics: dict, manifest: dict, latent_dim: int, out_dir: Path) -> None:
    with atomic_path(Path(out_dir) / "report.md") as tmp:
        tmp.write_text(report_text(metrics, manifest, latent_dim))
