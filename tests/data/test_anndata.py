"""AnnData (.h5ad): single-cell counts read by rows (X or a layer; CSR, dense or CSC), labels
from obs, counts modelled as counts; and the hand-off back, obsm["X_vae"]."""

import logging

import numpy as np
import pytest

from pipeline.data.readers.h5ad import read_h5ad
from pipeline.platform.errors import DataError
from pipeline.platform.params.load import parse_params
from tests.builders import make_cells


def test_x_and_layers_are_read_by_rows_whatever_their_storage(tmp_path, caplog):
    counts, kind = make_cells(tmp_path / "cells.h5ad")
    data = read_h5ad(tmp_path / "cells.h5ad", None, "cell_type", scratch=tmp_path)
    assert isinstance(data.x, np.memmap) and data.x.dtype == np.float32  # decoded into scratch, not memory
    np.testing.assert_array_equal(data.x, counts)
    assert data.label_names == ("B", "NK", "T") and (data.y == kind).all()
    np.testing.assert_array_equal(read_h5ad(tmp_path / "cells.h5ad", "dense", None).x, counts)
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_h5ad(tmp_path / "cells.h5ad", "by_column", None).x, counts)
    assert "stored by columns (CSC)" in caplog.text
    for layer, key, message in [
        (
            "counts",
            None,
            r"no layer 'counts' \(data.anndata.layer\); its layers are "
            r"\['by_column', 'dense'\]",
        ),
        (None, "celltype", r"no obs column 'celltype' .* \(did you mean 'cell_type'\?\)"),
    ]:
        with pytest.raises(DataError, match=message):
            read_h5ad(tmp_path / "cells.h5ad", layer, key)
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"broken.h5ad: cannot read .h5ad file"):
        read_h5ad(tmp_path / "broken.h5ad", None, None)


def test_counts_in_an_h5ad_resolve_to_the_count_likelihood(tmp_path):
    from pipeline.data.prepare import prepare

    make_cells(tmp_path / "cells.h5ad")
    config = parse_params(
        {
            "data": {
                "source": "anndata",
                "path": str(tmp_path / "cells.h5ad"),
                "anndata": {"label_key": "cell_type"},
            }
        }
    ).data
    manifest = prepare(config, seed=0, out_dir=tmp_path / "p")
    assert manifest.source == "anndata" and manifest.value_type == "count" and manifest.example_shape == [60]
    assert manifest.scaling == "none" and manifest.label_names == ["B", "NK", "T"]
    assert sum(manifest.counts.values()) == 300


def _cells(tmp_path):
    """make_cells' file, and h5py opened on it for a change."""
    import h5py

    make_cells(tmp_path / "cells.h5ad")
    return tmp_path / "cells.h5ad", h5py.File(tmp_path / "cells.h5ad", "r+")


def _corrupt_csr(file, name, change):
    values = file[f"X/{name}"][:]
    change(values)
    file[f"X/{name}"][...] = values


def _replace(file, name, make):
    del file[name]
    make(file, name)


# (what is done to make_cells' file, layer, label_key, the error). Each was a segfault, a read of
# another file, a terabyte allocation, a value silently cut or a raw traceback.
SECRET = b"a neighbour's file\n" * 64


def _external_link(f, name, tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["secret"] = np.ones((300, 60), np.float32)
    f[name] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/secret")


def _external_storage(f, name, tmp_path):
    (tmp_path / "secret.txt").write_bytes(SECRET)
    f.create_dataset(
        name, shape=(16, 19), dtype=np.float32, external=[(str(tmp_path / "secret.txt"), 0, len(SECRET))]
    )


def _virtual(f, name, tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["secret"] = np.ones((300, 60), np.float32)
    layout = h5py.VirtualLayout(shape=(300, 60), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "secret", shape=(300, 60))
    f.create_virtual_dataset(name, layout)


HOSTILE = {
    "index out of range": (
        lambda f, t: _corrupt_csr(f, "indices", lambda v: v.__setitem__(7, 10**6)),
        None,
        None,
        r"X has a column index out of range 0..59 in rows 0..\d+ \(found 0..1000000\)",
    ),
    "negative index": (
        lambda f, t: _corrupt_csr(f, "indices", lambda v: v.__setitem__(7, -3)),
        None,
        None,
        r"column index out of range",
    ),
    "indptr not monotonic": (
        lambda f, t: _corrupt_csr(f, "indptr", lambda v: v.__setitem__(100, v[99] - 1)),
        None,
        None,
        r"X's indptr says row 99 holds -1 values \(rows hold 0 to 60\)",
    ),
    "indptr past the values": (
        lambda f, t: _corrupt_csr(f, "indptr", lambda v: v.__setitem__(-1, v[-1] + 5)),
        None,
        None,
        r"X/indptr runs from 0 to \d+, not from 0 to the \d+ values stored",
    ),
    "indptr of another length": (
        lambda f, t: _replace(f, "X/indptr", lambda g, n: g.create_dataset(n, data=np.zeros(7, np.int64))),
        None,
        None,
        r"stores \d+ values, \d+ indices and 7 indptr entries",
    ),
    "shape of 2^40 columns": (
        lambda f, t: f["X"].attrs.__setitem__("shape", np.array([300, 2**40])),
        None,
        None,
        r"reading X \(300 × 1,099,511,627,776 float32\) takes [\d,.]+ GiB but the free disk at "
        r".*scratch is",
    ),
    "shape not two numbers": (
        lambda f, t: f["X"].attrs.__setitem__("shape", np.array([300])),
        None,
        None,
        r"X's shape attribute must be two whole numbers",
    ),
    "unknown sparse encoding": (
        lambda f, t: f["X"].attrs.__setitem__("encoding-type", "coo_matrix"),
        None,
        None,
        r"X is a group of encoding 'coo'; expected a dense matrix or a sparse csr_matrix",
    ),
    "chunks never written": (
        lambda f, t: _replace(
            f,
            "layers/dense",
            lambda g, n: g.create_dataset(
                n, shape=(10_000_000, 100_000), chunks=(1000, 1000), dtype=np.float32
            ),
        ),
        "dense",
        None,
        r"'layers/dense' declares shape \[10000000, 100000\] but stores 0 of the 1,000,000 chunks it needs",
    ),
    "complex values": (
        lambda f, t: _replace(
            f, "layers/dense", lambda g, n: g.create_dataset(n, data=np.ones((300, 60), np.complex64))
        ),
        "dense",
        None,
        r"'layers/dense' must hold real numbers. Got "
        r"dtype complex64",
    ),
    "external link": (
        lambda f, t: _replace(f, "layers/dense", lambda g, n: _external_link(g, n, t)),
        "dense",
        None,
        r"'layers/dense' is an external link to .*other.h5:/secret; only objects stored in the file",
    ),
    "soft link": (
        lambda f, t: _replace(
            f, "layers/dense", lambda g, n: g.__setitem__(n, __import__("h5py").SoftLink("/X/data"))
        ),
        "dense",
        None,
        r"'layers/dense' is a soft link to /X/data",
    ),
    "external storage": (
        lambda f, t: _replace(f, "layers/dense", lambda g, n: _external_storage(g, n, t)),
        "dense",
        None,
        r"'layers/dense' keeps its data in external files \(.*secret.txt\); refused",
    ),
    "virtual dataset": (
        lambda f, t: _replace(f, "layers/dense", lambda g, n: _virtual(g, n, t)),
        "dense",
        None,
        r"'layers/dense' is a virtual dataset",
    ),
    "labels of another length": (
        lambda f, t: _replace(
            f, "obs/cell_type/codes", lambda g, n: g.create_dataset(n, data=np.zeros(7, np.int8))
        ),
        None,
        "cell_type",
        r"obs\['cell_type'\] must hold one value per cell \(300\)",
    ),
    "labels in two columns": (
        lambda f, t: _replace(f, "obs/batch", lambda g, n: g.create_dataset(n, data=np.zeros((300, 2)))),
        None,
        "batch",
        r"obs\['batch'\] must hold one value per cell \(300\). Got "
        r"shape \[300, 2\]",
    ),
    "labels of an unknown encoding": (
        lambda f, t: f["obs/cell_type"].attrs.__setitem__("encoding-type", "mystery"),
        None,
        "cell_type",
        r"obs/cell_type is stored in an encoding this anndata",
    ),
    "labels through an external link": (
        lambda f, t: _replace(f, "obs/cell_type/categories", lambda g, n: _external_link(g, n, t)),
        None,
        "cell_type",
        r"'obs/cell_type/categories' is an external link",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_crafted_h5ad_is_one_error_line_before_anything_is_read_or_allocated(tmp_path, case):
    change, layer, label_key, message = HOSTILE[case]
    path, file = _cells(tmp_path)
    with file:
        change(file, tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(DataError, match=message) as error:
        read_h5ad(path, layer, label_key, scratch=scratch)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert sum(f.stat().st_size for f in scratch.iterdir()) < 2**20  # nothing of the declared size


def test_genes_are_matched_by_name_and_reordered(tmp_path):
    import anndata as ad

    counts, _ = make_cells(tmp_path / "cells.h5ad")
    original = ad.read_h5ad(tmp_path / "cells.h5ad")
    genes = list(original.var_names)
    assert read_h5ad(tmp_path / "cells.h5ad", None, None).feature_names == tuple(genes)
    shuffled = original[:, np.random.default_rng(0).permutation(60)].copy()
    shuffled.var_names = [*shuffled.var_names[:-1], "gene_new"]  # one gene the model never saw...
    # ...and the one it lost, last
    shuffled = ad.concat(
        [shuffled, original[:, [genes.index(n) for n in genes if n not in shuffled.var_names]]], axis=1
    )
    shuffled.write_h5ad(tmp_path / "shuffled.h5ad")
    read = read_h5ad(tmp_path / "shuffled.h5ad", None, None, genes=genes)
    np.testing.assert_array_equal(read.x, counts)
    assert read.feature_names == tuple(genes)
    original[:, 3:].copy().write_h5ad(tmp_path / "fewer.h5ad")
    with pytest.raises(
        DataError, match=r"fewer.h5ad: 3 of the model's 60 genes are not in var: gene0, gene1, gene2$"
    ):
        read_h5ad(tmp_path / "fewer.h5ad", None, None, genes=genes)
