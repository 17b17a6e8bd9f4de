"""Encoding as a data product: new data from another project, and a killed encode."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.prepared import Preprocessor, load_split
from pipeline.latents.encode_command import encode_new_data
from pipeline.latents.parquet import METADATA, read_metadata
from pipeline.latents.reader import latents_to_numpy, load_latents
from pipeline.latents.writer import write_latents
from pipeline.platform.errors import DataError
from tests.builders import latent_batch, make_image_folder
from tests.conftest import ROOT, run


def test_encode_new_npz_matches_the_stage(pipeline_run, tmp_path):
    """Raw digits through the CLI path equal the encode stage's latents of the same rows."""
    from pipeline.data.readers.sources import read_digits

    paths = pipeline_run["paths"]
    test = load_split(paths["prepared"], "test")
    digits = read_digits()
    np.savez(tmp_path / "new.npz", x=digits.x[test.id], y=digits.y[test.id])
    rows = encode_new_data(paths["model"], tmp_path / "new.npz", tmp_path / "out", y_key="y")
    assert rows == len(test)
    new = load_latents(tmp_path / "out", split="new", latent_dim=4)
    stage = load_latents(paths["latents"], split="test").sort_by("id")
    np.testing.assert_allclose(latents_to_numpy(new), latents_to_numpy(stage), rtol=1e-5, atol=1e-6)
    assert new.column("label").to_pylist() == stage.column("label").to_pylist()
    meta = read_metadata(next((tmp_path / "out").rglob("*.parquet")))
    assert meta["label_names"] == [str(i) for i in range(10)] and "new.npz" in meta["dataset_source"]
    stage_meta = read_metadata(next(paths["latents"].rglob("*.parquet")))
    assert set(meta) | set(stage_meta) <= set(METADATA), (
        "document every metadata key (docs/reference/latents.md)"
    )


def encode_cli(model, source: Path, out: Path):
    """`vae-pipeline encode` as a user runs it (the environment's command), its result unchecked."""
    return run(
        ["vae-pipeline", "encode", "--model", str(model), "--input", str(source), "--output", str(out)],
        ROOT,
        check=False,
    )


def test_encode_cli_on_an_image_folder_and_a_wrong_shape(pipeline_run, tmp_path):
    paths = pipeline_run["paths"]
    make_image_folder(tmp_path / "imgs", sizes=((30, 20),), per_class=3)
    result = encode_cli(paths["model"], tmp_path / "imgs", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "encoded 6 rows" in result.stdout
    assert re.search(
        r"\d+\.\d% of the 6 rows are more surprising than 99% of the training rows", result.stdout
    )
    table = load_latents(tmp_path / "out")
    assert table.num_rows == 6 and table.column("label").null_count == 6  # classes unknown to the model
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 9, 9, 1)))
    result = encode_cli(paths["model"], tmp_path / "wide.npz", tmp_path / "o2")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "model takes examples of shape [8, 8, 1], but "
        f"{tmp_path / 'wide.npz'} holds [9, 9, 1]; retrain the model or resize "
        "the input"
    )


def test_new_data_is_preprocessed_like_the_training_data(pipeline_run):
    paths = pipeline_run["paths"]
    pre = Preprocessor.load(paths["model_dir"] / "preprocessing.npz")
    assert pre.scaling == "unit" and float(pre.scale.ravel()[0]) == 16.0  # digits pixels are 0..16


def test_missing_input_is_a_clear_error(pipeline_run, tmp_path):
    with pytest.raises(DataError, match="not found"):
        encode_new_data(pipeline_run["paths"]["model"], tmp_path / "none.npz", tmp_path / "o")


def test_the_encode_command_checks_its_input_as_prepare_does(pipeline_run, tmp_path):
    """All-NaN inputs, values off the pixel scale the model was trained on: refused, nothing written."""
    model = pipeline_run["paths"]["model"]
    np.savez(tmp_path / "nan.npz", x=np.full((5, 8, 8, 1), np.nan))
    with pytest.raises(DataError, match=r"nan.npz: inputs contain NaN or infinite values \(5 examples\)"):
        encode_new_data(model, tmp_path / "nan.npz", tmp_path / "out")
    np.savez(tmp_path / "big.npz", x=np.full((5, 8, 8, 1), 200.0))
    with pytest.raises(DataError, match="trained on pixels from 0 to 16; these values run from 200 to 200"):
        encode_new_data(model, tmp_path / "big.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_model_without_its_bundle_is_refused(pipeline_run, tmp_path):
    """model.keras copied alone: new data would go in unscaled, table columns matched by position."""
    import shutil

    (tmp_path / "bare").mkdir()
    shutil.copy(pipeline_run["paths"]["model"], tmp_path / "bare" / "model.keras")
    np.savez(tmp_path / "new.npz", x=np.zeros((5, 8, 8, 1)))
    with pytest.raises(DataError, match="preprocessing.npz and data_manifest.json not found beside it"):
        encode_new_data(tmp_path / "bare" / "model.keras", tmp_path / "new.npz", tmp_path / "out")
    shutil.copy(pipeline_run["paths"]["model"], tmp_path / "bare" / "model.h5")
    with pytest.raises(DataError, match=r"only Keras' .keras format is loaded \(it is loaded in safe_mode\)"):
        encode_new_data(tmp_path / "bare" / "model.h5", tmp_path / "new.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


KILL_SCRIPT = """
import sys
import numpy as np
from pipeline.latents.parquet import LatentBatch
from pipeline.latents.writer import write_latents
from pipeline.latents.parquet import RowScores

def batches():
    rng = np.random.default_rng(0)
    for start in range(0, 10_000_000, 20_000):
        print(start, flush=True)
        yield LatentBatch("train", np.arange(start, start + 20_000), np.zeros(20_000, np.int64),
                          rng.normal(size=(20_000, 8)), rng.normal(size=(20_000, 8)),
                          RowScores(np.zeros(20_000), None, None, np.zeros(20_000)))

write_latents(sys.argv[1], batches(), 8, {})
"""


def test_a_latent_writer_killed_mid_stream_leaves_the_previous_latents(tmp_path):
    """The writer alone, killed from outside at an untimed instant; the encode stage itself is
    killed at named points in test_kill.py."""
    out = tmp_path / "latents"
    write_latents(out, [latent_batch("train", 7, 8), latent_batch("test", 3, 8)], 8, {"run": "previous"})
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True
    )
    for _ in range(10):  # let it write several row groups into its temporary directory
        process.stdout.readline()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before
    assert load_latents(out).num_rows == 10
    leftovers = [p for p in tmp_path.iterdir() if p.name != "latents"]
    assert [p.name for p in leftovers] == [".latents.staging"]  # no journal: rolled back by the next run
    # the next successful write replaces the output and clears what the killed run left
    write_latents(out, [latent_batch("train", 4, 8)], 8, {})
    assert load_latents(out).num_rows == 4
    assert [p.name for p in tmp_path.iterdir()] == ["latents"]


def test_the_encode_command_refuses_a_directory_the_pipeline_owns(tmp_path):
    """`--output data/latents` in a project would be replaced by the next `dvc repro` of encode."""
    import shutil

    from tests.conftest import ROOT

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    for out, stage in (
        ("data/latents", "encode"),
        ("data/latents/split=new", "encode"),
        ("data/evaluation/pictures/new", "evaluate"),
        ("data/model/live/x", "train"),
        ("data/model/backup/x", "train"),
        ("data/evaluation/new", "baselines"),
    ):
        with pytest.raises(
            DataError,
            match=rf"which the '{stage}' stage of .*dvc.yaml writes; the next `dvc repro` "
            rf"of {stage} may replace it",
        ):
            encode_new_data(tmp_path / "missing.keras", tmp_path / "new.npz", tmp_path / out)
    with pytest.raises(DataError, match="a publication's temporary directory"):
        encode_new_data(
            tmp_path / "missing.keras", tmp_path / "new.npz", tmp_path / ".latents.staging" / "new"
        )
    with pytest.raises(DataError, match="model file not found"):  # elsewhere: on to the model
        encode_new_data(tmp_path / "missing.keras", tmp_path / "new.npz", tmp_path / "latents_new")
    assert not (tmp_path / "data").exists()
