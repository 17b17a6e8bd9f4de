"""AnnData (.h5ad): single-cell counts read by rows (X or a layer; CSR, dense or CSC), labels
from obs, counts modelled as counts; and the hand-off back, obsm["X_vae"]."""

import logging

import numpy as np
import pytest

from pipeline.data.readers.h5ad import read_h5ad
from pipeline.platform.config import parse_params
from pipeline.platform.errors import DataError

from .builders import make_cells


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
    for layer, key, message in [("counts", None, r"no layer 'counts' \(data.anndata.layer\); its layers are "
                                                 r"\['by_column', 'dense'\]"),
                                (None, "celltype", r"no obs column 'celltype' .* \(did you mean 'cell_type'\?\)")]:
        with pytest.raises(DataError, match=message):
            read_h5ad(tmp_path / "cells.h5ad", layer, key)
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"broken.h5ad: cannot read .h5ad file"):
        read_h5ad(tmp_path / "broken.h5ad", None, None)


def test_counts_in_an_h5ad_resolve_to_the_count_likelihood(tmp_path):
    from pipeline.data.prepare import prepare

    make_cells(tmp_path / "cells.h5ad")
    config = parse_params({"data": {"source": "anndata", "path": str(tmp_path / "cells.h5ad"),
                                    "anndata": {"label_key": "cell_type"}}}).data
    manifest = prepare(config, seed=0, out_dir=tmp_path / "p")
    assert manifest.source == "anndata" and manifest.value_type == "count" and manifest.example_shape == [60]
    assert manifest.scaling == "none" and manifest.label_names == ["B", "NK", "T"]
    assert sum(manifest.counts.values()) == 300
