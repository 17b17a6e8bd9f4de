"""`vae-pipeline encode`: new data in another project, encoded with a trained model bundle.

The data is read as the training data was (pipeline.latents.new_data) and preprocessed as
it was; only the partition out_dir/split=<split> is written.
"""

import contextlib
import logging
import re
from pathlib import Path

import numpy as np

from pipeline.data.readers.source_dataset import Dataset
from pipeline.latents.complexity import COMPRESSOR
from pipeline.latents.h5ad_out import LatentRows, check_h5ad_target, write_h5ad_with_latents
from pipeline.latents.imputation import Completer
from pipeline.latents.metadata import LatentsMetadata
from pipeline.latents.new_data import read_input, to_training_labels
from pipeline.latents.parquet import read_metadata
from pipeline.latents.scores import Reference, Scorer, pixel_dims
from pipeline.latents.writer import encoded_batches, write_partition
from pipeline.model.bundle import load_bundle, require_complete
from pipeline.model.diagnostics import RowSurprisal
from pipeline.platform.errors import DataError
from pipeline.platform.hardware import share_gpus
from pipeline.platform.io import scratch_dir, sha256_file
from pipeline.platform.locks import directory_lock
from pipeline.platform.params.config import EncodeConfig

# A publication's staging and journal, and a scratch directory (pipeline.platform.io).
TEMPORARY = re.compile(r"\..+\.(staging|journal|journal\.tmp|scratch\..+)")
log = logging.getLogger(__name__)


def encode_new_data(
    model_path: Path,
    input_path: Path,
    out_dir: Path,
    batch_size: int = EncodeConfig.batch_size,
    split: str = "new",
    overwrite: bool = False,
    impute: bool = False,
    anndata_out: Path | None = None,
    reference: Path | None = None,
    **reader_options,
) -> int:
    """Encode `input_path` with a trained model, preprocessed as its training data was, into
    the partition out_dir/split=<split> alone. The input is checked as the training data was
    (`read_input`); its rows are scored against the reference (`_scorer`).

    Args:
        model_path: a trained model.keras with its bundle beside it (refused without it).
        input_path: the new data.
        out_dir: the latent dataset to add a partition to.
        batch_size: examples per encoder call.
        split: the partition's name.
        overwrite: replace an existing partition of that name.
        impute: a table model: each row also `completed` (missing cells imputed) and `imputed` flags.
        anndata_out: for an .h5ad input, where a copy of it with obsm["X_vae"] (z_mean) goes.
        reference: the encode stage's latents of this model (`find_reference`).
        **reader_options: how to read the input (x_key, y_key, label_column, layer).

    Returns:
        The number of rows written.
    """
    _check_targets(input_path, out_dir, anndata_out)
    bundle, completer = _load_model(model_path, impute)
    scorer = _scorer(bundle, find_reference(bundle, reference))
    with _locked_output(Path(out_dir)), scratch_dir(out_dir) as scratch:  # for sources that must be decoded
        dataset = read_input(bundle, input_path, scratch, reader_options)
        batches = _encoded(bundle, dataset, scorer, completer, split, batch_size)
        return _write(
            out_dir, split, batches, bundle, dataset, scorer, completer, overwrite, input_path, anndata_out
        )


def _check_targets(input_path: Path, out_dir: Path, anndata_out: Path | None) -> None:
    """Refuse, before any work, outputs the next `dvc repro` would replace and an .h5ad copy
    that cannot be made."""
    for target in (out_dir, anndata_out) if anndata_out else (out_dir,):
        check_not_a_stage_output(Path(target))
    check_h5ad_target(input_path, anndata_out)


def _load_model(model_path: Path, impute: bool) -> tuple:
    """(the model's complete bundle, its Completer with `impute`, else None); impute is refused
    for a model not trained on a table."""
    share_gpus()
    bundle = load_bundle(model_path)
    require_complete(bundle)
    columns = bundle.manifest.columns
    if impute and columns is None:
        raise DataError(
            f"{model_path}: --impute fills in a table's missing cells, but this model was not trained "
            "on a table"
        )
    return bundle, Completer(bundle.vae, columns, bundle.preprocess) if impute else None


def _encoded(bundle, dataset: Dataset, scorer: Scorer, completer, split: str, batch_size: int):
    """The new rows' LatentBatch stream, their labels as indices into the training label names."""
    y = to_training_labels(dataset, bundle.manifest.label_names)
    return encoded_batches(
        bundle.vae.predict_posterior,
        scorer,
        split,
        dataset.x,
        y,
        np.arange(len(y), dtype=np.int64),
        batch_size,
        bundle.preprocess,
        completer,
        bundle.manifest.covariates,
    )


def _write(
    out_dir, split, batches, bundle, dataset, scorer, completer, overwrite, input_path, anndata_out
) -> int:
    """Write the partition; with anndata_out also a copy of the .h5ad input with the rows'
    z_mean in obsm["X_vae"], gathered on the way. Returns the rows written."""
    latents = LatentRows(len(dataset.y), bundle.vae.latent_dim) if anndata_out else None
    rows = write_partition(
        out_dir,
        split,
        latents.gather(batches) if latents else batches,
        bundle.vae.latent_dim,
        _metadata(bundle, dataset, input_path, scorer),
        overwrite=overwrite,
        table=completer.table if completer else None,
    )
    if anndata_out:
        write_h5ad_with_latents(input_path, anndata_out, latents.z_mean)
    return rows


@contextlib.contextmanager
def _locked_output(out_dir: Path):
    """out_dir, made if need be and locked for the block; a directory made here is removed
    again when the block fails before writing anything in it. The command holds it from the
    first read to the last write, the .h5ad copy included: a second command on this output
    waits (the partition's writer takes the same lock, nested)."""
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with directory_lock(out_dir):
            yield
    except BaseException:
        if made and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _metadata(bundle, dataset: Dataset, input_path: Path, scorer: Scorer) -> dict:
    """The partition's metadata: where its rows come from and the model that encoded them."""
    fingerprint = sha256_file(input_path) if input_path.is_file() else None
    return LatentsMetadata.of(bundle, dataset.source, input_path, fingerprint, scorer).as_dict()


def _scorer(bundle, reference: Reference | None) -> Scorer:
    """Rows are scored with the reference's K (their quantile needs it; encode.importance_samples'
    default without)."""
    k = reference.importance_samples if reference else EncodeConfig.importance_samples
    return Scorer(bundle.vae, RowSurprisal(bundle.vae, k), pixel_dims(bundle.manifest), reference)


def find_reference(bundle, latents: Path | None) -> Reference | None:
    """The training rows' surprisal from a latent dataset the encode stage wrote with this
    model: `latents`, or where none is given the stage's output beside the model's folder
    (data/model/model.keras -> data/latents), when it holds one. Without it, or with one whose
    L is another compressor's (an older version's), the rows' surprisal_quantile and novelty are
    null (a warning says so); a given one that lacks it or holds such a reference is an error."""
    where = latents or bundle.model_path.parent.parent / "latents"
    for file in sorted(Path(where).glob("split=*/*.parquet")):
        meta = read_metadata(file)
        found = (meta.get("surprisal") or {}).get("reference")
        if found and meta.get("model_sha256") == bundle.model_sha256:
            if not found["pixels"] or found.get("compressor") == COMPRESSOR:
                return Reference.of(found)
            stale = (
                f"{file}: its training rows' novelty was measured with L = the "
                f"{found.get('compressor') or 'png'} code length, this version's is {COMPRESSOR}'s; "
                "run the encode stage again (dvc repro) to rebuild the reference"
            )
            if latents is not None:
                raise DataError(stale)
            log.warning("%s. surprisal_quantile and novelty are null", stale)
            return None
    if latents is not None:
        raise DataError(
            f"{latents}: no latents of this model ({bundle.model_path}) with the training rows' surprisal "
            "in their metadata; give --reference the encode stage's output (data/latents) of this model"
        )
    log.warning(
        "no latents of this model at %s hold the training rows' surprisal: surprisal_quantile and novelty "
        "are null. Give --reference the encode stage's output (data/latents) of this model",
        where,
    )
    return None


def check_not_a_stage_output(out_dir: Path) -> None:
    """Raise DataError when out_dir is, or lies inside, what a stage of the nearest dvc.yaml
    above it replaces: an output, or a folder holding outputs below the top one (data/model
    holds model.keras and live/, backup/ and the publication's staging beside them), or a
    publication's temporary directory anywhere. The next `dvc repro` of that stage would
    replace it and lose what the command wrote there."""
    import yaml

    target = out_dir.resolve()
    temporary = next((part for part in target.parts if TEMPORARY.fullmatch(part)), None)
    if temporary:
        raise DataError(
            f"{out_dir}: inside {temporary}, a publication's temporary directory, which the next "
            "run removes. Give --output another directory (e.g. latents_new/)"
        )
    for folder in (target, *target.parents):
        spec = folder / "dvc.yaml"
        if not spec.is_file():
            continue
        stages = (yaml.safe_load(spec.read_text(encoding="utf-8")) or {}).get("stages", {})
        owners = [
            ((folder / replaced).resolve(), name)
            for name, stage in stages.items()
            for out in (*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", []))
            for owned in [Path(out if isinstance(out, str) else next(iter(out)))]
            for replaced in [owned, *list(owned.parents)[:-2]]
        ]  # the output, its folders but the top one
        inside = [(path, name) for path, name in owners if path == target or path in target.parents]
        if inside:
            path, name = max(inside, key=lambda owner: len(owner[0].parts))  # the most specific
            raise DataError(
                f"{out_dir}: inside {path.relative_to(folder)}, which the {name!r} stage of {spec} "
                f"writes; the next `dvc repro` of {name} may replace it and lose what is written "
                "here. Give --output another directory (e.g. latents_new/)"
            )
        return
