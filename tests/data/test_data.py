"""prepare: digits scaled and split with a seed, arrays and manifest written atomically."""

import json

import numpy as np
import pytest

from pipeline.data.manifest import Manifest
from pipeline.data.prepare import prepare
from pipeline.data.prepared import load_split
from pipeline.platform.errors import DataError
from pipeline.platform.io import sha256_file
from pipeline.platform.params.config import DataConfig
from tests.builders import write_idx


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    return out, prepare(DataConfig(test_fraction=0.25), seed=3, out_dir=out)


def test_manifest_describes_the_arrays(prepared):
    out, manifest = prepared
    assert manifest == Manifest.read(out)
    assert manifest.source == "digits"
    assert manifest.example_shape == [8, 8, 1]
    assert manifest.counts == {"train": 1347, "test": 450}
    assert manifest.label_names == [str(i) for i in range(10)]
    for name, digest in manifest.sha256.items():
        assert sha256_file(out / name) == digest
    assert len(manifest.fingerprint) == 64


def test_splits_are_scaled_disjoint_complete_and_stratified(prepared):
    out, manifest = prepared
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.x.dtype == np.uint8 and train.x.max() == 16  # stored as the source's pixels
    inputs = train.inputs()
    assert inputs.dtype == np.float32 and inputs.min() >= 0 and inputs.max() == 1
    assert set(train.id).isdisjoint(test.id)
    assert sorted([*train.id, *test.id]) == list(range(1797))
    share = np.bincount(test.y) / np.bincount(np.concatenate([train.y, test.y]))
    assert np.all(np.abs(share - 0.25) < 0.02)
    assert np.bincount(test.y).tolist() == manifest.counts_per_class["test"]


def test_same_seed_same_split_other_seed_other_split(tmp_path, prepared):
    out, manifest = prepared
    again = prepare(DataConfig(test_fraction=0.25), seed=3, out_dir=tmp_path / "a")
    other = prepare(DataConfig(test_fraction=0.25), seed=4, out_dir=tmp_path / "b")
    assert again.fingerprint == manifest.fingerprint
    assert other.fingerprint != manifest.fingerprint


def test_failed_prepare_keeps_the_previous_output(tmp_path, monkeypatch):
    import pipeline.data.prepare as prepare_module
    from pipeline.data.readers.source_dataset import Dataset

    out = tmp_path / "prepared"
    good = prepare(DataConfig(), seed=0, out_dir=out)
    broken = Dataset(
        x=np.full((10, 2), np.nan, dtype=np.float32),
        y=np.zeros(10, np.int32),
        label_names=("a",),
        source="digits",
    )
    monkeypatch.setattr(prepare_module, "load_source", lambda config, scratch=None, engine=None: broken)
    with pytest.raises(DataError, match="NaN or infinite"):
        prepare(DataConfig(), seed=0, out_dir=out)
    assert json.loads((out / "manifest.json").read_text()) == good.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no temporary left behind


def test_missing_prepared_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="run the prepare stage first"):
        load_split(tmp_path, "train")


@pytest.fixture()
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_source_keeps_its_own_test_split(idx_dir, tmp_path):
    from pipeline.data.readers.idx import read_idx

    manifest = prepare(DataConfig(source="fashion_mnist", path=str(idx_dir)), seed=0, out_dir=tmp_path / "p")
    assert manifest.counts == {"train": 40, "test": 20}
    assert manifest.example_shape == [28, 28, 1] and manifest.path == str(idx_dir)
    assert manifest.label_names[9] == "Ankle boot"
    assert manifest.preprocessing["test_split"] == "the source's own"
    test = load_split(tmp_path / "p", "test")
    pixels = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(test.x[..., 0], pixels)
    np.testing.assert_allclose(test.inputs()[..., 0], pixels / 255.0, rtol=1e-6)
    assert test.id.tolist() == list(range(40, 60))


def test_idx_errors_name_the_file(idx_dir, tmp_path):
    from pipeline.data.readers.idx import read_idx

    bad = tmp_path / "bad.gz"
    write_idx(bad, np.zeros((2, 3)), code=0x07)
    with pytest.raises(DataError, match=r"bad\.gz: not an IDX file \(bad magic number 00000702\)"):
        read_idx(bad)
    import gzip

    raw = gzip.open(idx_dir / "train-labels-idx1-ubyte.gz").read()
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(DataError, match="short.gz: truncated or padded IDX file"):
        read_idx(tmp_path / "short.gz")


def test_missing_idx_source_says_where_it_looked_and_never_downloads(tmp_path, monkeypatch):
    import keras

    def no_download(*args, **kwargs):
        raise AssertionError("the reader tried keras.datasets (a download)")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_download)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.chdir(tmp_path)  # the default data.path, data/raw, is empty here
    with pytest.raises(
        DataError,
        match=f"looked in data/raw, {tmp_path / 'keras'}/datasets/mnist, "
        r"/usr/share/datasets/mnist\. Nothing is downloaded: on Debian, apt-get "
        r"install dataset-mnist .*or point data.path at a folder holding them",
    ):
        prepare(DataConfig(source="mnist"), seed=0, out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_an_explicit_path_without_the_release_files_is_an_error_not_a_fallback(
    idx_dir, tmp_path, monkeypatch
):
    """Issue 12.5: a set data.path is the only place looked, even when a system copy exists."""
    import shutil

    system_copy = tmp_path / "keras" / "datasets" / "fashion-mnist"
    shutil.copytree(idx_dir, system_copy, ignore=shutil.ignore_patterns("keras"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(idx_dir / "train-images-idx3-ubyte.gz", mine)
    with pytest.raises(DataError) as info:
        prepare(DataConfig(source="fashion_mnist", path=str(mine)), seed=0, out_dir=tmp_path / "p")
    message = str(info.value)
    assert message.startswith(f"{mine}: ") and "from data.path" in message
    assert (
        "missing: train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz."
        in message
    )
    assert not (tmp_path / "p").exists()
    monkeypatch.chdir(tmp_path)  # left at the default, the system copy is used
    manifest = prepare(DataConfig(source="fashion_mnist"), seed=0, out_dir=tmp_path / "p")
    assert manifest.path == str(system_copy) and manifest.counts == {"train": 40, "test": 20}


def test_hold_out_is_exact_stratified_seeded_and_chunk_free(tmp_path, monkeypatch):
    import pipeline.data.splits as splits
    from pipeline.data.splits import HoldOut

    y = np.repeat(np.arange(3), [500, 300, 200]).astype(np.int32)
    np.random.default_rng(0).shuffle(y)
    rule = HoldOut.fit(y, 0.25, seed=0, what="test")
    kept, held = rule.indices(y)
    assert len(held) == 250 and np.bincount(y[held]).tolist() == [125, 75, 50]  # a quarter of each class
    assert sorted([*kept, *held]) == list(range(1000))
    assert np.array_equal(rule.held(np.arange(1000), y).nonzero()[0], held)  # row by row, the same rows
    again = HoldOut.fit(y, 0.25, seed=0, what="test").indices(y)[1]
    other = HoldOut.fit(y, 0.25, seed=1, what="test").indices(y)[1]
    assert np.array_equal(held, again) and not np.array_equal(held, other)
    # Rows of one class are chosen at random: held rows spread over the whole array.
    assert 300 < np.median(held) < 700
    monkeypatch.setattr(splits, "STEP", 7)  # chunk by chunk: the same split, into memory maps
    small = HoldOut.fit(y, 0.25, seed=0, what="test")
    kept_mm, held_mm = small.indices(y, scratch=tmp_path)
    assert isinstance(held_mm, np.memmap) and np.array_equal(held_mm, held) and np.array_equal(kept_mm, kept)
    # `within`: a split of what another keeps (data.max_examples, then test)
    first = HoldOut.fit(y, 400, seed=0, what="max_examples")
    second = HoldOut.fit(y, 0.5, seed=0, what="test", within=first)
    kept2, held2 = second.indices(y)
    assert len(kept2) == len(held2) == 300 and not set(held2) & set(first.indices(y)[1])


@pytest.mark.parametrize(
    "y, held, message",
    [
        (np.array([0, 0, 1, 1, 1, 2]), 0.5, "least populated class has 1 example"),
        (np.arange(10) % 5, 2, "at least one example of each of the 5 classes"),
        (np.full(4, -1), 4, "both sides need at least one example"),
    ],
)
def test_hold_out_that_cannot_be_made_says_why(y, held, message):
    from pipeline.data.splits import HoldOut

    with pytest.raises(DataError, match=f"cannot make the test split .*{message}"):
        HoldOut.fit(y, held, seed=0, what="test")
