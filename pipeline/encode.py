"""The encode stage: the latents of every prepared example, as the Parquet dataset data/latents.

(New data in another project goes through `pipeline.encode_new`, the `vae-pipeline encode`
command.)
"""

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.bundle import load_bundle
from pipeline.config import Params
from pipeline.data import load_splits
from pipeline.errors import ConfigError
from pipeline.hardware import hide_gpus, share_gpus
from pipeline.imputation import Completer
from pipeline.io import atomic_dir, recover_dir, sha256_file
from pipeline.latents import encoded_batches, package_versions, write_part
from pipeline.manifest import Manifest


def run(params: Params, *, prepared_dir, model_path, out_dir) -> int:
    """The stage's recipe: the params it reads, passed on (stages/encode.py and pipeline.runner)."""
    return encode(prepared_dir=prepared_dir, model_path=model_path, out_dir=out_dir,
                  batch_size=params.encode.batch_size, workers=params.encode.workers, impute=params.encode.impute)


def encode(*, prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path, batch_size: int,
           workers: int = 1, impute: bool = False) -> int:
    """Latents of the train and test splits; returns the number of rows.

    workers > 1: that many processes, worker k encoding the k-th contiguous share of each
    split's rows into part-<k>.parquet; together one dataset, replaced atomically.
    impute (a table): each row also `completed`, its missing cells imputed, and `imputed` flags.
    The files' metadata records what made them: the data's fingerprint, the model's sha256,
    its resolved run (model, loss and train config, seed) and this stage's own params.
    """
    recover_dir(out_dir)  # what a killed run of this stage left
    share_gpus()
    if workers > 1:
        hide_gpus()  # this process loads the model only to check it: the workers compute, on the GPUs
    manifest = Manifest.read(prepared_dir)
    bundle = load_bundle(model_path)
    bundle.check_shape(manifest.input_shape, prepared_dir)
    if impute and manifest.columns is None:
        raise ConfigError(f"encode.impute fills in a table's missing cells, but {prepared_dir} holds "
                          f"{manifest.value_type} values; set encode.impute: false")
    metadata = {
        "dataset_fingerprint": manifest.fingerprint,
        "dataset_source": manifest.source,
        "label_names": manifest.label_names,
        "model_sha256": sha256_file(model_path),
        "choices": bundle.choices,  # every auto knob's value and rule
        # The params that made these latents: the model's resolved run and this stage's own.
        "params": {**(bundle.run or {}), "encode": {"batch_size": batch_size, "workers": workers, "impute": impute}},
        "versions": package_versions(),
    }
    share = functools.partial(encode_share, prepared_dir, model_path, batch_size=batch_size, metadata=metadata,
                              workers=workers, columns=manifest.columns if impute else None)
    with atomic_dir(out_dir) as tmp:
        if workers == 1:
            return share(tmp, 0, vae=bundle.vae)
        # spawn: a forked child would inherit this process's TensorFlow threads mid-flight.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return sum(pool.map(share, [tmp] * workers, range(workers)))


def encode_share(prepared_dir, model_path, directory: Path, worker: int, *, batch_size: int, metadata: dict,
                 workers: int, columns=None, vae=None) -> int:
    """Worker `worker` of `workers`: its share of every split into directory/split=<s>/part-<worker>.parquet.

    columns: a table's columns, to write each row completed (imputation); None: latents only.
    """
    vae = vae or load_bundle(model_path).vae
    _, data = load_splits(prepared_dir)  # the manifest read once
    completer = Completer(vae, columns, data["train"].preprocess) if columns is not None else None

    def batches():
        for split, part in data.items():
            rows = slice(worker * len(part) // workers, (worker + 1) * len(part) // workers)
            yield from encoded_batches(vae.predict_posterior, split, part.x[rows], part.y[rows], part.id[rows],
                                       batch_size, part.preprocess, completer)

    return write_part(directory, batches(), vae.latent_dim, metadata, part=worker,
                      table=completer.table if completer else None)
