"""Tables as they come: identifiers, row numbers, free text, timestamps, long-tailed strings,
constant and empty columns, each handled by the documented rule (pipeline.data.resolve_columns)
and recorded; every unusable column named in one error; a CSV streamed in blocks."""

import datetime as dt
import json

import numpy as np
import pytest

from pipeline.data.readers.tables import read_table
from pipeline.data.resolve_columns import OTHER
from pipeline.platform.config import parse_params
from pipeline.platform.errors import DataError

from .builders import files_of

WORDS = np.array("the a crash car driver seat belt airbag rain night road wet dry fast slow left right".split())


def messy_frame(n=1200, seed=0):
    """Every trait a public table brings, with a label the real columns carry."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    zipf = rng.zipf(1.6, size=n) % 400  # a long tail behind a few common cities
    start = np.datetime64("2017-01-01T00:00:00")
    return pd.DataFrame({
        "rownames": np.arange(1, n + 1),  # R's row number
        "caseid": [f"case{i // 3}x{rng.integers(1, 9)}" for i in range(n)],  # ~n/3 levels, each a few times
        "idNum": [f"RMS{i:06d}" for i in rng.permutation(n)],  # unique per row
        "note": [" ".join(rng.choice(WORDS, 8)) for _ in range(n)],  # free text
        "city": [f"city{c}" for c in zipf],
        "stamp": start + (rng.uniform(0, 2 * 365, n) * 86_400).astype("timedelta64[s]"),
        "day": (start + rng.integers(0, 700, n).astype("timedelta64[D]")).astype("datetime64[D]"),
        "speed": 50 + 10 * z + rng.normal(size=n),
        "constant": "yes",
        "empty": np.full(n, np.nan),
        "dead": np.where(z + 0.5 * rng.normal(size=n) > 0.8, "dead", "alive"),
    })


def table_config(path, **table):
    return parse_params({"data": {"source": "table", "path": str(path),
                                  "table": {"label_column": "dead", **table}}}).data


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
    assert types == {"city": "categorical", "stamp:time": "real", "stamp:day_of_year": "real",
                     "stamp:day_of_week": "categorical", "stamp:hour": "real", "day:time": "real",
                     "day:day_of_year": "real", "day:day_of_week": "categorical", "speed": "real"}
    why = {key.split(".")[-1]: c["why"] for key, c in manifest.choices.items()
           if key.startswith("data.table.column_types.") and c["value"] == "left out"}
    assert why["rownames"].startswith("an index: whole numbers from 1 to 1200")
    for name in ("caseid", "idNum", "note"):
        assert "an identifier or free text" in why[name], why[name]
    assert why["constant"].startswith("one value ('yes')") and why["day:hour"].startswith("one value (0.0)")
    assert why["empty"] == "no value in any row"
    city = next(c for c in manifest.columns if c.name == "city")
    assert city.other and len(city.levels) == 101 and city.levels[-1] == OTHER
    assert "the 100 most frequent (covering" in city.why
    common = frame["city"].value_counts()  # the summary is exact on 1,200 rows: the 100 most frequent are kept
    assert set(common[common > common.iloc[100]].index) <= set(city.levels) < set(common.index) | {OTHER}


def test_codes_of_a_timestamp_and_of_the_other_level(messy):
    root, frame = messy
    dataset = read_table(root / "messy.parquet", "dead", None)
    names = list(dataset.feature_names)
    x = np.asarray(dataset.x)
    stamp = frame["stamp"]
    np.testing.assert_allclose(x[:, names.index("stamp:time")],
                               (stamp - dt.datetime(1970, 1, 1)).dt.total_seconds() / 86_400, rtol=1e-6)
    np.testing.assert_array_equal(x[:, names.index("stamp:day_of_week")], stamp.dt.dayofweek)
    np.testing.assert_array_equal(x[:, names.index("stamp:day_of_year")], stamp.dt.dayofyear)
    np.testing.assert_allclose(x[:, names.index("stamp:hour")], stamp.dt.hour + stamp.dt.minute / 60
                               + stamp.dt.second / 3600, atol=1e-4)
    city = next(c for c in dataset.columns if c.name == "city")
    code = x[:, names.index("city")].astype(int)
    kept = frame["city"].isin(city.levels[:-1])
    assert (~kept).any() and (code[~kept] == len(city.levels) - 1).all()
    np.testing.assert_array_equal(np.array(city.levels, object)[code[kept]], frame["city"][kept])
    new = frame.head(5).assign(city=["nowhere"] * 5)  # new data: a city never seen goes to the other level
    new.to_csv(root / "new.csv", index=False)
    again = read_table(root / "new.csv", "dead", tuple(dict.fromkeys(c.read_from for c in dataset.columns)),
                       trained=dataset.columns)
    assert (np.asarray(again.x)[:, names.index("city")] == len(city.levels) - 1).all()


def test_drop_columns_and_one_error_for_every_unusable_column(messy, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.prepare import prepare

    root, _ = messy
    manifest = prepare(table_config(root / "messy.parquet", drop_columns=["stamp", "city"]), seed=0,
                       out_dir=tmp_path / "p")
    assert {c.name for c in manifest.columns} == {"day:time", "day:day_of_year", "day:day_of_week", "speed"}
    assert manifest.choices["data.table.column_types.stamp"] == {"value": "left out", "why": "set in params.yaml"}
    before = files_of(tmp_path / "p")
    for given, message in [({"drop_columns": ["dead"]}, "drop_columns names the label column 'dead'"),
                           ({"drop_columns": ["speeed"]}, r"drop_columns names \['speeed'\], not columns of the file")]:
        with pytest.raises(DataError, match=message):
            prepare(table_config(root / "messy.parquet", **given), seed=0, out_dir=tmp_path / "p")
    bad = pa.table({"tags": [[1, 2], [3], [4], [5]], "blob": [b"a", b"b", b"c", b"d"],
                    "v": [1.0, float("inf"), 2.0, 3.0], "w": [1.0, 2.0, 3.0, 5.0], "dead": ["a", "b", "a", "b"]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataError) as info:
        prepare(table_config(tmp_path / "bad.parquet"), seed=0, out_dir=tmp_path / "p")
    message = str(info.value)
    assert "2 columns cannot be used: column 'tags' holds list<element: int64> values" in message
    assert "column 'blob' holds binary values" in message and "data.table.drop_columns" in message
    with pytest.raises(DataError, match=r"1 column cannot be used: column 'v' holds infinite values"):
        prepare(table_config(tmp_path / "bad.parquet", drop_columns=["tags", "blob"]), seed=0, out_dir=tmp_path / "p")
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
    (tmp_path / "latin1.csv").write_bytes(("a,dead\n" + "".join(f"x{i},y\n" for i in range(400))).encode()
                                          + "caf\u00e9,n\n".encode("latin-1"))  # a later block not in UTF-8
    with pytest.raises(DataError, match=r"latin1.csv: cannot read table \(ArrowInvalid: .*UTF8"):
        prepare(table_config(tmp_path / "latin1.csv"), seed=0, out_dir=tmp_path / "latin1")

