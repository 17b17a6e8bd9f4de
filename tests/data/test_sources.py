"""Every data.source on small files made here; every error names the file and keeps old outputs."""

import json

import numpy as np
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.prepared import Preprocessor, load_split
from pipeline.platform.errors import DataError
from tests.builders import data_config, files_of, make_image_folder, make_table, write_idx


def test_table_csv_and_parquet(tmp_path):
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"t{suffix}"
        table = make_table(path)
        # c holds whole numbers from 0: a count by the typing rule (tests/data/test_columns.py); here real
        manifest = prepare(
            data_config(
                source="table", path=str(path), scaling="unit", table={"column_types": {"c": "real"}}
            ),
            seed=0,
            out_dir=tmp_path / f"p{suffix}",
        )
        assert manifest.example_shape == [3] and manifest.label_names == ["cat", "dog", "eel"]
        assert sum(manifest.counts.values()) == 60
        train = load_split(tmp_path / f"p{suffix}", "train")
        inputs = train.inputs()
        assert inputs.min() == 0.0 and inputs.max() == 1.0  # min/max of train per feature
        row = int(train.id[0])
        expected_a = table["a"][row].as_py() - min(table["a"].to_numpy()[train.id])
        assert inputs[0, 0] == pytest.approx(expected_a / np.ptp(table["a"].to_numpy()[train.id]), rel=1e-5)
        assert ["cat", "dog", "eel"][train.y[0]] == table["label"][row].as_py()


def test_table_feature_columns_and_no_labels(tmp_path):
    path = tmp_path / "t.csv"
    make_table(path, label=None)
    manifest = prepare(
        data_config(
            source="table", path=str(path), table={"label_column": None, "feature_columns": ["b", "a"]}
        ),
        seed=0,
        out_dir=tmp_path / "p",
    )
    assert manifest.example_shape == [2] and manifest.label_names == []
    assert set(load_split(tmp_path / "p", "test").y) == {-1}


@pytest.mark.parametrize(
    "setup, message",
    [
        (
            lambda p: p.write_text("a,b,label\n,7,x\n,7,y\n"),
            "no column left to model; a: no value in any row; b: one value (7) in every row that has one",
        ),
        (
            lambda p: make_table(p, label="kind"),
            "no column 'label'; columns are ['a', 'b', 'c', 'kind']; a table "
            "without labels takes data.table.label_column: null",
        ),
        (lambda p: p.write_text("a,b\n1,2\n3\n"), "cannot read table"),
    ],
)
def test_table_errors(tmp_path, setup, message):
    path = tmp_path / "t.csv"
    setup(path)
    with pytest.raises(DataError) as info:
        prepare(data_config(source="table", path=str(path)), seed=0, out_dir=tmp_path / "p")
    assert message in str(info.value) and str(path) in str(info.value)


def test_npz_with_keys_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", inputs=rng.uniform(size=(50, 4, 4)), target=np.arange(50) % 2)
    cfg = data_config(source="npz", path=str(tmp_path / "d.npz"), npz={"x_key": "inputs", "y_key": "target"})
    manifest = prepare(cfg, seed=0, out_dir=tmp_path / "p")
    assert manifest.example_shape == [4, 4] and manifest.counts == {"train": 40, "test": 10}
    with pytest.raises(
        DataError,
        match=r"no array named 'input'; it holds \['inputs', 'target'\] \(did you mean 'inputs'\?\)",
    ):
        prepare(
            data_config(source="npz", path=str(tmp_path / "d.npz"), npz={"x_key": "input"}), 0, tmp_path / "q"
        )
    np.savez(tmp_path / "m.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="5 inputs in 'x' but 4 labels in 'y'"):
        prepare(data_config(source="npz", path=str(tmp_path / "m.npz")), 0, tmp_path / "q")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="broken.npz: cannot read npz file"):
        prepare(data_config(source="npz", path=str(tmp_path / "broken.npz")), 0, tmp_path / "q")
    np.savez(
        tmp_path / "inf.npz", x=np.where(np.arange(30).reshape(10, 3) == 4, np.inf, 0.5), y=np.arange(10) % 2
    )
    with pytest.raises(DataError, match=r"inf.npz: inputs contain NaN or infinite values \(1 examples\)"):
        prepare(data_config(source="npz", path=str(tmp_path / "inf.npz")), 0, tmp_path / "q")
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(DataError, match="the dataset is empty"):
        prepare(data_config(source="npz", path=str(tmp_path / "e.npz")), 0, tmp_path / "q")


def test_image_folder_resize_grey_and_rgb(tmp_path):
    make_image_folder(tmp_path / "imgs", sizes=((10, 12), (20, 9)))
    cfg = data_config(source="image_folder", path=str(tmp_path / "imgs"), images={"size": [8, 6]})
    manifest = prepare(cfg, seed=0, out_dir=tmp_path / "p")
    assert manifest.example_shape == [8, 6, 1] and manifest.label_names == ["circle", "square"]
    cfg = data_config(
        source="image_folder", path=str(tmp_path / "imgs"), images={"size": [8, 6], "color": "rgb"}
    )
    assert prepare(cfg, seed=0, out_dir=tmp_path / "q").example_shape == [8, 6, 3]


def test_image_folder_of_mixed_sizes_gets_one_size_and_says_so(tmp_path):
    make_image_folder(tmp_path / "imgs", sizes=((30, 44), (20, 9), (40, 40)), per_class=9)
    manifest = prepare(
        data_config(source="image_folder", path=str(tmp_path / "imgs")), seed=0, out_dir=tmp_path / "p"
    )
    assert manifest.example_shape == [24, 24, 1]  # the median shorter side, 30, down to a multiple of 8
    assert manifest.choices["data.images.size"] == {
        "value": [24, 24],
        "why": "3 sizes among 18 images read (from 20 × 9 to 40 × 40); a square of their "
        "median shorter side 30, a multiple of 8, at most 128",
    }
    same = make_image_folder(tmp_path / "same", sizes=((12, 10),))
    manifest = prepare(data_config(source="image_folder", path=str(same)), seed=0, out_dir=tmp_path / "q")
    assert (
        manifest.example_shape == [12, 10, 1] and manifest.choices["data.images.size"]["value"] == "as read"
    )
    with pytest.raises(
        DataError,
        match=r"1\.png: image of size \(20, 9\) but .*0\.jpg is \(30, 44\); "
        r"set data.images.size \(auto, or \[height, width\]\)",
    ):
        prepare(
            data_config(source="image_folder", path=str(tmp_path / "imgs"), images={"size": None}),
            seed=0,
            out_dir=tmp_path / "p",
        )
    (tmp_path / "imgs" / "circle" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: cannot read image"):
        prepare(
            data_config(source="image_folder", path=str(tmp_path / "imgs"), images={"size": [4, 4]}),
            seed=0,
            out_dir=tmp_path / "p",
        )


def test_idx_directory_with_and_without_a_test_part(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, size=(30, 5, 5)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 3)
    manifest = prepare(data_config(source="idx", path=str(tmp_path)), seed=0, out_dir=tmp_path / "p")
    assert manifest.counts == {"train": 24, "test": 6} and manifest.example_shape == [5, 5, 1]
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(9, 5, 5)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 3)
    manifest = prepare(data_config(source="idx", path=str(tmp_path)), seed=0, out_dir=tmp_path / "p")
    assert manifest.counts == {"train": 30, "test": 9}
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(8) % 3)
    with pytest.raises(DataError, match="9 images but .*t10k-labels-idx1-ubyte.gz has 8 labels"):
        prepare(data_config(source="idx", path=str(tmp_path)), seed=0, out_dir=tmp_path / "p")


def test_standardize_binarize_and_subsample(tmp_path):
    manifest = prepare(data_config(scaling="standardize"), seed=0, out_dir=tmp_path / "s")
    train = load_split(tmp_path / "s", "train").inputs().reshape(1437, -1)
    used = train.std(axis=0) > 0
    np.testing.assert_allclose(train[:, used].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(train[:, used].std(axis=0), 1, atol=1e-3)
    assert manifest.value_range[0] < 0
    prepare(data_config(binarize="static", binarize_threshold=0.3), seed=0, out_dir=tmp_path / "b")
    assert set(np.unique(load_split(tmp_path / "b", "train").inputs())) == {0.0, 1.0}
    manifest = prepare(data_config(max_examples=500), seed=0, out_dir=tmp_path / "m")
    assert sum(manifest.counts.values()) == 500
    assert min(manifest.counts_per_class["train"]) >= 35  # stratified


def test_preprocessor_round_trips_through_its_file(tmp_path):
    prepare(data_config(scaling="standardize"), seed=0, out_dir=tmp_path / "s")
    pre = Preprocessor.load(tmp_path / "s" / "preprocessing.npz")
    from pipeline.data.readers.sources import read_digits

    digits = read_digits()
    split = load_split(tmp_path / "s", "test")
    np.testing.assert_array_equal(split.x, digits.x[split.id].astype(np.float32))  # stored: the raw values
    np.testing.assert_array_equal(pre(digits.x[split.id]), split.inputs())


def test_a_split_left_with_one_class_is_an_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).uniform(size=(20, 3)), y=np.r_[np.zeros(19), 1])
    with pytest.raises(DataError, match="the test split holds only class '0.0'|cannot make the test split"):
        prepare(data_config(source="npz", path=str(tmp_path / "d.npz")), seed=0, out_dir=tmp_path / "p")


def test_a_bad_source_keeps_the_previous_prepared_data(tmp_path):
    out = tmp_path / "prepared"
    good = prepare(data_config(), seed=0, out_dir=out)
    with pytest.raises(DataError, match="not found"):
        prepare(data_config(source="npz", path=str(tmp_path / "missing.npz")), seed=0, out_dir=out)
    assert json.loads((out / "manifest.json").read_text()) == good.to_dict()


def test_misspelt_source_suggests_the_closest():
    from pipeline.platform.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'image_folder'"):
        data_config(source="image_folders")
    with pytest.raises(
        ConfigError,
        match=r"data.images.size must be 'auto' or a list of 2 integers >= 1. Got \[28\] instead.",
    ):
        data_config(images={"size": [28]})


@pytest.mark.parametrize("source", ["digits", "npz", "idx", "image_folder", "table"])
def test_chunk_size_changes_nothing_in_the_prepared_data(tmp_path, source):
    """Streaming prepare: a chunk of 7 rows and one chunk give byte-identical outputs."""
    import pipeline.data.readers.source_dataset as dataset

    rng = np.random.default_rng(1)
    setup = {"digits": {"scaling": "standardize"}}
    if source == "npz":  # real values, standardized: statistics merged chunk by chunk
        np.savez(tmp_path / "v.npz", x=rng.normal(3, 2, size=(300, 5)), y=np.arange(300) % 3)
        setup["npz"] = {"path": str(tmp_path / "v.npz")}
    elif source == "idx":  # gzip IDX decoded into a scratch memory map, train and test parts
        for split, n in (("train", 90), ("t10k", 30)):
            write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 6, 5)))
            write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 3)
        setup["idx"] = {"path": str(tmp_path)}
    elif source == "image_folder":
        make_image_folder(tmp_path / "imgs", per_class=20)
        setup["image_folder"] = {"path": str(tmp_path / "imgs"), "binarize": "static"}
    elif source == "table":
        make_table(tmp_path / "t.parquet", n=200)
        setup["table"] = {"path": str(tmp_path / "t.parquet"), "scaling": "unit"}
    cfg = data_config(source=source, **setup[source])
    one = prepare(cfg, seed=0, out_dir=tmp_path / "one", step=10**9)
    chunk_bytes = dataset.CHUNK_BYTES
    try:
        dataset.CHUNK_BYTES = 1  # readers decode a row at a time too
        tiny = prepare(cfg, seed=0, out_dir=tmp_path / "tiny", step=7)
    finally:
        dataset.CHUNK_BYTES = chunk_bytes
    assert one == tiny and one.fingerprint == tiny.fingerprint
    assert files_of(tmp_path / "one") == files_of(tmp_path / "tiny")
    assert not list(tmp_path.glob("**/.scratch"))  # the decoded copies are gone


def test_uncompressed_npz_is_memory_mapped_and_compressed_is_read(tmp_path):
    from pipeline.data.readers.sources import read_npz

    x = np.random.default_rng(0).integers(0, 256, size=(50, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "plain.npz", x=x, y=np.arange(50) % 2)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=np.arange(50) % 2)
    plain, packed = read_npz(tmp_path / "plain.npz", "x", "y"), read_npz(tmp_path / "packed.npz", "x", "y")
    assert isinstance(plain.x, np.memmap) and not isinstance(packed.x, np.memmap)
    np.testing.assert_array_equal(plain.x, x)
    np.testing.assert_array_equal(packed.x, x)
    assert plain.y.tolist() == packed.y.tolist() == (np.arange(50) % 2).tolist()


def test_worker_processes_decode_an_image_folder_as_one_process_does(tmp_path, monkeypatch):
    import pipeline.data.readers.images as images
    import pipeline.data.readers.source_dataset as dataset

    make_image_folder(tmp_path / "imgs", per_class=30, mode="RGB")
    serial = images.read_image_folder(tmp_path / "imgs", (8, 8), "rgb")
    monkeypatch.setattr(images, "PARALLEL_DECODE_FILES", 1)
    monkeypatch.setattr(dataset, "CHUNK_BYTES", 8 * 8 * 3 * 7)  # 7 images a chunk: several chunks per worker
    parallel = images.read_image_folder(tmp_path / "imgs", (8, 8), "rgb", scratch=tmp_path)
    assert isinstance(parallel.x, np.memmap)
    np.testing.assert_array_equal(parallel.x, serial.x)
    assert parallel.y.tolist() == serial.y.tolist()


def test_one_rule_tells_the_source_of_a_path_and_a_mismatch_is_named(tmp_path):
    from pipeline.data.readers.sources import source_of

    make_table(tmp_path / "t.csv")
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2)))
    make_image_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte.gz", np.zeros((3, 2, 2), np.uint8))
    (tmp_path / "notes.md").write_text("x")
    assert [source_of(tmp_path / p) for p in ("t.csv", "a.npz", "imgs", "idx")] == [
        "table",
        "npz",
        "image_folder",
        "idx",
    ]
    with pytest.raises(DataError, match=r"notes.md: unknown kind of file '.md'"):
        source_of(tmp_path / "notes.md")
    with pytest.raises(
        DataError,
        match=r"t.csv: data.source is 'npz', but data.path holds a .csv/.tsv/.parquet "
        r"table; set data.source: table",
    ):
        prepare(data_config(source="npz", path=str(tmp_path / "t.csv")), seed=0, out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()
