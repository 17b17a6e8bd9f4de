"""The evaluate stage: are the latents any good, and how tight is the bound?

Probes on z_mean with the baselines' protocol (pipeline.baselines), U, D, S_K and E_K on
validation and test examples, the φ-gradient variance of both estimators, and pictures of
the model. Everything is written through `staged_outputs`: nothing under out_dir changes
unless all succeeds.
"""

import logging

import numpy as np

from pipeline.bundle import load_bundle
from pipeline.config import GradientVarianceConfig, Params
from pipeline.console import timed
from pipeline.data import Split, fixed_inputs, is_labelled, load_splits, seeded_rows, validation_rows
from pipeline.diagnostics import Moments, active_units_of, collapse_warning, phi_gradient_variance, subo_estimates
from pipeline.hardware import share_gpus
from pipeline.imputation import column_quality, fill_values
from pipeline.io import recover, scratch_dir, staged_outputs, write_json
from pipeline.latents import read_z_mean
from pipeline.pictures import draw_pictures
from pipeline.probes import ProbeProtocol, check_knn_k, probe_rows, probe_suite

log = logging.getLogger(__name__)


def run(params: Params, *, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """The stage's recipe: the params it reads, passed on (stages/evaluate.py and pipeline.runner)."""
    cfg = params.evaluate
    protocol = ProbeProtocol.of(cfg.probe, knn_k=cfg.knn_k, seed=params.seed)
    return evaluate(prepared_dir=prepared_dir, model_path=model_path, latents_dir=latents_dir, out_dir=out_dir,
                    protocol=protocol, importance_samples=cfg.importance_samples,
                    surprisal_examples=cfg.surprisal_examples, gradient_variance=cfg.gradient_variance,
                    validation_fraction=params.data.validation_fraction, binarize=params.data.binarize,
                    seed=params.seed)


def evaluate(*, prepared_dir, model_path, latents_dir, out_dir, protocol: ProbeProtocol, importance_samples: int,
             surprisal_examples: int, gradient_variance: GradientVarianceConfig, validation_fraction: float,
             binarize: str, seed: int) -> dict:
    """latent_metrics.json, confusion.csv and pictures/: probes on z_mean, the SUBO figures, the
    φ-gradient variance, and pictures of the model (pipeline.pictures) from the test examples
    the SUBO figures use."""
    recover(out_dir, "evaluate")  # what a killed run of this stage left
    share_gpus()
    manifest, data = load_splits(prepared_dir)
    bundle = load_bundle(model_path)
    vae = bundle.vae
    labelled = is_labelled(manifest, data)
    if labelled:
        check_knn_k(protocol, len(data["train"]))
    # The latents are read a row group at a time: only the probes' rows are kept.
    rows = dict(zip(("train", "test"), probe_rows(data["train"].y, data["test"].y, protocol) if labelled else ([], [])))
    test_moments = Moments()  # active units over every test row
    z = {split: read_z_mean(latents_dir, split, data[split].id, manifest.fingerprint, rows[split], vae.latent_dim,
                            visit=test_moments.add if split == "test" else None) for split in ("train", "test")}
    metrics: dict = {"latent_dim": vae.latent_dim, "choices": bundle.choices or {},
                     "active_units": active_units_of(test_moments.variance)}
    if warning := collapse_warning(metrics["active_units"]):
        log.warning("%s", warning)
    confusion = "actual,predicted\n"  # header only without labels: DVC still expects the file
    if labelled:
        with timed("probes on the latents"):
            probes, confusion = _latent_probes(z, {s: np.asarray(data[s].y[r]) for s, r in rows.items()},
                                               manifest.label_names, protocol)
        metrics.update(probes)
    # The validation rows' index, memory-mapped: memory stays flat whatever the rows.
    with timed("SUBO and importance-weighted surprisal"), scratch_dir(out_dir, clear_stale=True) as scratch:
        _, val_rows = validation_rows(data["train"].y, validation_fraction, seed, scratch)
        parts = {"validation": (data["train"], val_rows), "test": (data["test"], None)}
        scored = {split: _scored(data_split, rows, surprisal_examples, binarize, seed)
                  for split, (data_split, rows) in parts.items()}
        metrics["subo"] = {split: subo_estimates(vae, x, importance_samples, seed=seed)
                           for split, x in scored.items() if len(x)}
    if manifest.columns is not None:
        with timed("per-column reconstruction and imputation"):
            metrics["columns"] = _column_quality(vae, data, manifest, surprisal_examples, seed)
    with timed("gradient variance"):
        batch = _scored(data["test"], None, gradient_variance.batch_size, binarize, seed)
        metrics["gradient_variance"] = phi_gradient_variance(vae, batch, gradient_variance.repeats)
    with staged_outputs(out_dir, "evaluate") as staging, timed("pictures"):
        (staging / "pictures").mkdir()
        shape = manifest.example_shape
        metrics["generative"] = draw_pictures(vae, scored["test"], staging / "pictures", seed=seed,
                                              title=f"{manifest.source}, latent_dim={vae.latent_dim}",
                                              images=len(shape) == 3 and shape[-1] in (1, 3))
        write_json(staging / "latent_metrics.json", metrics)
        (staging / "confusion.csv").write_text(confusion)
    return metrics


def _latent_probes(z: dict, labels: dict, label_names: list[str], protocol: ProbeProtocol) -> tuple[dict, str]:
    """metrics["probe"] and ["knn"] from z_mean and the labels of the probes' rows (`probe_rows`),
    and the linear probe's test predictions as confusion.csv text."""
    scores, predicted = probe_suite({"latent": (z["train"], z["test"])}, labels["train"], labels["test"], protocol)
    latent = scores["latent"]
    names = np.array(label_names)
    pairs = zip(names[labels["test"]], names[predicted])
    return ({"probe": {**latent["linear"], "dim": latent["dim"], "train_examples": scores["train_examples"],
                       "test_examples": scores["test_examples"]},
             "knn": {"accuracy": latent["knn"], "k": protocol.knn_k}},
            "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in pairs))


def _column_quality(vae, data: dict, manifest, examples: int, seed: int) -> dict:
    """pipeline.imputation on the scored test rows, the mean/mode from (at most 10,000) train rows."""
    train, test = data["train"], data["test"]
    fill = fill_values(train, seeded_rows(len(train), 10_000, seed), manifest.columns)
    return column_quality(vae, test, seeded_rows(len(test), examples, seed), manifest.columns, fill, seed)


def _scored(split: Split, rows: np.ndarray | None, n: int, binarize: str, seed: int) -> np.ndarray:
    """A seeded subset of at most n of `rows` (None: of every row), as the scores see it (`data.fixed_inputs`)."""
    chosen = seeded_rows(len(split) if rows is None else len(rows), n, seed)
    return fixed_inputs(split, chosen if rows is None else rows[chosen], binarize, seed)
