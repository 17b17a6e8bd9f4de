"""The evaluate stage: are the latents any good, and how tight is the bound?

Probes on z_mean with the baselines' protocol (pipeline.evaluation.baselines), U, D, S_K and E_K on
validation and test examples, the φ-gradient variance of both estimators, and pictures of
the model; with covariates, batch mixing (pipeline.evaluation.mixing). Everything is written
through the stage's `Publication`: nothing under out_dir changes unless all succeeds.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

from pipeline.data.prepared import Split, fixed_inputs, is_labelled, load_splits, seeded_rows, validation_rows
from pipeline.evaluation.mixing import covariate_codes, covariate_figures, mixing_rows
from pipeline.evaluation.odd_rows import odd_rows
from pipeline.evaluation.pictures import draw_pictures
from pipeline.evaluation.plotting import csv_text
from pipeline.evaluation.probes import ProbeProtocol, check_knn_k, probe_rows, probe_suite
from pipeline.latents.imputation import column_quality, fill_values
from pipeline.latents.reader import read_z_mean
from pipeline.latents.scores import pixel_dims
from pipeline.model.bundle import RUN_FILE, load_bundle
from pipeline.model.diagnostics import (
    Moments,
    active_units,
    collapse_warning,
    phi_gradient_variance,
    subo_estimates,
)
from pipeline.model.resolve_model import levels_of
from pipeline.platform.config import GradientVarianceConfig, Params
from pipeline.platform.console import timed
from pipeline.platform.errors import DataError
from pipeline.platform.families import FAMILIES
from pipeline.platform.hardware import share_gpus
from pipeline.platform.io import Publication, scratch_dir, write_json

log = logging.getLogger(__name__)


def from_params(params: Params, *, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """The stage's recipe: the params it reads, passed on (stages/evaluate.py and pipeline.runner).

    params.seed seeds the probes, as it does the baselines' (the same protocol for both);
    what training decided (its validation rows, binarization, seed) comes from the bundle.
    """
    cfg = params.evaluate
    protocol = ProbeProtocol.of(cfg.probe, knn_k=cfg.knn_k, seed=params.seed)
    return evaluate(
        prepared_dir=prepared_dir,
        model_path=model_path,
        latents_dir=latents_dir,
        out_dir=out_dir,
        protocol=protocol,
        importance_samples=cfg.importance_samples,
        surprisal_examples=cfg.surprisal_examples,
        gradient_variance=cfg.gradient_variance,
    )


def evaluate(
    *,
    prepared_dir,
    model_path,
    latents_dir,
    out_dir,
    protocol: ProbeProtocol,
    importance_samples: int,
    surprisal_examples: int,
    gradient_variance: GradientVarianceConfig,
) -> dict:
    """latent_metrics.json, confusion.csv and pictures/ under out_dir, replaced together.

    Args:
        prepared_dir, model_path, latents_dir, out_dir: the stage's inputs and output.
        protocol: the probes' protocol (pipeline.evaluation.probes).
        importance_samples: K of S_K.
        surprisal_examples: validation and test examples the SUBO figures score.
        gradient_variance: the φ-gradient variance's draws and batch.

    Returns:
        The metrics: probes on z_mean, the SUBO figures, active units, the φ-gradient
        variance, and pictures of the model from the test examples the SUBO figures use.
    """
    publication = Publication(out_dir, "evaluate")
    publication.recover()  # what a killed run of this stage left
    share_gpus()
    manifest, data = load_splits(prepared_dir)
    bundle = load_bundle(model_path)
    trained = TrainedOn.of(bundle)
    vae = bundle.vae
    metrics, confusion = _latent_metrics(vae, bundle.choices or {}, manifest, data, latents_dir, protocol)
    with timed("SUBO and importance-weighted surprisal"), scratch_dir(out_dir, clear_stale=True) as scratch:
        scored = trained.scored_inputs(data, surprisal_examples, scratch)
        metrics["subo"] = {
            split: subo_estimates(vae, x, importance_samples, seed=trained.seed)
            for split, x in scored.items()
            if len(x)
        }
    metrics["likelihood"] = likelihood_kind(vae.config.model, manifest)
    if dims := pixel_dims(manifest):  # the unit of the field's tables: nats / (D ln 2)
        for figures in metrics["subo"].values():
            figures["bits_per_dim"] = bits_per_dim(figures, dims)
    if manifest.columns is not None:
        with timed("per-column reconstruction and imputation"):
            metrics["columns"] = _column_quality(vae, data, manifest, surprisal_examples, trained.seed)
    if vae.closed_form_kl:
        with timed("gradient variance"):
            batch = trained.inputs(data["test"], None, gradient_variance.batch_size)
            metrics["gradient_variance"] = phi_gradient_variance(vae, batch, gradient_variance.repeats)
    else:
        metrics["gradient_variance"] = {
            "skipped": "the score-function estimator needs a Gaussian proxy and the "
            "standard prior (D in closed form)"
        }
    with publication.staged() as staging, timed("pictures"):
        (staging / "pictures").mkdir()
        metrics["generative"] = draw_pictures(
            vae,
            scored["test"],
            staging / "pictures",
            seed=trained.seed,
            title=f"{manifest.source}, latent_dim={vae.latent_dim}",
            images=manifest.pictured,
        )
        metrics["odd_rows"] = odd_rows(latents_dir, manifest, data, staging / "pictures", vae)
        write_json(staging / "latent_metrics.json", metrics)
        (staging / "confusion.csv").write_text(confusion, encoding="utf-8")
    return metrics


def likelihood_kind(model, manifest) -> dict:
    """Which p_θ(x|z) the figures are of (model: the VAE's resolved model), and whether S is the
    surprisal of the data: a mass on the values, a density with a floor, or a Bernoulli on grey
    levels (not a distribution)."""
    family, levels = model.likelihood, levels_of(manifest)
    if family == "bernoulli" and levels and levels > 2:  # the rule resolve_model warns on
        kind = "not a distribution over the data (a Bernoulli on grey levels): S is not a surprisal"
    else:
        kind = FAMILIES[family].describe(model.levels)
    return {"family": family, "kind": kind, "levels": model.levels}


def bits_per_dim(figures: dict, dims: int) -> dict:
    """U, S_K and E_K of one split in bits per dimension: nats / (D ln 2)."""
    scale = 1 / (dims * math.log(2))
    return {
        "U": figures["U"] * scale,
        "S_K": {k: v * scale for k, v in figures["S_K"].items()},
        "E_K": {k: v * scale for k, v in figures["E_K"].items()},
    }


@dataclass(frozen=True)
class TrainedOn:
    """What training decided about the data, read from the bundle's run record (run.json):
    the validation rows, the binarization, the seed. Scores see the data as training did."""

    validation_fraction: float
    binarize: str
    seed: int

    @classmethod
    def of(cls, bundle) -> "TrainedOn":
        if bundle.run is None:
            raise DataError(
                f"{bundle.model_path.parent / RUN_FILE}: not found; evaluate needs the training run's "
                "record beside the model (re-run the train stage)"
            )
        run = bundle.run
        return cls(run["data"]["validation_fraction"], run["data"]["binarize"], run["seed"])

    def inputs(self, split: Split, rows: np.ndarray | None, n: int) -> np.ndarray:
        """A seeded subset of at most n of `rows` (None: of every row), as the scores see it."""
        chosen = seeded_rows(len(split) if rows is None else len(rows), n, self.seed)
        return fixed_inputs(split, chosen if rows is None else rows[chosen], self.binarize, self.seed)

    def scored_inputs(self, data: dict, n: int, scratch) -> dict[str, np.ndarray]:
        """At most n validation and n test examples: the rows the SUBO figures score."""
        _, val_rows = validation_rows(data["train"].y, self.validation_fraction, self.seed, scratch)
        return {
            "validation": self.inputs(data["train"], val_rows, n),
            "test": self.inputs(data["test"], None, n),
        }


def _latent_metrics(
    vae, choices: dict, manifest, data: dict, latents_dir, protocol: ProbeProtocol
) -> tuple[dict, str]:
    """Active units over every test row and, with labels, the probes on z_mean (read a row
    group at a time, keeping only the probes' rows); and confusion.csv's text."""
    labelled = is_labelled(manifest, data)
    if labelled:
        check_knn_k(protocol, len(data["train"]))
    rows = dict(
        zip(
            ("train", "test"), probe_rows(data["train"].y, data["test"].y, protocol) if labelled else ([], [])
        )
    )
    test_moments = Moments()
    z = {
        split: read_z_mean(
            latents_dir,
            split,
            data[split].id,
            manifest.fingerprint,
            rows[split],
            vae.latent_dim,
            visit=test_moments.add if split == "test" else None,
        )
        for split in ("train", "test")
    }
    metrics: dict = {
        "latent_dim": vae.latent_dim,
        "choices": choices,
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


def _column_quality(vae, data: dict, manifest, examples: int, seed: int) -> dict:
    """pipeline.latents.imputation on the scored test rows, the mean/mode from (at most 10,000) train rows."""
    train, test = data["train"], data["test"]
    fill = fill_values(train, seeded_rows(len(train), 10_000, seed), manifest.columns)
    return column_quality(vae, test, seeded_rows(len(test), examples, seed), manifest.columns, fill, seed)
