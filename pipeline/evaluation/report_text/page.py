"""report.md as one page: the data's heading, the sections of
pipeline.evaluation.report_text.sections in the report's order, then the pictures."""

from pipeline.evaluation.report_text.sections import (
    active_units_lines,
    choices_table,
    columns_table,
    covariates_lines,
    d_estimate_lines,
    gradient_variance_lines,
    likelihood_lines,
    odd_rows_lines,
    probe_table,
    subo_table,
)


def report_text(metrics: dict, dataset: dict, latent_dim: int, choices: dict) -> str:
    """report.md: the data and the choices made from it, the probes, the SUBO figures, the
    columns and covariates where there are any, the gradient variance, the odd rows, the pictures."""
    kl_picture = "mean_kl_per_dim" in metrics["generative"]
    lines = [
        *_heading(dataset, latent_dim),
        "## Choices made from the data",
        "",
        *choices_table(choices),
        "## Probes (same protocol for every feature set)",
        "",
        *probe_table(metrics),
        "## SUBO, surprisal and gap",
        "",
        *subo_table(metrics),
        *likelihood_lines(metrics),
        *d_estimate_lines(metrics),
        *active_units_lines(metrics["active_units"], kl_picture),
    ]
    if "columns" in metrics:
        lines += ["## Columns: reconstruction and imputation", "", *columns_table(metrics["columns"])]
    if "covariates" in metrics:
        lines += covariates_lines(metrics["covariates"])
    lines += [
        *gradient_variance_lines(metrics["gradient_variance"]),
        *odd_rows_lines(metrics["odd_rows"], metrics["generative"]["images"]),
        *_pictures(metrics["generative"]["images"], latent_dim, kl_picture),
    ]
    return "\n".join(lines)


def _heading(dataset: dict, latent_dim: int) -> list[str]:
    """The page's title and the data it is about."""
    return [
        f"# Evaluation: {dataset['source']}, latent_dim = {latent_dim}",
        "",
        f"{dataset['counts']['train']} train / {dataset['counts']['test']} test examples of shape "
        f"{dataset['example_shape']}; values are nats per example.",
        "",
    ]


def _pictures(images: bool, latent_dim: int, kl_picture: bool) -> list[str]:
    """The pictures' section: the UMAP, mean D_j per dimension (closed-form D), the latents
    themselves when there are two, and for images the model's reconstructions, samples and
    traversals."""
    lines = [
        "## Pictures",
        "",
        "![UMAP](umap/umap.png)",
        "",
        *(["![mean D_j per latent dimension](pictures/kl_per_dim.png)", ""] if kl_picture else []),
    ]
    if latent_dim == 2:
        lines += ["![latents](umap/latents.png)", ""]
    if images:
        lines += [
            f"![{name}](pictures/{name}.png)\n" for name in ("reconstructions", "samples", "traversals")
        ]
    return lines
