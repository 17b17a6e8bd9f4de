"""The evaluate stage's first question: are the latents any good as features?

Their active units (Burda et al.) over every test row; with labels, linear and kNN probes on
z_mean with the baselines' protocol (pipeline.evaluation.probes) and the linear probe's test
predictions (confusion.csv); with covariates, how mixed the batches are in z_mean
(pipeline.evaluation.mixing). z_mean is read a row group at a time, keeping only the rows
each figure uses.
"""

import logging

import numpy as np

from pipeline.data.prepared import is_labelled
from pipeline.evaluation.mixing import covariate_codes, covariate_figures, mixing_rows
from pipeline.evaluation.plotting import csv_text
from pipeline.evaluation.probes import ProbeProtocol, check_knn_k, probe_rows, probe_suite
from pipeline.latents.reader import read_z_mean
from pipeline.model.diagnostics import Moments, active_units, collapse_warning
from pipeline.platform.console import timed

log = logging.getLogger(__name__)


def latent_metrics(bundle, manifest, data: dict, latents_dir, protocol: ProbeProtocol) -> tuple[dict, str]:
    """Active units over every test row and, with labels, the probes on z_mean (read a row
    group at a time, keeping only the probes' rows); and confusion.csv's text."""
    vae = bundle.vae
    labelled = is_labelled(manifest, data)
    if labelled:
        check_knn_k(protocol, len(data["train"]))
    rows = dict(
        zip(
            ("train", "test"), probe_rows(data["train"].y, data["test"].y, protocol) if labelled else ([], [])
        )
    )
    test_moments = Moments()
    z = _probe_z(latents_dir, manifest, data, rows, vae.latent_dim, test_moments)
    metrics: dict = {
        "latent_dim": vae.latent_dim,
        "choices": bundle.choices or {},
        "active_units": active_units(test_moments.variance),
    }
    if warning := collapse_warning(metrics["active_units"]):
        log.warning("%s", warning)
    confusion = "actual,predicted,id\n"  # header only without labels: DVC still expects the file
    if labelled:
        with timed("probes on the latents"):
            labels = {s: np.asarray(data[s].y[r]) for s, r in rows.items()}
            probes, confusion = _latent_probes(
                z, labels, manifest.label_names, protocol, np.asarray(data["test"].id[rows["test"]])
            )
        metrics.update(probes)
    if manifest.covariates:
        with timed("batch mixing of the latents"):
            metrics["covariates"] = _latent_mixing(vae, manifest, data, latents_dir, protocol, labelled)
    return metrics, confusion


def _probe_z(latents_dir, manifest, data: dict, rows: dict, latent_dim: int, test_moments: Moments) -> dict:
    """{split: z_mean of the probes' rows}, reading every row of the test split on the way so
    that test_moments sees them all (the active units are of every test row)."""
    return {
        split: read_z_mean(
            latents_dir,
            split,
            data[split].id,
            manifest.fingerprint,
            rows[split],
            latent_dim,
            visit=test_moments.add if split == "test" else None,
        )
        for split in ("train", "test")
    }


def _latent_mixing(vae, manifest, data: dict, latents_dir, protocol: ProbeProtocol, labelled: bool) -> dict:
    """pipeline.evaluation.mixing's figures of z_mean, for each categorical covariate."""
    rows = mixing_rows(data, protocol.seed)
    z = [
        read_z_mean(latents_dir, split, data[split].id, manifest.fingerprint, rows[split], vae.latent_dim)
        for split in ("train", "test")
    ]
    labels = np.asarray(data["test"].y[rows["test"]]) if labelled else None
    return covariate_figures(
        lambda batch: {"latent": tuple(z)}, covariate_codes(data, rows, manifest.covariates), labels, protocol
    )


def _latent_probes(
    z: dict, labels: dict, label_names: list[str], protocol: ProbeProtocol, test_ids: np.ndarray
) -> tuple[dict, str]:
    """metrics["probe"] and ["knn"] from z_mean and the labels of the probes' rows (`probe_rows`),
    and the linear probe's test predictions, with each row's id, as confusion.csv text."""
    scores, predicted = probe_suite(
        {"latent": (z["train"], z["test"])}, labels["train"], labels["test"], protocol
    )
    latent = scores["latent"]
    names = np.array(label_names)
    pairs = zip(names[labels["test"]], names[predicted], test_ids)
    return (
        {
            "probe": {
                **latent["linear"],
                "dim": latent["dim"],
                "train_examples": scores["train_examples"],
                "test_examples": scores["test_examples"],
            },
            "knn": {"accuracy": latent["knn"], "k": protocol.knn_k},
        },
        csv_text(["actual", "predicted", "id"], pairs),
    )
