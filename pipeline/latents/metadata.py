"""What made a latent dataset's rows: the key-value metadata every Parquet file carries
(pipeline.latents.parquet.METADATA describes each key), built here for the encode stage and
the encode command alike."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.latents.parquet import describe_columns, package_versions


@dataclass(frozen=True)
class LatentsMetadata:
    """The data, the model and the run that encoded a partition's rows."""

    dataset_source: str  # data.source, and the file or folder it read where there is one
    # the prepared data's; the command's: its input file's sha256 (None: a folder)
    dataset_fingerprint: str | None
    label_names: list[str]
    model_sha256: str
    columns: dict
    choices: dict
    versions: dict
    surprisal: dict  # the scores' K, novelty's definition and the quantile's reference (Scorer.record)
    params: dict | None = None  # the stage's: the training run's params and encode's own
    engine: dict | None = None  # the stage's engine and cluster
    # data with covariates: each one's type and levels, and whether q read them
    covariates: dict | None = None

    @classmethod
    def of(
        cls, bundle, source: str, path: str | Path | None, fingerprint: str | None, scorer, **run
    ) -> "LatentsMetadata":
        """Of rows encoded by `bundle` from `source` at `path` and scored by `scorer`; run:
        choices, params, engine."""
        covariates = bundle.manifest.covariates
        return cls(
            dataset_source=f"{source}: {path}" if path else source,
            dataset_fingerprint=fingerprint,
            label_names=list(bundle.manifest.label_names),
            model_sha256=bundle.model_sha256,
            columns=describe_columns(bundle.vae.config.model.posterior, bool(covariates)),
            choices=run.pop("choices", bundle.choices),
            versions=package_versions(),
            surprisal=scorer.record(),
            covariates={
                "columns": [dataclasses.asdict(c) for c in covariates],
                "encoder_reads_them": bundle.vae.config.model.encode_covariates,
            }
            if covariates
            else None,
            **run,
        )

    def as_dict(self) -> dict:
        """The files' metadata: every key, but the stage's own where this is the command's."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "dataset_fingerprint"
        }
