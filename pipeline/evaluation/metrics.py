"""metrics.json's schema: one frozen dataclass per part, every field documented.

The report stage builds `Metrics` from the parts the evaluation stages wrote
(`Metrics.of`): a key no class declares, or a declared one missing, is an error naming its
dotted path, at the stage that writes the file. metrics.json is `Metrics.as_dict()`, in the
classes' field order; the reference (docs/reference/outputs.md) lists `metrics_keys()`.

Fields: `known(doc)` is always there (its value may be null: a figure that cannot be had);
`absent(doc)` is left out where it does not apply (no labels, no covariates, not pixels);
a `dict[str, Part]` field documents its keys with `each`.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from pipeline.platform.errors import DataError


def known(doc: str, each: str = ""):
    return field(metadata={"doc": doc, "each": each, "absent": False})


def absent(doc: str, each: str = ""):
    return field(default=None, metadata={"doc": doc, "each": each, "absent": True})


class Part:
    """A part of metrics.json: built from its dict, checked key by key, and written back."""

    @classmethod
    def of(cls, raw: dict, path: str = ""):
        if not isinstance(raw, dict):
            raise DataError(f"metrics {path or '(top)'}: expected a mapping, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [key for key in raw if key not in names]
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw and not f.metadata["absent"]]
        if unknown or missing:
            where = f"metrics {path}: " if path else "metrics: "
            raise DataError(
                f"{where}keys {unknown} are not in pipeline.evaluation.metrics.{cls.__name__}"
                if unknown
                else f"{where}{cls.__name__} needs {missing}"
            )
        hints = typing.get_type_hints(cls)
        return cls(
            **{key: _typed(hints[key], value, f"{path}.{key}".lstrip(".")) for key, value in raw.items()}
        )

    def as_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata["absent"]:
                continue
            out[f.name] = _plain(value)
        return out


def _part_of(hint) -> type | None:
    """The Part class a hint names (itself, or inside `X | None`), else None."""
    for option in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        if isinstance(option, type) and issubclass(option, Part):
            return option
    return None


def _each_of(hint) -> type | None:
    """The Part class of a `dict[str, Part]` hint's values (inside `| None` too), else None."""
    for option in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        if typing.get_origin(option) is dict and _part_of(typing.get_args(option)[1]):
            return typing.get_args(option)[1]
    return None


def _typed(hint, value, path: str):
    if value is None:
        return None
    if part := _part_of(hint):
        return part.of(value, path)
    if each := _each_of(hint):
        return {key: each.of(item, f"{path}.{key}") for key, item in value.items()}
    return value


def _plain(value):
    if isinstance(value, Part):
        return value.as_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def metrics_keys(cls: type | None = None, prefix: str = "") -> dict[str, str]:
    """{dotted key: what it holds} for every field under `cls` (Metrics), `*` for a mapping's keys."""
    cls = cls or Metrics
    keys, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys[key] = f.metadata["doc"]
        if each := _each_of(hints[f.name]):
            keys[f"{key}.*"] = f.metadata["each"]
            keys |= metrics_keys(each, f"{key}.*.")
        elif part := _part_of(hints[f.name]):
            keys |= metrics_keys(part, f"{key}.")
    return keys


@dataclass(frozen=True, kw_only=True)
class ActiveUnits(Part):
    count: int = known("active units")
    of: int = known("latent_dim")
    threshold: float = known("the variance above which a unit is active")
    variance_of_mean: list = known("per unit, the variance of z_mean over test examples")


@dataclass(frozen=True, kw_only=True)
class LinearProbe(Part):
    accuracy: float = known("test accuracy")
    macro_f1: float = known("test macro-F1")
    C: float = known("the C chosen from evaluate.probe.c_grid on a validation part of train")
    validation_accuracy: float = known("accuracy at that C on the validation part")
    dim: int = absent("features the probe saw (latent_dim)")
    train_examples: int = absent("train rows the probe saw")
    test_examples: int = absent("test rows it was scored on")


@dataclass(frozen=True, kw_only=True)
class KnnProbe(Part):
    accuracy: float = known("test accuracy")
    k: int = known("evaluate.knn_k")


@dataclass(frozen=True, kw_only=True)
class Mixing(Part):
    ilisi: float | None = known("iLISI, scaled: 1 neighbourhoods hold the batches as the data does, 0 one")
    covariate_probe: float | None = known("a linear probe's accuracy at telling the covariate")
    silhouette_batch: float | None = absent("1 - |silhouette| of the batches within each label, averaged")
    clisi: float | None = absent("cLISI, scaled: 1 when neighbourhoods hold one label")
    ari: float | None = absent("adjusted Rand index of a k-means clustering (as many clusters as labels)")
    nmi: float | None = absent("normalized mutual information of that clustering with the labels")


@dataclass(frozen=True, kw_only=True)
class CovariateMixing(Part):
    levels: int = known("its levels in the rows scored")
    chance: float = known(
        "the share of its commonest level: a covariate probe's accuracy with no trace of it"
    )
    embeddings: dict[str, Mixing] = known(
        "latent (z_mean), raw, pca, pca_per_batch (PCA of inputs standardized per batch)",
        each="one embedding's figures",
    )


@dataclass(frozen=True, kw_only=True)
class Bound(Part):
    examples: int = known("how many")
    U: float = known("U, the SUBO (mean over the examples)")
    D: float = known("D = KL(q(z|x) || p(z))")
    D_estimate: str = known("closed form, or Monte Carlo (flow, VampPrior)")
    reconstruction: float = known("E_q[log 1/p(x|z)]")
    S_K: dict = known(
        "{K: S_K}, the importance-weighted surprisal for K = 1, 10, ... evaluate.importance_samples"
    )
    E_K: dict = known("{K: U - S_K}, the estimated gap")
    bits_per_dim: dict = absent("pixels: U, S_K, E_K / (D ln 2)")


@dataclass(frozen=True, kw_only=True)
class Likelihood(Part):
    family: str = known("model.likelihood as resolved")
    kind: str = known("a mass on the data, a density bounded below, or not a distribution over the data")
    levels: int | None = known("pixel levels L (pixel data; null otherwise)")


@dataclass(frozen=True, kw_only=True)
class Imputation(Part):
    model: float = known("the model's score on the hidden cells (posterior-mean imputation)")
    mean_or_mode: float = known("the train mean's or mode's score on them")
    cells: int = known("the hidden cells scored")
    hidden: float = known("the share of observed test cells hidden")


@dataclass(frozen=True, kw_only=True)
class ColumnQuality(Part):
    type: str = known("the column's type (real, binary, categorical, count)")
    metric: str = known("accuracy or rmse")
    reconstruction: float = known("the metric of the decoder's mean on the observed cells")
    imputation: Imputation = known("held-out cells: the model against the mean or mode")


@dataclass(frozen=True, kw_only=True)
class GradientVariance(Part):
    reparameterized: float = absent("mean per-parameter variance, reparameterized")
    score_function: float = absent("the same, score function")
    ratio: float = absent("score_function / reparameterized")
    repeats: int = absent("draws per estimator")
    batch_size: int = absent("the batch's size")
    skipped: str = absent("why it was not measured (a flow or a VampPrior)")


@dataclass(frozen=True, kw_only=True)
class Generative(Part):
    images: bool = known("whether the data are images (pictures drawn)")
    examples: int = known("test examples used")
    mean_kl_per_dim: list = absent("mean D_j per latent dimension (D in closed form)")
    variance_of_mean_per_dim: list = absent("a flow or VampPrior: Var_x z_mean_j, how the units are ranked")
    traversed_dims: list = absent("the dimensions traversed (the most used)")


@dataclass(frozen=True, kw_only=True)
class OddRows(Part):
    rows: int = known("rows scored")
    mean: float = known("mean S_K, nats")
    quantiles: dict = known("{q: S_K at q} for q = 0.5, 0.9, 0.99")
    most: list = known(
        "the most surprising rows: id, label, surprisal, quantile among training rows, novelty; "
        "tables' test rows: cells, the columns of their largest log 1/p(x_c | z = mu), with values"
    )
    least: list = known("the least surprising rows, the same fields")


@dataclass(frozen=True, kw_only=True)
class BaselineSet(Part):
    linear: LinearProbe = known("the linear probe: accuracy, macro_f1, C, validation_accuracy")
    knn: float = known("kNN accuracy")
    dim: int = known("features (PCA components or raw values)")
    latent_minus_baseline: float = known("the latents' linear accuracy minus this one")
    latent_beats_baseline: bool = known("whether that difference is above 0")


@dataclass(frozen=True, kw_only=True)
class Baselines(Part):
    pca: BaselineSet = known("a PCA of the inputs, as many components as latent units")
    raw: BaselineSet = known("the raw inputs")
    majority_class_accuracy: float = known("accuracy of always answering the most frequent class")


@dataclass(frozen=True, kw_only=True)
class Umap(Part):
    split: str = known("evaluate.umap.split")
    points: int = known("points embedded")
    n_neighbors: int = known("evaluate.umap.n_neighbors")
    min_dist: float = known("evaluate.umap.min_dist")
    seed: int = known("the seed")


@dataclass(frozen=True, kw_only=True)
class Metrics(Part):
    """metrics.json, in the order `dvc metrics show` lists it."""

    active_units: ActiveUnits = known("latent units whose mean varies over test examples (Burda et al.)")
    probe: LinearProbe | None = absent(
        "linear probe on z_mean: StandardScaler + LogisticRegression (labels only)"
    )
    knn: KnnProbe | None = absent("k-nearest-neighbour probe on standardised z_mean (labels only)")
    covariates: dict[str, CovariateMixing] | None = absent(
        "data.covariates: per categorical covariate, batch mixing and label conservation "
        "(pipeline.evaluation.mixing), on a seeded sample of test rows",
        each="one covariate",
    )
    subo: dict[str, Bound] = known(
        "the SUBO figures, nats per example, per split",
        each="validation or test: the rows scored (evaluate.surprisal_examples at most)",
    )
    likelihood: Likelihood = known("which p(x|z) the figures are of")
    columns: dict[str, ColumnQuality] | None = absent(
        "tables: per column, reconstruction and imputation of held-out cells (model vs mean or mode)",
        each="one column",
    )
    gradient_variance: GradientVariance = known(
        "variance of the phi-gradient on one fixed batch, both estimators"
    )
    generative: Generative = known("the pictures' inputs")
    odd_rows: dict[str, OddRows] = known(
        "each split's per-row surprisal (the latents' `surprisal` column): its spread and its ends",
        each="train or test",
    )
    baselines: Baselines | None = absent("the same probes on the raw inputs and a PCA of them (labels only)")
    umap: Umap = known("how the UMAP was made")
