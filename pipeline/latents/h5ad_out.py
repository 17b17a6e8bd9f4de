"""The hand-off to scanpy and scvi-tools: a copy of the input .h5ad with the latents in
obsm["X_vae"] (z_mean, one row per cell in the file's order), so that
`sc.pp.neighbors(adata, use_rep="X_vae")` and everything after it work on them.

The copy is written beside its target and renamed onto it: a failed run leaves a previous
file as it was. Only obsm is touched; X, layers, obs, var and uns are the input's bytes.
"""

import shutil
from pathlib import Path

import numpy as np

from pipeline.data.readers.h5ad import anndata_io, h5ad_errors
from pipeline.platform.errors import DataError
from pipeline.platform.io import atomic_path

KEY = "X_vae"


class LatentRows:
    """z_mean of every row, gathered from encoded batches in row order as they stream past."""

    def __init__(self, rows: int, dim: int):
        self.z_mean = np.empty((rows, dim), np.float32)

    def gather(self, batches):
        for batch in batches:
            self.z_mean[batch.ids] = batch.z_mean
            yield batch


def check_h5ad_target(source: Path, target: Path | None) -> None:
    """DataError, before any work, unless `source` is an .h5ad and `target` another .h5ad path
    (or None: no copy is asked for)."""
    if target is None:
        return
    if Path(source).suffix.lower() != ".h5ad":
        raise DataError(
            f"--anndata-out writes a copy of an .h5ad input with the latents; {source} is not one"
        )
    if Path(target).suffix.lower() != ".h5ad" or Path(target).resolve() == Path(source).resolve():
        raise DataError(f"--anndata-out {target}: give a new .h5ad path, not the input's")
    anndata_io()


def write_h5ad_with_latents(source: Path, target: Path, z_mean: np.ndarray) -> None:
    """Copy `source` to `target` with obsm[KEY] = z_mean (replacing one already there)."""
    import h5py

    check_h5ad_target(source, target)
    io = anndata_io()
    with atomic_path(target) as tmp, h5ad_errors(source):
        shutil.copyfile(source, tmp)
        with h5py.File(tmp, "r+") as file:
            if z_mean.shape[0] != file["obs"][file["obs"].attrs["_index"]].shape[0]:
                raise DataError(
                    f"{source}: {z_mean.shape[0]} latent rows for a file of another number of cells"
                )
            obsm = file.require_group("obsm")
            if KEY in obsm:
                del obsm[KEY]
            io.write_elem(obsm, KEY, z_mean)
