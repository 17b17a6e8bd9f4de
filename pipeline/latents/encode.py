"""The encode stage: the latents of every prepared example, as the Parquet dataset data/latents.

The rows of each split are cut into shards, contiguous ranges encoded by `EncodeShards`:
here, one shard per split in this process (`cluster.engine: local`); on Ray, shards of
whole row groups spread over a pool of Ray actors, each loading the model once
and writing its shards with the same Parquet writer. Shard k of a split is
split=<split>/part-<k>.parquet, so the parts in number order are the split's rows in order.

(New data in another project goes through `pipeline.latents.encode_command`, the `vae-pipeline encode`
command.)
"""

import math
import shutil
import uuid
from pathlib import Path

from pipeline.data.manifest import Manifest
from pipeline.data.prepared import load_splits
from pipeline.latents.imputation import Completer
from pipeline.latents.metadata import LatentsMetadata
from pipeline.latents.parquet import ROW_GROUP_SIZE
from pipeline.latents.scores import Scorer, pixel_dims, reference_of
from pipeline.latents.writer import encoded_batches, write_part
from pipeline.model.bundle import Bundle, load_bundle
from pipeline.model.diagnostics import RowSurprisal
from pipeline.platform.choices import AUTO, Choice
from pipeline.platform.engine import LocalEngine, RayEngine, open_engine, require_shared
from pipeline.platform.errors import ConfigError, DataError
from pipeline.platform.hardware import hide_gpus, limit_threads, share_gpus
from pipeline.platform.io import atomic_dir, recover_dir
from pipeline.platform.params.config import EncodeConfig, Params

# Under Ray, each actor gets about this many shards of a split: small enough that a
# retried shard (a killed actor) repeats little work, large enough to keep files few.
SHARDS_PER_ACTOR = 4


def from_params(params: Params, *, prepared_dir, model_path, out_dir) -> int:
    """The stage's recipe: the params it reads, passed on (stages/encode.py and pipeline.runner)."""
    with open_engine(params.cluster) as engine:
        return encode(
            prepared_dir=prepared_dir,
            model_path=model_path,
            out_dir=out_dir,
            batch_size=params.encode.batch_size,
            workers=params.encode.workers,
            impute=params.encode.impute,
            importance_samples=params.encode.importance_samples,
            engine=engine,
        )


def encode(
    *,
    prepared_dir: str | Path,
    model_path: str | Path,
    out_dir: str | Path,
    batch_size: int,
    workers: int | str = AUTO,
    impute: bool = False,
    importance_samples: int = EncodeConfig.importance_samples,
    engine: LocalEngine | RayEngine | None = None,
    shard_rows: int | None = None,
) -> int:
    """Latents of the train and test splits, replaced atomically, with what made them (`_metadata`).

    Args:
        prepared_dir, model_path, out_dir: the prepared data, the model, the dataset to write.
        batch_size: examples per encoder call.
        workers: encode.workers (`resolve_workers`).
        impute: a table: each row also `completed`, its missing cells imputed, and `imputed` flags.
        importance_samples: K of each row's surprisal.
        engine: where the shards are encoded (default: this process).
        shard_rows: rows per shard on Ray (default: whole row groups, about SHARDS_PER_ACTOR per actor).

    Returns:
        The number of rows written.
    """
    engine = engine or LocalEngine()
    _start(out_dir, engine)
    manifest, bundle = _inputs(prepared_dir, model_path, impute)
    workers = resolve_workers(workers, engine)
    actors, scorer = workers.value, _scorer(bundle.vae, manifest, prepared_dir, importance_samples)
    own = dict(batch_size=batch_size, workers=actors, impute=impute, importance_samples=importance_samples)
    metadata = _metadata(manifest, bundle, scorer, workers, engine, own)
    with atomic_dir(out_dir) as tmp:
        arguments = _shard_arguments(engine, prepared_dir, tmp, batch_size, metadata, impute)
        shards = _plan(manifest.counts, engine, actors, shard_rows)
        written = _run_shards(engine, shards, arguments, actors, model_path, bundle.vae, scorer)
        _check_complete(tmp, shards, written, manifest.counts)
    return written


def _start(out_dir, engine: LocalEngine | RayEngine) -> None:
    """What the stage does before it reads anything: finish or discard what a killed run of it
    left, and set up this process's GPUs."""
    recover_dir(out_dir)  # what a killed run of this stage left
    share_gpus()
    if engine.name == "ray":
        hide_gpus()  # this process loads the model only to check it: the actors compute, on the GPUs


def _inputs(prepared_dir, model_path, impute: bool) -> tuple[Manifest, Bundle]:
    """The prepared data's manifest and the model bundle, checked to fit each other (and
    encode.impute to fit the data)."""
    manifest = Manifest.read(prepared_dir)
    bundle = load_bundle(model_path)
    bundle.check_shape(manifest.input_shape, prepared_dir)
    if impute and manifest.columns is None:
        raise ConfigError(
            f"encode.impute fills in a table's missing cells, but {prepared_dir} holds "
            f"{manifest.value_type} values; set encode.impute: false"
        )
    return manifest, bundle


def _shard_arguments(engine, prepared_dir, directory, batch_size: int, metadata: dict, impute: bool) -> dict:
    """What every EncodeShards is built with, its paths as the engine's processes see them."""
    return {
        "prepared_dir": str(engine.shared(prepared_dir)),
        "directory": str(engine.shared(directory)),
        "batch_size": batch_size,
        "metadata": metadata,
        "impute": impute,
    }


def _plan(counts: dict[str, int], engine, actors: int, shard_rows: int | None) -> list[dict]:
    """The shards: on Ray, of whole row groups over the actors (`_shard_rows`) unless shard_rows
    is given; here, one shard per split."""
    if engine.name == "ray":
        return plan_shards(counts, shard_rows or _shard_rows(counts, actors))
    return plan_shards(counts, max(max(counts.values()), 1))


def _run_shards(engine, shards: list[dict], arguments: dict, actors: int, model_path, vae, scorer) -> int:
    """Encode the shards, the rows written: on Ray by the actors, each loading the model from
    model_path; here with the model and scorer loaded here."""
    if engine.name == "ray":
        arguments["model_path"] = str(engine.shared(model_path))
        return sum(engine.map_actors(ActorEncodeShards, shards, arguments=arguments, actors=actors))
    return sum(map(EncodeShards(**arguments, vae=vae, scorer=scorer), shards))


def _scorer(vae, manifest: Manifest, prepared_dir, importance_samples: int) -> Scorer:
    """How the rows are scored: K, and the reference, the training rows' scores
    (pipeline.latents.scores), computed here once for every shard."""
    train, surprisal = load_splits(prepared_dir)[1]["train"], RowSurprisal(vae, importance_samples)
    dims = pixel_dims(manifest)
    reference = reference_of(vae, surprisal, train.x, train.preprocess, pixels=dims is not None)
    return Scorer(vae, surprisal, dims, reference)


def _metadata(
    manifest: Manifest, bundle, scorer: Scorer, workers: Choice, engine, encode_params: dict
) -> dict:
    """What made the latents: the data (its fingerprint), the model (its sha256), the scores
    (their reference: the training rows' scores, computed here once), the choices (the model's and
    encode.workers), the params (the model's resolved run and this stage's own) and the engine."""
    return LatentsMetadata.of(
        bundle,
        manifest.source,
        manifest.path,
        manifest.fingerprint,
        scorer,
        choices={**(bundle.choices or {}), "encode.workers": workers.record()},
        params={
            **(bundle.run or {}),
            "encode": encode_params,  # the cluster keys a result can depend on
            "cluster": {"engine": engine.cluster.engine, "address": engine.cluster.address},
        },
        engine=engine.describe(),
    ).as_dict()


def resolve_workers(workers: int | str, engine: LocalEngine | RayEngine) -> Choice:
    """encode.workers: 1 on the local engine (the config checker refuses more); on Ray, auto
    is one actor per GPU of the cluster, else one per CPU."""
    if engine.name != "ray":
        return Choice.of(workers, 1, "the local engine encodes in this process")
    device = "GPU" if engine.gpus else "CPU"
    return Choice.of(
        workers, max(engine.gpus or engine.cpus, 1), f"one Ray actor per {device} of the cluster"
    )


def plan_shards(counts: dict[str, int], shard_rows: int) -> list[dict]:
    """Every split's rows as contiguous shards of at most shard_rows: {split, start, stop, part}."""
    return [
        {"split": split, "start": start, "stop": min(start + shard_rows, n), "part": k}
        for split, n in counts.items()
        for k, start in enumerate(range(0, n, shard_rows))
    ]


def _shard_rows(counts: dict[str, int], actors: int) -> int:
    """Whole row groups, about SHARDS_PER_ACTOR shards per actor for the largest split."""
    groups = math.ceil(max(counts.values()) / ROW_GROUP_SIZE)
    return ROW_GROUP_SIZE * max(math.ceil(groups / (SHARDS_PER_ACTOR * actors)), 1)


class EncodeShards:
    """Encodes shards of the prepared splits into directory/split=<s>/part-<k>.parquet.

    Built once per process, from the loaded model and its scorer (a Ray actor builds them
    itself: ActorEncodeShards). Each shard is written under a name of its own and renamed
    into place when complete, so a shard retried after a killed actor replaces nothing half-done.
    """

    def __init__(
        self,
        prepared_dir: str,
        directory: str,
        batch_size: int,
        metadata: dict,
        impute: bool,
        vae,
        scorer: Scorer,
    ):
        manifest, self.splits = load_splits(prepared_dir)
        self.vae, self.scorer, self.covariates = vae, scorer, manifest.covariates
        self.completer = (
            Completer(self.vae, manifest.columns, self.splits["train"].preprocess) if impute else None
        )
        self.directory, self.batch_size, self.metadata = Path(directory), batch_size, metadata

    def __call__(self, shard: dict) -> int:
        """Encode one shard (plan_shards); the rows written."""
        split, start, stop, part = (shard[key] for key in ("split", "start", "stop", "part"))
        data, rows = self.splits[split], slice(start, stop)
        attempt = self.directory / f".attempt-{uuid.uuid4().hex}"
        written = write_part(
            attempt,
            encoded_batches(
                self.vae.predict_posterior,
                self.scorer,
                split,
                data.x[rows],
                data.y[rows],
                data.id[rows],
                self.batch_size,
                data.preprocess,
                self.completer,
                self.covariates,
            ),
            self.vae.latent_dim,
            self.metadata,
            part=part,
            table=self.completer.table if self.completer else None,
        )
        name = Path(f"split={split}") / f"part-{part}.parquet"
        (self.directory / name.parent).mkdir(exist_ok=True)
        (attempt / name).replace(self.directory / name)
        shutil.rmtree(attempt)
        return written


class ActorEncodeShards(EncodeShards):
    """EncodeShards in a Ray actor, a fresh process: it loads the model (Keras models do not
    pickle) and rebuilds the scorer from the stage's metadata, on the paths every node sees."""

    def __init__(
        self,
        prepared_dir: str,
        model_path: str,
        directory: str,
        batch_size: int,
        metadata: dict,
        impute: bool,
    ):
        import ray

        share_gpus()
        limit_threads(int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        require_shared(prepared_dir, "the prepared data")
        require_shared(directory, "encode's output directory")
        vae = load_bundle(require_shared(model_path, "the model")).vae
        scorer = Scorer.of(vae, metadata["surprisal"], pixel_dims(Manifest.read(prepared_dir)))
        super().__init__(prepared_dir, directory, batch_size, metadata, impute, vae, scorer)


def _check_complete(directory: Path, shards: list[dict], written: int, counts: dict[str, int]) -> None:
    """Every shard's file is there and the rows add up; a killed actor's attempt is removed."""
    for litter in directory.glob(".attempt-*"):
        shutil.rmtree(litter)
    missing = [
        f"split={s['split']}/part-{s['part']}"
        for s in shards
        if not (directory / f"split={s['split']}" / f"part-{s['part']}.parquet").is_file()
    ]
    expected = sum(counts.values())
    if missing or written != expected:
        raise DataError(
            f"{directory}: encode wrote {written} of {expected} rows (missing parts: {missing or 'none'}); "
            "the previous latents are kept"
        )
