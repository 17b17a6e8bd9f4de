"""Tables as they come: identifiers, row numbers, free text, timestamps, long-tailed strings,
constant and empty columns, each handled by the documented rule (pipeline.data.resolve_columns)
and recorded; every unusable column named in one error; a CSV streamed in blocks."""

import datetime as dt
import json

import numpy as np
import pytest

from pipeline.data.readers.tables import read_table
from pipeline.data.resolve_columns import OTHER
from pipeline.platform.errors import DataError
from pipeline.platform.params.load import parse_params
from tests.builders import files_of

WORDS = np.array(
    "the a crash car driver seat belt airbag rain night road wet dry fast slow left right".split()
)


def messy_frame(n=1200, seed=0):
    """Every trait a public table brings, with a label the real columns carry."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    zipf = rng.zipf(1.6, size=n) % 400  # a long tail behind a few common cities
    start = np.datetime64("2017-01-01T00:00:00")
    return pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),  # R's row number
            # ~n/3 levels, each a few times
            "caseid": [f"case{i // 3}x{rng.integers(1, 9)}" for i in range(n)],
            "idNum": [f"RMS{i:06d}" for i in rng.permutation(n)],  # unique per row
            "note": [" ".join(rng.choice(WORDS, 8)) for _ in range(n)],  # free text
            "city": [f"city{c}" for c in zipf],
            "stamp": start + (rng.uniform(0, 2 * 365, n) * 86_400).astype("timedelta64[s]"),
            "day": (start + rng.integers(0, 700, n).astype("timedelta64[D]")).astype("datetime64[D]"),
            "speed": 50 + 10 * z + rng.normal(size=n),
            "constant": "yes",
            "empty": np.full(n, np.nan),
            "dead": np.where(z + 0.5 * rng.normal(size=n) > 0.8, "dead", "alive"),
        }
    )


def table_config(path, **table):
    return parse_params(
        {"data": {"source": "table", "path": str(path), "table": {"label_column": "dead", **table}}}
    ).data


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("messy")
    frame = messy_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("day"), "day", table["day"].cast(pa.date32()))
    pq.write_table(table, root / "messy.parquet", row_group_size=500)
    frame.to_csv(root / "messy.csv", index=False)
    return root, frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_each_trait_is_handled_as_documented_and_recorded(messy, suffix, tmp_path):
    from pipeline.data.prepare import prepare

    root, frame = messy
    manifest = prepare(table_config(root / f"messy{suffix}"), seed=0, out_dir=tmp_path / "p")
    types = {c.name: c.type for c in manifest.columns}
    assert types == {
        "city": "categorical",
        "stamp:time": "real",
        "stamp:day_of_year": "real",
        "stamp:day_of_week": "categorical",
        "stamp:hour": "real",
        "day:time": "real",
        "day:day_of_year": "real",
        "day:day_of_week": "categorical",
        "speed": "real",
    }
    why = {
        key.split(".")[-1]: c["why"]
        for key, c in manifest.choices.items()
        if key.startswith("data.table.column_types.") and c["value"] == "left out"
    }
    assert why["rownames"].startswith("an index: whole numbers from 1 to 1200")
    for name in ("caseid", "idNum", "note"):
        assert "an identifier or free text" in why[name], why[name]
    assert why["constant"].startswith("one value ('yes')") and why["day:hour"].startswith("one value (0.0)")
    assert why["empty"] == "no value in any row"
    city = next(c for c in manifest.columns if c.name == "city")
    assert city.other and len(city.levels) == 101 and city.levels[-1] == OTHER
    assert "the 100 most frequent (covering" in city.why
    common = frame[
        "city"
    ].value_counts()  # the summary is exact on 1,200 rows: the 100 most frequent are kept
    assert set(common[common > common.iloc[100]].index) <= set(city.levels) < set(common.index) | {OTHER}


def test_codes_of_a_timestamp_and_of_the_other_level(messy):
    root, frame = messy
    dataset = read_table(root / "messy.parquet", "dead", None)
    names = list(dataset.feature_names)
    x = np.asarray(dataset.x)
    stamp = frame["stamp"]
    np.testing.assert_allclose(
        x[:, names.index("stamp:time")],
        (stamp - dt.datetime(1970, 1, 1)).dt.total_seconds() / 86_400,
        rtol=1e-6,
    )
    np.testing.assert_array_equal(x[:, names.index("stamp:day_of_week")], stamp.dt.dayofweek)
    np.testing.assert_array_equal(x[:, names.index("stamp:day_of_year")], stamp.dt.dayofyear)
    np.testing.assert_allclose(
        x[:, names.index("stamp:hour")],
        stamp.dt.hour + stamp.dt.minute / 60 + stamp.dt.second / 3600,
        atol=1e-4,
    )
    city = next(c for c in dataset.columns if c.name == "city")
    code = x[:, names.index("city")].astype(int)
    kept = frame["city"].isin(city.levels[:-1])
    assert (~kept).any() and (code[~kept] == len(city.levels) - 1).all()
    np.testing.assert_array_equal(np.array(city.levels, object)[code[kept]], frame["city"][kept])
    new = frame.head(5).assign(city=["nowhere"] * 5)  # new data: a city never seen goes to the other level
    new.to_csv(root / "new.csv", index=False)
    again = read_table(
        root / "new.csv",
        "dead",
        tuple(dict.fromkeys(c.read_from for c in dataset.columns)),
        trained=dataset.columns,
    )
    assert (np.asarray(again.x)[:, names.index("city")] == len(city.levels) - 1).all()


def test_drop_columns_and_one_error_for_every_unusable_column(messy, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.prepare import prepare

    root, _ = messy
    manifest = prepare(
        table_config(root / "messy.parquet", drop_columns=["stamp", "city"]), seed=0, out_dir=tmp_path / "p"
    )
    assert {c.name for c in manifest.columns} == {"day:time", "day:day_of_year", "day:day_of_week", "speed"}
    assert manifest.choices["data.table.column_types.stamp"] == {
        "value": "left out",
        "why": "set in params.yaml",
    }
    before = files_of(tmp_path / "p")
    for given, message in [
        ({"drop_columns": ["dead"]}, "drop_columns names the label column 'dead'"),
        ({"drop_columns": ["speeed"]}, r"drop_columns names \['speeed'\], not columns of the file"),
    ]:
        with pytest.raises(DataError, match=message):
            prepare(table_config(root / "messy.parquet", **given), seed=0, out_dir=tmp_path / "p")
    bad = pa.table(
        {
            "tags": [[1, 2], [3], [4], [5]],
            "blob": [b"a", b"b", b"c", b"d"],
            "v": [1.0, float("inf"), 2.0, 3.0],
            "w": [1.0, 2.0, 3.0, 5.0],
            "dead": ["a", "b", "a", "b"],
        }
    )
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataError) as info:
        prepare(table_config(tmp_path / "bad.parquet"), seed=0, out_dir=tmp_path / "p")
    message = str(info.value)
    assert "2 columns cannot be used: column 'tags' holds list<element: int64> values" in message
    assert "column 'blob' holds binary values" in message and "data.table.drop_columns" in message
    with pytest.raises(DataError, match=r"1 column cannot be used: column 'v' holds infinite values"):
        prepare(
            table_config(tmp_path / "bad.parquet", drop_columns=["tags", "blob"]),
            seed=0,
            out_dir=tmp_path / "p",
        )
    assert files_of(tmp_path / "p") == before  # every refusal left the previous output as it was


def test_a_streamed_csv_widens_a_type_its_first_block_got_wrong(tmp_path, monkeypatch):
    """Types come from the first block; a float, then a word, further on widen the column
    and the read starts over; the block size changes no byte of the result."""
    from pipeline.data.prepare import prepare
    from pipeline.data.readers import table_files

    rng = np.random.default_rng(1)
    n = 3000
    a = [str(v) for v in rng.integers(0, 5, n)]
    a[1500], a[2500] = "2.5", "many"  # integer -> float -> string
    b = [f"{v:.3f}" for v in rng.normal(size=n)]
    lines = ["a,b,dead"] + [f"{a[i]},{b[i]},{'yes' if i % 3 else 'no'}" for i in range(n)]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    whole = prepare(table_config(tmp_path / "late.csv"), seed=0, out_dir=tmp_path / "whole")
    monkeypatch.setattr(table_files, "CSV_BLOCK_BYTES", 1024)
    blocks = prepare(table_config(tmp_path / "late.csv"), seed=0, out_dir=tmp_path / "blocks")
    assert blocks == whole and files_of(tmp_path / "blocks") == files_of(tmp_path / "whole")
    a_column = next(c for c in blocks.columns if c.name == "a")
    assert a_column.type == "categorical" and a_column.levels == ["0", "1", "2", "2.5", "3", "4", "many"]
    assert json.loads((tmp_path / "blocks" / "manifest.json").read_text())["counts"] == whole.counts
    # a later block not in UTF-8
    (tmp_path / "latin1.csv").write_bytes(
        ("a,dead\n" + "".join(f"x{i},y\n" for i in range(400))).encode() + "caf\u00e9,n\n".encode("latin-1")
    )
    with pytest.raises(DataError, match=r"latin1.csv: cannot read table \(ArrowInvalid: .*UTF8"):
        prepare(table_config(tmp_path / "latin1.csv"), seed=0, out_dir=tmp_path / "latin1")


def test_the_pandas_index_saved_with_the_data_is_left_out_with_its_reason(tmp_path):
    """A shuffled frame saved with its index: Parquet's pandas metadata names the column
    (__index_level_0__); a CSV's first column has no name. Neither is a count feature."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40), "label": ["u", "v"] * 20})
    frame = frame.sample(frac=1, random_state=0)
    frame.to_csv(tmp_path / "t.csv")
    frame.to_parquet(tmp_path / "t.parquet")
    for name, index in (("t.csv", ""), ("t.parquet", "__index_level_0__")):
        data = read_table(tmp_path / name, "label", None)
        assert [c.name for c in data.columns] == ["a", "b"]
        assert data.choices[f"data.table.column_types.{index}"].record() == {
            "value": "left out",
            "why": "the pandas index saved with the data (row names, not a feature)",
        }
        np.testing.assert_allclose(data.x[:, 0], frame["a"].to_numpy(), rtol=1e-6)
    frame.reset_index(drop=True).to_parquet(tmp_path / "range.parquet")  # a RangeIndex is metadata only
    assert [c.name for c in read_table(tmp_path / "range.parquet", "label", None).columns] == ["a", "b"]


def test_names_that_collide_and_labels_that_are_not_utf8_are_one_line_each(tmp_path):
    rows = "".join(f"2020-01-0{1 + i % 9}T0{i % 10}:00:00,{i % 7},{i},{'uv'[i % 2]}\n" for i in range(40))
    (tmp_path / "collide.csv").write_text("t,t:hour,x,label\n" + rows)
    with pytest.raises(
        DataError,
        match=r"collide.csv: feature names \['t:hour'\] are each both a column and a "
        r"timestamp's part",
    ):
        read_table(tmp_path / "collide.csv", "label", None)
    (tmp_path / "latin1.csv").write_bytes(
        b"x,label\n" + b"".join(b"%d,caf\xe9\n%d,th\xe9\n" % (i, i) for i in range(20))
    )
    with pytest.raises(
        DataError,
        match=r"latin1.csv: label column 'label' holds text that is not UTF-8 \(e.g. "
        r"b'caf\\xe9'\); save the file as UTF-8",
    ):
        read_table(tmp_path / "latin1.csv", "label", None)


def test_a_long_cell_and_a_long_header_grow_the_block_and_wide_parquet_batches_shrink(tmp_path, monkeypatch):
    """Arrow refuses a cell or header longer than its block ("straddling object", "Empty CSV
    file or block"): the block grows, up to CSV_MAX_BLOCK_BYTES, then one line. A Parquet
    batch holds about BATCH_BYTES of values, however wide the table."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.data.readers import table_files

    monkeypatch.setattr(table_files, "CSV_BLOCK_BYTES", 4096)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=50), "note": ["x"] * 50, "label": ["u", "v"] * 25})
    frame.loc[30, "note"] = "y" * 40_000  # over two blocks of 16 KB
    frame.to_csv(tmp_path / "long_cell.csv", index=False)
    assert read_table(tmp_path / "long_cell.csv", "label", None).x.shape == (50, 2)
    wide = pd.DataFrame(
        {f"feature_{i:05d}": rng.normal(size=4) for i in range(600)} | {"label": list("uvuv")}
    )
    wide.to_csv(tmp_path / "wide.csv", index=False)  # a header of 8 KB
    np.testing.assert_allclose(
        read_table(tmp_path / "wide.csv", "label", None).x, wide.iloc[:, :600], rtol=1e-6
    )
    monkeypatch.setattr(table_files, "CSV_MAX_BLOCK_BYTES", 8192)
    with pytest.raises(DataError, match=r"long_cell.csv: a cell or the header is longer than 0 MiB"):
        read_table(tmp_path / "long_cell.csv", "label", None)
    wide.to_parquet(tmp_path / "wide.parquet")
    monkeypatch.setattr(table_files, "BATCH_BYTES", 600 * 8 * 3)
    part = table_files.RowGroups(tmp_path / "wide.parquet", 0, (0,))
    assert [b.num_rows for b in part.batches(list(wide.columns))] == [2, 2]  # 601 columns: 2 rows a batch
    assert pq.ParquetFile(tmp_path / "wide.parquet").metadata.num_rows == 4


def test_new_rows_are_checked_by_the_training_columns_rule(tmp_path, monkeypatch):
    """The encode command codes new data with the training columns: in a number column, text
    (even " 1e3 ", which a float cast would take, beside a word that makes the column text),
    a date, a boolean, inf, a value beyond float32, a negative or fractional count are each
    one line naming the row and the column; so is a CSV whose number column turns to text
    after its first block (it was an uncaught Widened)."""
    from pipeline.data.readers import table_files

    rng = np.random.default_rng(0)
    lines = [
        f"{v:.3f},{c},{'uv'[i % 2]}" for i, (v, c) in enumerate(zip(rng.normal(size=60), rng.poisson(3, 60)))
    ]
    (tmp_path / "train.csv").write_text("real,count,label\n" + "\n".join(lines) + "\n")
    trained = read_table(tmp_path / "train.csv", "label", None, column_types={"count": "count"}).columns
    assert [c.type for c in trained] == ["real", "count"]
    cases = [
        ("real", [" 1e3 ", "abc"], "' 1e3 ' is not a number"),
        ("real", ["2020-01-01"], "'2020-01-01' is not a number"),
        ("real", ["true"], "'true' is not a number"),
        ("real", ["inf"], "inf is not finite and within float32"),
        ("real", ["1e39"], "1e\\+39 is not finite and within float32"),
        ("count", ["-2"], "-2.0 is not a whole number ≥ 0"),
        ("count", ["2.5"], "2.5 is not a whole number ≥ 0"),
        ("real", ["12", "abc"], "'abc' is not a number"),
    ]
    for column, values, message in cases:
        cells = [(v, 1) if column == "real" else (0.5, v) for v in values]
        rows = lines[:2] + [f'"{a}","{b}",u' for a, b in cells]
        (tmp_path / "new.csv").write_text("real,count,label\n" + "\n".join(rows) + "\n")
        row = 2 + values.index(message.split("'")[1]) if message.startswith("'") else 2
        with pytest.raises(DataError, match=rf"new.csv: row {row}, column '{column}': {message}"):
            read_table(tmp_path / "new.csv", "label", None, trained=trained)
    monkeypatch.setattr(table_files, "CSV_BLOCK_BYTES", 1024)
    late = lines * 3 + ["many,1,u"]
    (tmp_path / "late.csv").write_text("real,count,label\n" + "\n".join(late) + "\n")
    with pytest.raises(
        DataError, match=rf"late.csv: row {len(late) - 1}, column 'real': 'many' is not a number"
    ):
        read_table(tmp_path / "late.csv", "label", None, trained=trained)


def test_a_late_word_in_every_column_starts_the_read_over_once(tmp_path, monkeypatch, caplog):
    """Arrow names one column per conversion error; before starting over, the reader widens
    every column that needs it (it started over once per column: 200 columns of 5 MiB took 57 s)."""
    import logging

    from pipeline.data.readers import table_files

    monkeypatch.setattr(table_files, "CSV_BLOCK_BYTES", 1024)
    rng = np.random.default_rng(0)
    values = rng.integers(0, 9, (400, 30)).astype(str)
    values[300:310] = "1.5"  # integer -> float in every column...
    values[350] = [f"word{j}" for j in range(30)]  # ...and float -> string, all in later blocks
    header = ",".join(f"c{j}" for j in range(30)) + ",label"
    rows = [",".join(row) + f",{'uv'[i % 2]}" for i, row in enumerate(values)]
    (tmp_path / "late.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.INFO):
        data = read_table(tmp_path / "late.csv", "label", None)
    assert sum("read again" in r.message for r in caplog.records) == 1
    assert all(c.type == "categorical" and "word" + c.name[1:] in c.levels for c in data.columns)
