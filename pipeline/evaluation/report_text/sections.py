"""report.md's sections, one function each: metrics.json's figures as Markdown lines.

Each returns a list of lines (a blank one last, or none at all where the figures are absent);
pipeline.evaluation.report_text.page puts them in the page's order, and the report stage
prints some of them as its summary.
"""

from pipeline.evaluation.report_text.cells import num, row, text


def probe_table(metrics: dict) -> list[str]:
    if "probe" not in metrics:
        return ["No probes: the data has no labels (or one class).", ""]
    base, probe = metrics["baselines"], metrics["probe"]
    lines = [
        row("features", "dim", "linear accuracy", "macro-F1", "C", "kNN accuracy"),
        row(*["---"] * 6),
        row(
            "latents z_mean",
            probe["dim"],
            num(probe["accuracy"]),
            num(probe["macro_f1"]),
            probe["C"],
            num(metrics["knn"]["accuracy"]),
        ),
    ]
    for name, label in (("pca", "PCA of inputs"), ("raw", "raw inputs")):
        b = base[name]
        lines.append(
            row(
                label,
                b["dim"],
                num(b["linear"]["accuracy"]),
                num(b["linear"]["macro_f1"]),
                b["linear"]["C"],
                num(b["knn"]),
            )
        )
    return lines + [
        "",
        f"Majority class: {num(base['majority_class_accuracy'])}. "
        f"Latents minus PCA: {base['pca']['latent_minus_baseline']:+.3f}; "
        f"minus raw: {base['raw']['latent_minus_baseline']:+.3f}.",
        "",
    ]


def likelihood_lines(metrics: dict) -> list[str]:
    """Which likelihood, whether S is a surprisal, and (pixels) the figures in bits per dimension."""
    likelihood = metrics.get("likelihood")
    if not likelihood:
        return []
    lines = [f"Likelihood p(x|z): `{likelihood['family']}`, {likelihood['kind']}."]
    test = metrics["subo"].get("test", {}).get("bits_per_dim")
    if test:
        k = list(test["S_K"])[-1]
        lines[0] += (
            f" Test in bits per dimension: U {test['U']:.3f}, S_{k} {test['S_K'][k]:.3f}, "
            f"E_{k} {test['E_K'][k]:.3f}."
        )
    return lines + [""]


def subo_table(metrics: dict) -> list[str]:
    ks = list(metrics["subo"]["test"]["S_K"])
    lines = [
        row(
            "split", "examples", "U", "D", "reconstruction", *[f"S_{k}" for k in ks], *[f"E_{k}" for k in ks]
        ),
        row(*["---"] * (5 + 2 * len(ks))),
    ]
    for split, f in metrics["subo"].items():
        lines.append(
            row(
                split,
                f["examples"],
                num(f["U"], 2),
                num(f["D"], 2),
                num(f["reconstruction"], 2),
                *[num(v, 2) for v in f["S_K"].values()],
                *[num(v, 2) for v in f["E_K"].values()],
            )
        )
    return lines + [""]


def active_units_lines(active: dict, kl_picture: bool) -> list[str]:
    dims = ", ".join(f"{v:.3g}" for v in active["variance_of_mean"])
    return [
        f"Active latent units: **{active['count']} of {active['of']}** (Var_x E_q[z_j] > "
        f"{active['threshold']}, "
        f"test examples; per dimension: {dims})."
        + (" Mean D_j per dimension: pictures/kl_per_dim.png." if kl_picture else ""),
        "",
    ]


def d_estimate_lines(metrics: dict) -> list[str]:
    """How D was computed, where it has no closed form (a flow proxy or a VampPrior)."""
    estimate = metrics["subo"]["test"].get("D_estimate", "closed form")
    if estimate == "closed form":
        return []
    return [
        f"D = KL(q(z|x) ‖ p(z)) has no closed form for this proxy and prior: {estimate}, so U and E_K "
        "carry its Monte Carlo error.",
        "",
    ]


def gradient_variance_lines(g: dict) -> list[str]:
    if "skipped" in g:
        return [f"φ-gradient variance: not measured ({g['skipped']}).", ""]
    return [
        f"φ-gradient variance on one batch of {g['batch_size']} ({g['repeats']} draws): "
        f"reparameterized {g['reparameterized']:.4g}, score function {g['score_function']:.4g}, "
        f"ratio {g['ratio']:.1f}.",
        "",
    ]


def columns_table(columns: dict) -> list[str]:
    """Per table column: reconstruction of the observed cells, imputation of hidden ones."""
    lines = [
        row("column", "type", "metric", "reconstruction", "imputed (model)", "imputed (mean/mode)", "cells"),
        row(*["---"] * 7),
    ]
    for name, c in columns.items():
        i = c["imputation"]
        lines.append(
            row(
                f"`{name}`",
                c["type"],
                c["metric"],
                num(c["reconstruction"]),
                num(i["model"]),
                num(i["mean_or_mode"]),
                i["cells"],
            )
        )
    hidden = next(iter(columns.values()))["imputation"]["hidden"] if columns else 0
    return lines + [
        "",
        "RMSE in the column's units (counts as counts); accuracy for binary and categorical "
        f"columns. Imputed: a seeded {hidden:.0%} of each column's observed test cells, hidden from "
        "the encoder and predicted back (pipeline.latents.imputation).",
        "",
    ]


def covariates_lines(covariates: dict) -> list[str]:
    """Per covariate: is it gone from each embedding (mixing), and is the label kept (conservation)?"""
    lines = ["## Covariates: the batch gone, the label kept?", ""]
    names = {
        "latent": "latents z_mean",
        "pca": "PCA of inputs",
        "pca_per_batch": "PCA, inputs standardized per batch",
        "raw": "raw inputs",
    }
    keys = ("ilisi", "silhouette_batch", "covariate_probe", "clisi", "ari", "nmi")
    for j, (covariate, figures) in enumerate(
        covariates.items()
    ):  # the categorical ones, as the UMAP numbers them
        lines += [
            f"`{text(covariate)}`: {figures['levels']} levels, the commonest {figures['chance']:.0%} of the "
            "rows scored.",
            "",
            row("features", "iLISI", "silhouette batch", "covariate probe", "cLISI", "ARI", "NMI"),
            row(*["---"] * 7),
        ]
        lines += [
            row(names.get(name, name), *(num(f[key]) if f.get(key) is not None else "—" for key in keys))
            for name, f in figures["embeddings"].items()
        ]
        lines += ["", f"![the UMAP by {text(covariate)}](umap/covariate_{j}.png)", ""]
    return lines + [
        "Mixing: iLISI and silhouette batch near 1, the covariate probe near chance. Conservation of "
        "the label: cLISI, ARI and NMI high (pipeline.evaluation.mixing).",
        "",
    ]


def odd_rows_lines(odd: dict, images: bool) -> list[str]:
    """Each split's surprisal per row, its most surprising test rows, and their pictures."""
    lines = [
        "## The odd rows",
        "",
        "Every row's surprisal S_K is in the latents (`surprisal`, `surprisal_quantile`, "
        "`novelty`: docs/how-to/use-latents.md). S_K per row, nats:",
        "",
        *_surprisal_table(odd),
        "",
        *_most_surprising_table(odd["test"]["most"]),
        "",
        "![each row's surprisal, by split](pictures/surprisal_histogram.png)",
        "",
    ]
    return lines + (
        ["![the most and least surprising test examples](pictures/odd_rows.png)", ""] if images else []
    )


def _surprisal_table(odd: dict) -> list[str]:
    """Per split: the rows scored, their mean S_K and its quantiles."""
    quantiles = list(next(iter(odd.values()))["quantiles"])
    lines = [
        row("split", "rows", "mean", *(f"{float(q):.0%}" for q in quantiles)),
        row(*["---"] * (3 + len(quantiles))),
    ]
    return lines + [
        row(split, f["rows"], num(f["mean"], 2), *(num(v, 2) for v in f["quantiles"].values()))
        for split, f in odd.items()
    ]


def _most_surprising_table(most: list[dict]) -> list[str]:
    """The most surprising test rows, with how they rank among the training rows; a table's rows
    with the cells that surprise the model most."""
    cells = bool(most) and "cells" in most[0]  # a table's rows: the cells that surprise the model most
    lines = [
        "The most surprising test rows (novelty 1: as odd as the training rows' 99th percentile"
        + (
            "; a row's most surprising cells are its columns' log 1/p(x_c | z = μ_φ(x)), nats"
            if cells
            else ""
        )
        + "):",
        "",
        row(
            "id",
            "label",
            "S_K",
            "quantile among training rows",
            "novelty",
            *(["most surprising cells"] if cells else []),
        ),
        row(*["---"] * (6 if cells else 5)),
    ]
    return lines + [
        row(
            r["id"],
            text(r["label"]),
            num(r["surprisal"], 2),
            num(r["quantile"], 4),
            num(r["novelty"], 2),
            *([_surprising_cells(r["cells"])] if cells else []),
        )
        for r in most
    ]


def _surprising_cells(cells: list[dict]) -> str:
    """A table row's most surprising cells: each column, its value and log 1/p(x_c | z = μ) in nats."""
    return ", ".join(f"`{text(c['column'])}` = {text(c['value'])} ({c['nats']:.1f})" for c in cells)


def choices_table(choices: dict) -> list[str]:
    """The knobs that are `auto` by default: what each became, and why."""
    lines = [row("knob", "value", "why"), row(*["---"] * 3)]
    lines += [row(f"`{key}`", f"`{item['value']}`", item["why"]) for key, item in choices.items()]
    return lines + [""]
