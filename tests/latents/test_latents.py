"""The latent Parquet contract, read back by real consumers."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.prepared import load_split
from pipeline.latents.parquet import SCHEMA_VERSION, SCORE_COLUMNS, latent_schema, read_metadata
from pipeline.latents.reader import latents_to_numpy, load_latents
from pipeline.latents.writer import write_latents
from pipeline.platform.errors import DataError
from tests.builders import latent_batch


def test_schema_and_metadata_of_the_written_files(pipeline_run):
    paths, manifest = pipeline_run["paths"], pipeline_run["manifest"]
    files = sorted(p.relative_to(paths["latents"]).as_posix() for p in paths["latents"].rglob("*.parquet"))
    assert files == ["split=test/part-0.parquet", "split=train/part-0.parquet"]
    schema = pq.read_schema(paths["latents"] / files[0])
    assert schema.field("id").type == pa.int64()
    assert schema.field("label").type == pa.int32() and schema.field("label").nullable
    assert schema.field("z_mean").type == pa.list_(pa.float32(), 4)
    assert schema.field("z_log_var").type == pa.list_(pa.float32(), 4)
    meta = read_metadata(paths["latents"] / files[0])
    assert meta["schema_version"] == int(SCHEMA_VERSION) and meta["latent_dim"] == 4
    assert meta["dataset_fingerprint"] == manifest.fingerprint
    assert len(meta["model_sha256"]) == 64
    assert meta["params"]["model"]["latent_dim"] == 4
    assert meta["versions"]["keras"] and list(meta["columns"]) == [
        "id",
        "label",
        "z_mean",
        "z_log_var",
        "surprisal",
        "bits_per_dim",
        "surprisal_quantile",
        "novelty",
    ]
    assert all(schema.field(name).type == pa.float64() for name in SCORE_COLUMNS)
    assert pq.ParquetFile(paths["latents"] / files[0]).metadata.row_group(0).column(2).compression == "ZSTD"


def test_every_example_is_encoded_once_with_its_label(pipeline_run):
    paths, manifest = pipeline_run["paths"], pipeline_run["manifest"]
    table = load_latents(paths["latents"])
    assert pipeline_run["rows"] == table.num_rows == 1797
    assert sorted(table.column("id").to_pylist()) == list(range(1797))
    test = load_latents(paths["latents"], split="test")
    assert test.num_rows == manifest.counts["test"]
    prepared = load_split(paths["prepared"], "test")
    order = np.argsort(test.column("id").to_numpy())
    np.testing.assert_array_equal(test.column("label").to_numpy()[order], prepared.y[np.argsort(prepared.id)])


def test_pandas_polars_duckdb_and_arrow_read_the_same_vectors(pipeline_run):
    import duckdb
    import pandas as pd
    import polars as pl

    root = pipeline_run["paths"]["latents"]
    z = latents_to_numpy(load_latents(root, split="test").sort_by("id"))
    frame = pd.read_parquet(root, filters=[("split", "==", "test")]).sort_values("id")
    np.testing.assert_array_equal(np.stack(frame["z_mean"].to_numpy()), z)
    lazy = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    pl_test = lazy.filter(pl.col("split") == "test").sort("id").collect()
    assert pl_test.schema["z_mean"] == pl.Array(pl.Float32, 4)
    np.testing.assert_array_equal(pl_test["z_mean"].to_numpy(), z)
    rows = duckdb.sql(f"""
        SELECT id, z_mean::FLOAT[4] AS z FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)
        WHERE split = 'test' ORDER BY id""").fetchall()
    np.testing.assert_allclose(np.array([r[1] for r in rows]), z)
    nearest = duckdb.sql(f"""
        WITH t AS (SELECT id, z_mean::FLOAT[4] AS z
                   FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true))
        SELECT b.id FROM t a, t b WHERE a.id = {rows[0][0]} AND b.id <> a.id
        ORDER BY array_cosine_similarity(a.z, b.z) DESC LIMIT 1""").fetchall()[0][0]
    z_all = latents_to_numpy(load_latents(root).sort_by("id"))
    cos = z_all @ z_all[rows[0][0]] / (np.linalg.norm(z_all, axis=1) * np.linalg.norm(z_all[rows[0][0]]))
    cos[rows[0][0]] = -np.inf
    assert nearest == int(np.argmax(cos))


def test_missing_labels_are_null_and_batches_stream(tmp_path):
    rows = write_latents(
        tmp_path / "l", (latent_batch("train", 10, 3, s) for s in (0, 10, 20)), 3, {"note": "x"}
    )
    table = load_latents(tmp_path / "l")
    assert rows == table.num_rows == 30
    assert table.column("label").null_count == 3
    assert read_metadata(next((tmp_path / "l").rglob("*.parquet")))["note"] == "x"


def test_reader_rejects_other_dimensions_and_schema_versions(tmp_path):
    write_latents(tmp_path / "l", [latent_batch("test", 5, 3)], 3, {})
    with pytest.raises(DataError, match="latent_dim 3, expected 8"):
        load_latents(tmp_path / "l", latent_dim=8)
    other = tmp_path / "other" / "split=test"
    other.mkdir(parents=True)
    table = pa.table({"id": [1], "label": [2]})
    pq.write_table(table.replace_schema_metadata({"vae_pipeline.schema_version": "0"}), other / "p.parquet")
    with pytest.raises(DataError, match=f"schema version '0', expected '{SCHEMA_VERSION}'"):
        load_latents(tmp_path / "other")
    with pytest.raises(DataError, match="no latent Parquet files"):
        load_latents(tmp_path / "nothing")
    assert latent_schema(3).field("z_mean").type.list_size == 3


def test_a_failing_write_keeps_the_previous_latents(tmp_path):
    write_latents(tmp_path / "l", [latent_batch("train", 5, 3)], 3, {})

    def failing():
        yield latent_batch("train", 5, 3, 100)
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        write_latents(tmp_path / "l", failing(), 3, {})
    assert sorted(load_latents(tmp_path / "l").column("id").to_pylist()) == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["l"]


def test_the_recorded_params_are_what_the_encode_stage_depends_on(pipeline_run):
    """Provenance cannot drift: the latents record the encode stage's own params and the
    model's run and choices, and dvc.yaml's encode stage depends on exactly those."""
    import yaml

    from tests.conftest import ROOT

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["encode"]
    meta = read_metadata(next(pipeline_run["paths"]["latents"].rglob("*.parquet")))
    recorded = {f"{block}.{key}" for block in ("encode", "cluster") for key in meta["params"][block]}
    assert recorded == set(stage["params"])
    model_dir = pipeline_run["paths"]["model_dir"]
    trained = json.loads((model_dir / "run.json").read_text())
    assert {k: v for k, v in meta["params"].items() if k not in ("encode", "cluster")} == trained
    assert meta["choices"] == {
        **json.loads((model_dir / "choices.json").read_text()),
        "encode.workers": {"value": 1, "why": "the local engine encodes in this process"},
    }
    assert {"data/model/run.json", "data/model/choices.json", "data/model/model.keras"} <= set(stage["deps"])


def test_read_z_mean_streams_row_groups_and_keeps_only_the_rows_taken(tmp_path):
    """Eleven workers' parts (part-10 after part-9, not after part-1), 150,000 rows, so
    three row groups in the largest part: the rows taken, in the order asked, and the
    moments of every row, as from the whole array."""
    from pipeline.latents.reader import read_z_mean
    from pipeline.latents.writer import write_part
    from pipeline.model.diagnostics import Moments

    n, d, workers = 150_000, 3, 11
    bounds = [0, 140_000] + [140_000 + 1_000 * k for k in range(1, workers)]  # part-0: three row groups
    full = []
    for k in range(workers):
        batch = latent_batch("test", bounds[k + 1] - bounds[k], d, start=bounds[k])
        write_part(tmp_path, [batch], d, {"dataset_fingerprint": "f"}, part=k)
        full.append(batch.z_mean)
    full = np.concatenate(full).astype(np.float32)
    take = np.array([149_999, 0, 70_000, 140_000, 5, 65_536, 65_535])
    moments = Moments()
    z = read_z_mean(tmp_path, "test", np.arange(n), "f", take, d, visit=moments.add)
    assert np.array_equal(z, full[take])
    assert np.allclose(moments.variance, np.var(full.astype(np.float64), axis=0), rtol=1e-12)
    with pytest.raises(DataError, match="does not hold the prepared test examples in order"):
        read_z_mean(tmp_path, "test", np.arange(1, n + 1), "f", take)
    with pytest.raises(DataError, match="holds 150000 rows, the prepared test split 150001"):
        read_z_mean(tmp_path, "test", np.arange(n + 1), "f", take)
    with pytest.raises(DataError, match="encoded from another dataset"):
        read_z_mean(tmp_path, "test", np.arange(n), "g", take)


def test_a_partition_from_another_model_is_refused_and_nothing_is_written(tmp_path):
    """Latents of two models are in two spaces: one dataset holds one model's, whatever their size."""
    from pipeline.latents.writer import write_partition

    write_partition(tmp_path / "l", "new", [latent_batch("new", 5, 3)], 3, {"model_sha256": "a" * 64})
    before = sorted(p.name for p in (tmp_path / "l").iterdir())
    with pytest.raises(
        DataError,
        match=r"split=new/part-0.parquet: written by another model \(sha256 aaaaaaaaaaaa…, "
        r"this one bbbbbbbbbbbb…\)",
    ):
        write_partition(tmp_path / "l", "more", [latent_batch("more", 5, 3)], 3, {"model_sha256": "b" * 64})
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == before
    write_partition(tmp_path / "l", "more", [latent_batch("more", 5, 3)], 3, {"model_sha256": "a" * 64})
    assert load_latents(tmp_path / "l").num_rows == 10
