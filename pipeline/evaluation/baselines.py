"""The baselines stage: the same probes on the raw inputs and on a PCA of them.

They depend on the prepared data and the probe protocol alone (and on the latent size,
which sets the PCA's), so DVC keeps them while models change.
"""

import math

import numpy as np

from pipeline.data.prepared import is_labelled, load_splits
from pipeline.evaluation.mixing import covariate_codes, covariate_figures, mixing_rows, per_batch_standardized
from pipeline.evaluation.probes import ProbeProtocol, check_knn_k, probe_rows, probe_suite
from pipeline.latents.imputation import column_fill
from pipeline.platform.console import timed
from pipeline.platform.io import Publication, write_json
from pipeline.platform.params.config import Params


def from_params(params: Params, *, prepared_dir, out_dir) -> dict:
    """The stage's recipe: the params it reads, passed on (stages/baselines.py and pipeline.runner)."""
    protocol = ProbeProtocol.of(params.evaluate.probe, knn_k=params.evaluate.knn_k, seed=params.seed)
    return baselines(
        prepared_dir=prepared_dir, out_dir=out_dir, dim=params.model.latent_dim, protocol=protocol
    )


def as_the_encoder_sees(
    train: np.ndarray, test: np.ndarray, manifest, preprocess
) -> tuple[np.ndarray, np.ndarray]:
    """The baselines' view of a table or count matrix, with the information the encoder has:
    counts as log1p; every missing cell imputed from the train rows, with the mean of a
    real or count column and the mode of a binary or categorical one (its one-hot); and one
    missing indicator per column with missing cells."""
    source = preprocess.source if preprocess.source is not None else np.arange(train.shape[1])
    kinds = [c.type for c in manifest.columns] if manifest.columns else ["count"] * train.shape[1]
    parts, flags = [train.copy(), test.copy()], []
    for c, kind in enumerate(kinds):
        features = np.flatnonzero(source == c)
        if kind == "count":
            for part in parts:
                part[:, features] = np.log1p(part[:, features])
        observed = np.isfinite(parts[0][:, features[0]])
        fill = column_fill(kind, parts[0][observed][:, features])
        for part in parts:
            missing = np.isnan(part[:, features[0]])
            part[np.ix_(missing, features)] = fill
            if manifest.columns and manifest.columns[c].missing > 0:
                flags.append(missing)
    return tuple(np.column_stack([part, *flags[i::2]]) for i, part in enumerate(parts))


def baselines(*, prepared_dir, out_dir, dim: int, protocol: ProbeProtocol) -> dict:
    """baselines.json: linear and kNN probes on the raw inputs and on their d-dimensional PCA.

    Only the probes' rows are read; the PCA is fitted on the probes' train rows.
    """
    from sklearn.decomposition import PCA

    publication = Publication(out_dir, "baselines")
    publication.recover()  # what a killed run of this stage left
    manifest, data = load_splits(prepared_dir)
    dataset = {key: getattr(manifest, key) for key in ("source", "counts", "example_shape", "label_names")}
    result: dict = {"dataset": dataset, "labelled": is_labelled(manifest, data)}
    if result["labelled"]:
        check_knn_k(protocol, len(data["train"]))
        rows = dict(zip(("train", "test"), probe_rows(data["train"].y, data["test"].y, protocol)))
        flat = _flat(data, manifest, rows)
        pca = PCA(n_components=min(dim, flat["train"].shape[1]), random_state=protocol.seed).fit(
            flat["train"]
        )
        features = {
            "pca": (pca.transform(flat["train"]), pca.transform(flat["test"])),
            "raw": (flat["train"], flat["test"]),
        }
        labels = {split: np.asarray(data[split].y[r]) for split, r in rows.items()}
        with timed("probes on the raw inputs and their PCA"):
            scores, _ = probe_suite(features, labels["train"], labels["test"], protocol)
        test_y = np.asarray(data["test"].y)
        result.update(scores, majority_class_accuracy=float(np.bincount(test_y).max() / len(test_y)))
    if manifest.covariates:
        with timed("batch mixing of the raw inputs and their PCA"):
            result["covariates"] = _covariate_baselines(data, manifest, dim, protocol, result["labelled"])
    with publication.staged() as staging:
        write_json(staging / "baselines.json", result)
    return result


def _flat(data: dict, manifest, rows: dict) -> dict[str, np.ndarray]:
    """{split: the rows' inputs, flat, float64, less the covariates, as the encoder sees them}."""
    # float64: PCA in float32 loses enough precision to move the probe (digits PCA-8: 0.897 vs 0.903).
    width = math.prod(manifest.feature_shape)
    flat = {
        split: data[split].inputs(r).astype(np.float64).reshape(len(r), -1)[:, :width]
        for split, r in rows.items()
    }
    if manifest.columns is not None or manifest.value_type == "count":
        flat = dict(
            zip(flat, as_the_encoder_sees(flat["train"], flat["test"], manifest, data["train"].preprocess))
        )
    return flat


def _covariate_baselines(data: dict, manifest, dim: int, protocol: ProbeProtocol, labelled: bool) -> dict:
    """pipeline.evaluation.mixing's figures of the raw inputs, their PCA, and a PCA of the inputs
    standardized within each batch of the covariate."""
    from sklearn.decomposition import PCA

    rows = mixing_rows(data, protocol.seed)
    flat = _flat(data, manifest, rows)
    components = min(dim, flat["train"].shape[1])
    pca = PCA(n_components=components, random_state=protocol.seed).fit(flat["train"])
    fixed = {
        "raw": (flat["train"], flat["test"]),
        "pca": (pca.transform(flat["train"]), pca.transform(flat["test"])),
    }

    def embeddings(batch):
        standardized = per_batch_standardized(flat["train"], flat["test"], *batch)
        per_batch = PCA(n_components=components, random_state=protocol.seed).fit(standardized[0])
        return {**fixed, "pca_per_batch": tuple(per_batch.transform(part) for part in standardized)}

    labels = np.asarray(data["test"].y[rows["test"]]) if labelled else None
    return covariate_figures(embeddings, covariate_codes(data, rows, manifest.covariates), labels, protocol)
