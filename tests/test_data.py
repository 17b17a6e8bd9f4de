"""prepare: digits scaled and split with a seed, arrays and manifest written atomically."""

import json

import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.data import load_split, prepare, read_manifest
from pipeline.errors import DataError
from pipeline.io import sha256_file


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    return out, prepare(DataConfig(test_fraction=0.25), seed=3, out_dir=out)


def test_manifest_describes_the_arrays(prepared):
    out, manifest = prepared
    assert manifest == read_manifest(out)
    assert manifest["source"] == "digits"
    assert manifest["example_shape"] == [8, 8, 1]
    assert manifest["counts"] == {"train": 1347, "test": 450}
    assert manifest["label_names"] == [str(i) for i in range(10)]
    for name, digest in manifest["sha256"].items():
        assert sha256_file(out / name) == digest
    assert len(manifest["fingerprint"]) == 64


def test_splits_are_scaled_disjoint_complete_and_stratified(prepared):
    out, manifest = prepared
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.x.dtype == np.float32 and train.x.min() >= 0 and train.x.max() == 1
    assert set(train.id).isdisjoint(test.id)
    assert sorted([*train.id, *test.id]) == list(range(1797))
    share = np.bincount(test.y) / np.bincount(np.concatenate([train.y, test.y]))
    assert np.all(np.abs(share - 0.25) < 0.02)
    assert np.bincount(test.y).tolist() == manifest["counts_per_class"]["test"]


def test_same_seed_same_split_other_seed_other_split(tmp_path, prepared):
    out, manifest = prepared
    again = prepare(DataConfig(test_fraction=0.25), seed=3, out_dir=tmp_path / "a")
    other = prepare(DataConfig(test_fraction=0.25), seed=4, out_dir=tmp_path / "b")
    assert again["fingerprint"] == manifest["fingerprint"]
    assert other["fingerprint"] != manifest["fingerprint"]


def test_failed_prepare_keeps_the_previous_output(tmp_path, monkeypatch):
    import pipeline.data as data

    out = tmp_path / "prepared"
    good = prepare(DataConfig(), seed=0, out_dir=out)
    broken = data.Dataset(x=np.full((10, 2), np.nan, dtype=np.float32), y=np.zeros(10, np.int32),
                          label_names=("a",), source="digits")
    monkeypatch.setattr(data, "load_source", lambda config: broken)
    with pytest.raises(DataError, match="NaN or infinite"):
        prepare(DataConfig(), seed=0, out_dir=out)
    assert json.loads((out / "manifest.json").read_text()) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no temporary left behind


def test_missing_prepared_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="run the prepare stage first"):
        load_split(tmp_path, "train")
