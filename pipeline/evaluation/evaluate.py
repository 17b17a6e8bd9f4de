"""The evaluate stage: are the latents any good, and how tight is the bound?

The latents' active units, probes and batch mixing (pipeline.evaluation.latent_quality); U,
D, S_K and E_K on validation and test examples, the φ-gradient variance of both estimators,
and pictures of the model. Everything is written through the stage's `Publication`: nothing
under out_dir changes unless all succeeds.
"""

import math
from dataclasses import dataclass

import numpy as np

from pipeline.data.prepared import Split, fixed_inputs, load_splits, seeded_rows, validation_rows
from pipeline.evaluation.latent_quality import latent_metrics
from pipeline.evaluation.odd_rows import odd_rows
from pipeline.evaluation.pictures import draw_pictures
from pipeline.evaluation.probes import ProbeProtocol
from pipeline.latents.imputation import column_quality, fill_values
from pipeline.latents.scores import pixel_dims
from pipeline.model.bundle import RUN_FILE, load_bundle
from pipeline.model.diagnostics import phi_gradient_variance, subo_estimates
from pipeline.model.resolve_model import levels_of
from pipeline.platform.console import timed
from pipeline.platform.errors import DataError
from pipeline.platform.families import FAMILIES
from pipeline.platform.hardware import share_gpus
from pipeline.platform.io import Publication, scratch_dir, write_json
from pipeline.platform.params.config import GradientVarianceConfig, Params


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
    manifest, data, bundle, trained = _read_inputs(prepared_dir, model_path)
    metrics, confusion = latent_metrics(bundle, manifest, data, latents_dir, protocol)
    with timed("SUBO and importance-weighted surprisal"), scratch_dir(out_dir, clear_stale=True) as scratch:
        scored = trained.scored_inputs(data, surprisal_examples, scratch)
        metrics |= _bound_figures(bundle.vae, manifest, scored, importance_samples, trained.seed)
    metrics |= _model_figures(bundle.vae, manifest, data, trained, surprisal_examples, gradient_variance)
    with publication.staged() as staging, timed("pictures"):
        metrics |= _pictures(bundle.vae, manifest, data, scored["test"], latents_dir, trained.seed, staging)
        write_json(staging / "latent_metrics.json", metrics)
        (staging / "confusion.csv").write_text(confusion, encoding="utf-8")
    return metrics


def _read_inputs(prepared_dir, model_path) -> tuple:
    """(manifest, splits, bundle, TrainedOn) of the prepared data and the trained model, on
    this process's share of the GPUs."""
    share_gpus()
    manifest, data = load_splits(prepared_dir)
    bundle = load_bundle(model_path)
    return manifest, data, bundle, TrainedOn.of(bundle)


def _bound_figures(vae, manifest, scored: dict, importance_samples: int, seed: int) -> dict:
    """The bound on the scored rows: U, D, S_K and E_K per split (for pixels in bits per
    dimension too), and which likelihood they are of."""
    subo = {
        split: subo_estimates(vae, x, importance_samples, seed=seed) for split, x in scored.items() if len(x)
    }
    likelihood = likelihood_kind(vae.config.model, manifest)
    if dims := pixel_dims(manifest):  # the unit of the field's tables: nats / (D ln 2)
        for figures in subo.values():
            figures["bits_per_dim"] = bits_per_dim(figures, dims)
    return {"subo": subo, "likelihood": likelihood}


def _model_figures(
    vae, manifest, data: dict, trained: "TrainedOn", examples: int, gradient_variance: GradientVarianceConfig
) -> dict:
    """Beyond the bound: a table's per-column reconstruction and imputation, and the
    φ-gradient variance of both estimators (where D has its closed form)."""
    figures = {}
    if manifest.columns is not None:
        with timed("per-column reconstruction and imputation"):
            figures["columns"] = _column_quality(vae, data, manifest, examples, trained.seed)
    if vae.closed_form_kl:
        with timed("gradient variance"):
            batch = trained.inputs(data["test"], None, gradient_variance.batch_size)
            figures["gradient_variance"] = phi_gradient_variance(vae, batch, gradient_variance.repeats)
    else:
        figures["gradient_variance"] = {
            "skipped": "the score-function estimator needs a Gaussian proxy and the "
            "standard prior (D in closed form)"
        }
    return figures


def _pictures(vae, manifest, data: dict, test_x: np.ndarray, latents_dir, seed: int, staging) -> dict:
    """pictures/ under staging: the model's pictures from the scored test rows
    (pipeline.evaluation.pictures) and the odd rows (pipeline.evaluation.odd_rows); what each holds."""
    (staging / "pictures").mkdir()
    generative = draw_pictures(
        vae,
        test_x,
        staging / "pictures",
        seed=seed,
        title=f"{manifest.source}, latent_dim={vae.latent_dim}",
        images=manifest.pictured,
    )
    return {
        "generative": generative,
        "odd_rows": odd_rows(latents_dir, manifest, data, staging / "pictures", vae),
    }


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


def _column_quality(vae, data: dict, manifest, examples: int, seed: int) -> dict:
    """pipeline.latents.imputation on the scored test rows, the mean/mode from (at most 10,000) train rows."""
    train, test = data["train"], data["test"]
    fill = fill_values(train, seeded_rows(len(train), 10_000, seed), manifest.columns)
    return column_quality(vae, test, seeded_rows(len(test), examples, seed), manifest.columns, fill, seed)
