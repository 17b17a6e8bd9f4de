"""The evaluation in one place: metrics.json for `dvc metrics show`, report.md, a short summary.

The evaluation stages each write their own part (baselines.json, latent_metrics.json,
umap.json); this module only reads and arranges them, so the report is
rebuilt in a second whenever one part changes.
"""

import html
import json
from pathlib import Path

from pipeline.platform.errors import DataError
from pipeline.platform.io import Publication, write_json

PARTS = {
    "baselines": "baselines",
    "latent_metrics": "evaluate",
    "umap": "umap",
}  # part -> the stage writing it

# Every key metrics.json can hold, for the reference (docs/reference/outputs.md); `*` stands
# for a split, a baseline set or a column. tests/test_e2e.py fails on a key missing here.
METRICS_KEYS = {
    "probe": "linear probe on z_mean: StandardScaler + LogisticRegression (absent without labels)",
    "probe.accuracy": "test accuracy",
    "probe.macro_f1": "test macro-F1",
    "probe.C": "the C chosen from evaluate.probe.c_grid on a validation part of train",
    "probe.validation_accuracy": "accuracy at that C on the validation part",
    "probe.dim": "features the probe saw (latent_dim)",
    "probe.train_examples": "train rows the probe saw",
    "probe.test_examples": "test rows it was scored on",
    "knn": "k-nearest-neighbour probe on standardised z_mean",
    "knn.accuracy": "test accuracy",
    "knn.k": "evaluate.knn_k",
    "baselines": "the same probes on the raw inputs and on a PCA of them of the latent's size",
    "baselines.*": "pca or raw",
    "baselines.*.linear": "the linear probe: accuracy, macro_f1, C, validation_accuracy",
    "baselines.*.knn": "kNN accuracy",
    "baselines.*.dim": "features (PCA components or raw values)",
    "baselines.*.latent_minus_baseline": "the latents' linear accuracy minus this one",
    "baselines.*.latent_beats_baseline": "whether that difference is above 0",
    "baselines.majority_class_accuracy": "accuracy of always answering the most frequent class",
    "subo": "the SUBO figures, nats per example, per split",
    "subo.*": "validation or test: the rows scored (evaluate.surprisal_examples at most)",
    "subo.*.examples": "how many",
    "subo.*.U": "U, the SUBO (mean over the examples)",
    "subo.*.D": "D = KL(q(z|x) || p(z))",
    "subo.*.D_estimate": "closed form, or Monte Carlo (flow, VampPrior)",
    "subo.*.reconstruction": "E_q[log 1/p(x|z)]",
    "subo.*.S_K": "{K: S_K}, the importance-weighted surprisal for K = 1, 10, ... "
    "evaluate.importance_samples",
    "subo.*.E_K": "{K: U - S_K}, the estimated gap",
    "subo.*.bits_per_dim": "pixels: U, S_K, E_K / (D ln 2)",
    "likelihood": "which p(x|z) the figures are of",
    "likelihood.family": "model.likelihood as resolved",
    "likelihood.kind": "a mass on the data, a density bounded below, or not a distribution over the data",
    "likelihood.levels": "pixel levels L (pixel data)",
    "columns": "tables: per column, reconstruction and imputation of held-out cells (model vs mean or mode)",
    "columns.*": "one column: type, metric (accuracy or rmse), reconstruction, imputation (model, "
    "mean_or_mode, "
    "cells: the hidden cells scored, hidden: the share of observed test cells hidden)",
    "gradient_variance": "variance of the phi-gradient on one fixed batch under both estimators",
    "gradient_variance.reparameterized": "mean per-parameter variance, reparameterized",
    "gradient_variance.score_function": "the same, score function",
    "gradient_variance.ratio": "score_function / reparameterized",
    "gradient_variance.repeats": "draws per estimator",
    "gradient_variance.batch_size": "the batch's size",
    "gradient_variance.skipped": "why it was not measured (a flow or a VampPrior)",
    "active_units": "latent units whose mean varies over test examples (Burda et al.)",
    "active_units.count": "active units",
    "active_units.of": "latent_dim",
    "active_units.threshold": "the variance above which a unit is active",
    "active_units.variance_of_mean": "per unit, the variance of z_mean over test examples",
    "generative": "the pictures' inputs",
    "generative.images": "whether the data are images (pictures drawn)",
    "generative.examples": "test examples used",
    "generative.mean_kl_per_dim": "mean D_j per latent dimension",
    "generative.traversed_dims": "the dimensions traversed (largest mean D_j)",
    "odd_rows": "each split's per-row surprisal (the latents' `surprisal` column): its spread and its ends",
    "odd_rows.*": "train or test",
    "odd_rows.*.rows": "rows scored",
    "odd_rows.*.mean": "mean S_K, nats",
    "odd_rows.*.quantiles": "{q: S_K at q} for q = 0.5, 0.9, 0.99",
    "odd_rows.*.most": "the most surprising rows: id, label, surprisal, quantile among training rows, "
    "novelty; "
    "tables' test rows: cells, the columns of their largest log 1/p(x_c | z = mu), with values",
    "odd_rows.*.least": "the least surprising rows, the same fields",
    "covariates": "data.covariates: per categorical covariate, batch mixing and label conservation "
    "(pipeline.evaluation.mixing), on a seeded sample of test rows",
    "covariates.*": "one covariate",
    "covariates.*.levels": "its levels in the rows scored",
    "covariates.*.chance": "the share of its commonest level: a covariate probe's accuracy with no trace of "
    "it",
    "covariates.*.embeddings": "latent (z_mean), raw, pca, pca_per_batch (PCA of inputs standardized per "
    "batch)",
    "covariates.*.embeddings.*": "one embedding's figures",
    "covariates.*.embeddings.*.ilisi": "iLISI, scaled: 1 neighbourhoods hold the batches as the data does, "
    "0 one",
    "covariates.*.embeddings.*.silhouette_batch": "1 - |silhouette| of the batches within each label, "
    "averaged",
    "covariates.*.embeddings.*.covariate_probe": "a linear probe's accuracy at telling the covariate",
    "covariates.*.embeddings.*.clisi": "cLISI, scaled: 1 when neighbourhoods hold one label",
    "covariates.*.embeddings.*.ari": "adjusted Rand index of a k-means clustering (as many clusters as "
    "labels)",
    "covariates.*.embeddings.*.nmi": "normalized mutual information of that clustering with the labels",
    "umap": "how the UMAP was made",
    "umap.split": "evaluate.umap.split",
    "umap.points": "points embedded",
    "umap.n_neighbors": "evaluate.umap.n_neighbors",
    "umap.min_dist": "evaluate.umap.min_dist",
    "umap.seed": "the seed",
}


def undocumented_keys(metrics: dict, prefix: tuple = ()) -> list[str]:
    """The keys of a metrics.json that METRICS_KEYS does not describe."""
    missing = []
    for key, value in metrics.items():
        path = (*prefix, key)
        pattern = next((p for p in METRICS_KEYS if _matches(p.split("."), path)), None)
        if pattern is None:
            missing.append(".".join(path))
        elif isinstance(value, dict) and any(p.startswith(pattern + ".") for p in METRICS_KEYS):
            missing += undocumented_keys(value, path)
    return missing


def _matches(pattern: list[str], path: tuple) -> bool:
    return len(pattern) == len(path) and all(p in ("*", k) for p, k in zip(pattern, path))


def combine(parts: dict) -> dict:
    """The metrics of every part, with each baseline set beside the latents."""
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
    return {**metrics, "umap": parts["umap"]}


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def probe_table(metrics: dict) -> list[str]:
    if "probe" not in metrics:
        return ["No probes: the data has no labels (or one class).", ""]
    base, probe = metrics["baselines"], metrics["probe"]
    lines = [
        _row("features", "dim", "linear accuracy", "macro-F1", "C", "kNN accuracy"),
        _row(*["---"] * 6),
        _row(
            "latents z_mean",
            probe["dim"],
            _num(probe["accuracy"]),
            _num(probe["macro_f1"]),
            probe["C"],
            _num(metrics["knn"]["accuracy"]),
        ),
    ]
    for name, label in (("pca", "PCA of inputs"), ("raw", "raw inputs")):
        b = base[name]
        lines.append(
            _row(
                label,
                b["dim"],
                _num(b["linear"]["accuracy"]),
                _num(b["linear"]["macro_f1"]),
                b["linear"]["C"],
                _num(b["knn"]),
            )
        )
    return lines + [
        "",
        f"Majority class: {_num(base['majority_class_accuracy'])}. "
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
        _row(
            "split", "examples", "U", "D", "reconstruction", *[f"S_{k}" for k in ks], *[f"E_{k}" for k in ks]
        ),
        _row(*["---"] * (5 + 2 * len(ks))),
    ]
    for split, f in metrics["subo"].items():
        lines.append(
            _row(
                split,
                f["examples"],
                _num(f["U"], 2),
                _num(f["D"], 2),
                _num(f["reconstruction"], 2),
                *[_num(v, 2) for v in f["S_K"].values()],
                *[_num(v, 2) for v in f["E_K"].values()],
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
        _row("column", "type", "metric", "reconstruction", "imputed (model)", "imputed (mean/mode)", "cells"),
        _row(*["---"] * 7),
    ]
    for name, c in columns.items():
        i = c["imputation"]
        lines.append(
            _row(
                f"`{name}`",
                c["type"],
                c["metric"],
                _num(c["reconstruction"]),
                _num(i["model"]),
                _num(i["mean_or_mode"]),
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
            f"`{_text(covariate)}`: {figures['levels']} levels, the commonest {figures['chance']:.0%} of the "
            "rows scored.",
            "",
            _row("features", "iLISI", "silhouette batch", "covariate probe", "cLISI", "ARI", "NMI"),
            _row(*["---"] * 7),
        ]
        lines += [
            _row(names.get(name, name), *(_num(f[key]) if f.get(key) is not None else "—" for key in keys))
            for name, f in figures["embeddings"].items()
        ]
        lines += ["", f"![the UMAP by {_text(covariate)}](umap/covariate_{j}.png)", ""]
    return lines + [
        "Mixing: iLISI and silhouette batch near 1, the covariate probe near chance. Conservation of "
        "the label: cLISI, ARI and NMI high (pipeline.evaluation.mixing).",
        "",
    ]


def odd_rows_lines(odd: dict, images: bool) -> list[str]:
    """Each split's surprisal per row, its most surprising test rows, and their pictures."""
    quantiles = list(next(iter(odd.values()))["quantiles"])
    lines = [
        "## The odd rows",
        "",
        "Every row's surprisal S_K is in the latents (`surprisal`, `surprisal_quantile`, "
        "`novelty`: docs/how-to/use-latents.md). S_K per row, nats:",
        "",
        _row("split", "rows", "mean", *(f"{float(q):.0%}" for q in quantiles)),
        _row(*["---"] * (3 + len(quantiles))),
    ]
    lines += [
        _row(split, f["rows"], _num(f["mean"], 2), *(_num(v, 2) for v in f["quantiles"].values()))
        for split, f in odd.items()
    ]
    most = odd["test"]["most"]
    cells = bool(most) and "cells" in most[0]  # a table's rows: the cells that surprise the model most
    lines += [
        "",
        "The most surprising test rows (novelty 1: as odd as the training rows' 99th percentile"
        + (
            "; a row's most surprising cells are its columns' log 1/p(x_c | z = μ_φ(x)), nats"
            if cells
            else ""
        )
        + "):",
        "",
        _row(
            "id",
            "label",
            "S_K",
            "quantile among training rows",
            "novelty",
            *(["most surprising cells"] if cells else []),
        ),
        _row(*["---"] * (6 if cells else 5)),
    ]
    lines += [
        _row(
            r["id"],
            _text(r["label"]),
            _num(r["surprisal"], 2),
            _num(r["quantile"], 4),
            _num(r["novelty"], 2),
            *(
                [
                    ", ".join(
                        f"`{_text(c['column'])}` = {_text(c['value'])} ({c['nats']:.1f})" for c in r["cells"]
                    )
                ]
                if cells
                else []
            ),
        )
        for r in most
    ]
    lines += ["", "![each row's surprisal, by split](pictures/surprisal_histogram.png)", ""]
    return lines + (
        ["![the most and least surprising test examples](pictures/odd_rows.png)", ""] if images else []
    )


def _text(value) -> str:
    """A user's label in a table cell: escaped, its pipes too."""
    return "—" if value is None else html.escape(str(value)).replace("|", "\\|")


def choices_table(choices: dict) -> list[str]:
    """The knobs that are `auto` by default: what each became, and why."""
    lines = [_row("knob", "value", "why"), _row(*["---"] * 3)]
    lines += [_row(f"`{key}`", f"`{item['value']}`", item["why"]) for key, item in choices.items()]
    return lines + [""]


def report_text(metrics: dict, dataset: dict, latent_dim: int, choices: dict) -> str:
    kl_picture = "mean_kl_per_dim" in metrics["generative"]
    lines = [
        f"# Evaluation: {dataset['source']}, latent_dim = {latent_dim}",
        "",
        f"{dataset['counts']['train']} train / {dataset['counts']['test']} test examples of shape "
        f"{dataset['example_shape']}; values are nats per example.",
        "",
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
        "## Pictures",
        "",
        "![UMAP](umap/umap.png)",
        "",
        *(["![mean D_j per latent dimension](pictures/kl_per_dim.png)", ""] if kl_picture else []),
    ]
    if latent_dim == 2:
        lines += ["![latents](umap/latents.png)", ""]
    if metrics["generative"]["images"]:
        lines += [
            f"![{name}](pictures/{name}.png)\n" for name in ("reconstructions", "samples", "traversals")
        ]
    return "\n".join(lines)


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
