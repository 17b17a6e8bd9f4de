"""Issue 12: what a new user breaks ends in one clear line and loses nothing.

Each test names the item of the issue it covers. The whole-pipeline versions (a failing
`dvc repro` of each stage leaves every output byte-identical) are in test_e2e.py.
"""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.platform.errors import ConfigError, DataError, PipelineError
from pipeline.platform.params.config import Params, as_dict, leaf_keys
from pipeline.platform.params.load import load_params, parse_params
from tests.builders import latent_batch, make_image_folder, make_table, tree_bytes, write_idx
from tests.conftest import ROOT, tiny_params

# --- 1. a failing stage keeps every previous output ------------------------------------


def test_every_dvc_output_is_persistent():
    """DVC deletes non-persistent outputs before a stage runs, so a failure would lose them."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                assert options.get("persist") is True, f"{name}: {kind} {path} is not persist: true"


def test_a_killed_runs_scratch_is_removed_by_the_next_run_of_the_stage(tmp_path):
    from pipeline.platform.io import scratch_dir

    model_dir = tmp_path / "model"
    (tmp_path / ".model.scratch.killed").mkdir(parents=True)  # what a SIGKILL mid-train leaves
    (tmp_path / ".model.scratch.killed" / "fit_rows.npy").write_bytes(b"x")
    with scratch_dir(model_dir, clear_stale=True) as scratch:
        assert [p.name for p in tmp_path.iterdir()] == [scratch.name]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".latents.scratch.other").mkdir()  # the encode command's: a run beside may own it
    with scratch_dir(tmp_path / "latents"):
        assert (tmp_path / ".latents.scratch.other").is_dir()


def test_evaluation_failing_halfway_keeps_every_output(pipeline_run, tmp_path, monkeypatch):
    import pipeline.evaluation.evaluate
    from pipeline.runner import evaluate_all

    paths = pipeline_run["paths"]
    out = tmp_path / "evaluation"
    shutil.copytree(paths["evaluation"], out)
    before = tree_bytes(out)

    def broken(*args, **kwargs):  # after the probes and the SUBO figures are computed
        raise DataError("gradient variance failed")

    monkeypatch.setattr(pipeline.evaluation.evaluate, "phi_gradient_variance", broken)
    with pytest.raises(DataError, match="gradient variance failed"):
        evaluate_all(
            pipeline_run["params"],
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            latents_dir=paths["latents"],
            out_dir=out,
        )
    assert tree_bytes(out) == before


# --- 3. the encode command writes only its own partition --------------------------------


def test_encode_command_adds_a_partition_and_never_deletes_another(pipeline_run, tmp_path):
    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.reader import load_latents

    paths = pipeline_run["paths"]
    out = tmp_path / "latents"
    shutil.copytree(paths["latents"], out)
    pipeline_files = tree_bytes(out)
    np.savez(tmp_path / "new.npz", x=np.zeros((5, 8, 8, 1), np.uint8))
    assert encode_new_data(paths["model"], tmp_path / "new.npz", out) == 5
    assert encode_new_data(paths["model"], tmp_path / "new.npz", out, split="extra") == 5
    after = tree_bytes(out)
    assert {k: v for k, v in after.items() if k in pipeline_files} == pipeline_files
    partitions = sorted({str(Path(p).parent) for p in after})
    assert partitions == ["split=extra", "split=new", "split=test", "split=train"]
    with pytest.raises(DataError, match=r"split=new: partition exists; pass --overwrite"):
        encode_new_data(paths["model"], tmp_path / "new.npz", out)
    assert tree_bytes(out) == after
    np.savez(tmp_path / "three.npz", x=np.zeros((3, 8, 8, 1), np.uint8))
    assert encode_new_data(paths["model"], tmp_path / "three.npz", out, overwrite=True) == 3
    counts = load_latents(out).group_by("split").aggregate([("id", "count")]).to_pydict()
    assert dict(zip(counts["split"], counts["id_count"])) == {
        "train": 1437,
        "test": 360,
        "new": 3,
        "extra": 5,
    }


def test_encode_command_refuses_a_partition_of_another_latent_size(pipeline_run, tmp_path):
    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.writer import write_latents

    write_latents(tmp_path / "out", [latent_batch("train", 5, 3)], 3, {})
    np.savez(tmp_path / "new.npz", x=np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match="latent_dim 3, expected 4"):
        encode_new_data(pipeline_run["paths"]["model"], tmp_path / "new.npz", tmp_path / "out")
    assert not (tmp_path / "out" / "split=new").exists()


# --- 4, 7. a table model: columns by name; an image folder is refused -------------------


@pytest.fixture(scope="module")
def table_model(tmp_path_factory):
    """A model trained one epoch on a 3-feature CSV; returns (root, model path, csv)."""
    from pipeline.data.prepare import prepare
    from pipeline.runner import train

    root = tmp_path_factory.mktemp("table")
    table = make_table(root / "rows.csv", n=90)
    params = tiny_params(
        **{
            "data.source": "table",
            "data.path": str(root / "rows.csv"),
            "data.table": {"column_types": {"c": "real"}},  # whole numbers from 0: a count else
            "data.scaling": "standardize",
            "model.likelihood": "gaussian",
            "model.latent_dim": 2,
            "train.epochs": 1,
        }
    )
    prepare(params.data, seed=0, out_dir=root / "prepared")
    train(params, prepared_dir=root / "prepared", model_dir=root / "model")
    return root, root / "model" / "model.keras", table


def test_table_columns_are_matched_by_name(table_model, tmp_path):
    import pyarrow.csv as pacsv

    from pipeline.latents.encode_command import encode_new_data
    from pipeline.latents.reader import latents_to_numpy, load_latents

    root, model, table = table_model
    encode_new_data(model, root / "rows.csv", tmp_path / "a", label_column="label")
    pacsv.write_csv(table.select(["label", "c", "a", "b"]), tmp_path / "reordered.csv")
    encode_new_data(model, tmp_path / "reordered.csv", tmp_path / "b", label_column="label")
    a, b = (load_latents(tmp_path / d) for d in ("a", "b"))
    np.testing.assert_array_equal(latents_to_numpy(a), latents_to_numpy(b))
    assert (
        a.column("label").to_pylist() == b.column("label").to_pylist() and a.column("label").null_count == 0
    )


def test_a_missing_column_is_named_and_an_unnamed_label_is_pointed_out(table_model, tmp_path, caplog):
    import pyarrow.csv as pacsv

    from pipeline.latents.encode_command import encode_new_data

    root, model, table = table_model
    pacsv.write_csv(table.select(["a", "c", "label"]), tmp_path / "no_b.csv")
    with pytest.raises(DataError, match=r"no_b.csv: no column 'b'; columns are \['a', 'c', 'label'\]"):
        encode_new_data(model, tmp_path / "no_b.csv", tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        encode_new_data(model, root / "rows.csv", tmp_path / "out")  # label column not named
    assert "ignoring columns ['label']" in caplog.text and "--label-column" in caplog.text


def test_an_image_folder_for_a_table_model_is_a_clear_error(table_model, tmp_path):
    from pipeline.latents.encode_command import encode_new_data

    _, model, _ = table_model
    make_image_folder(tmp_path / "imgs", per_class=2)
    with pytest.raises(
        DataError,
        match=r"imgs: a folder of images, but the model was trained on examples "
        r"of shape \[3\] \(table rows\)",
    ):
        encode_new_data(model, tmp_path / "imgs", tmp_path / "out")


# --- 6, 7. params: one source of defaults, nothing accepted without a word --------------


def test_the_shipped_file_and_the_code_share_one_set_of_defaults():
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == plain(as_dict(Params()))


def test_an_empty_params_file_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text("# all gone\n")
    with pytest.raises(ConfigError, match="params.yaml: the file is empty; .* `git checkout params.yaml`"):
        load_params(tmp_path / "params.yaml")


def test_a_missing_block_is_filled_in_and_said(tmp_path, caplog):
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    del shipped["train"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        params = load_params(tmp_path / "params.yaml")
    assert params.train.epochs == "auto" and params.train.batch_size == 64
    assert "does not set train.epochs='auto', train.batch_size=64," in caplog.text


def test_a_key_given_twice_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "seed: 0\nmodel:\n  latent_dim: 8\n  hidden: [64]\n  latent_dim: 2\n"
    )
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "params.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'params.yaml'}: line 5: key 'latent_dim' is given twice (first on line 3); keep one"
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"evaluate": {"probe": {"c_grid": []}}},
            "evaluate.probe.c_grid must be a non-empty list of numbers > 0. Got [] instead.",
        ),
        (
            {"model": {"architecture": "conv", "filters": []}},
            "model.filters must list at least one convolution's width when model.architecture is 'conv'. "
            "Got [] instead.",
        ),
        (
            {"data": {"table": {"feature_columns": "a"}}},
            "data.table.feature_columns must be a non-empty list of column names. Got 'a' instead.",
        ),
        (
            {"train": {"epochs": 10**12}},
            "train.epochs must be 'auto' or an integer >= 1 and at most 2147483647.",
        ),
    ],
)
def test_values_that_used_to_end_in_a_traceback(raw, message):
    with pytest.raises(ConfigError, match="^params.yaml: ") as info:
        parse_params(raw)
    assert message in str(info.value)


def test_knn_k_beyond_the_probe_rows_is_refused_before_writing(pipeline_run, tmp_path):
    from pipeline.runner import evaluate_all

    paths = pipeline_run["paths"]
    params = tiny_params(**{"evaluate.knn_k": 1437})
    with pytest.raises(
        ConfigError,
        match=r"evaluate.knn_k must be smaller than the kNN probe's training rows "
        r"\(1437 here\). Got 1437 instead.",
    ):
        evaluate_all(
            params,
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            latents_dir=paths["latents"],
            out_dir=tmp_path / "ev",
        )
    assert not (tmp_path / "ev").exists()


def test_a_latent_larger_than_the_input_is_refused_before_writing(pipeline_run, tmp_path):
    from pipeline.runner import train

    with pytest.raises(
        PipelineError,
        match=r"model.latent_dim must be at most the number of values per example "
        r"\(64 for .*, shape \[8, 8, 1\]\). Got 100000 instead.",
    ):
        train(
            tiny_params(**{"model.latent_dim": 100_000}),
            prepared_dir=pipeline_run["paths"]["prepared"],
            model_dir=tmp_path / "m",
        )
    assert not (tmp_path / "m").exists()


# --- 8. no start-up chatter, real errors still shown ------------------------------------

NOISY_STAGE = """
import os, sys
from pipeline.platform.console import as_command

def main():
    import tensorflow as tf
    tf.config.list_physical_devices()
    os.write(2, b"E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\\n")
    os.write(2, b"E0000 00:00:1 real_op.cc:1] something that is really wrong\\n")
    print("a Python warning", file=sys.stderr)

as_command(main)
"""


def test_tensorflow_start_up_lines_are_dropped_and_the_rest_kept():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "VAE_PIPELINE_TF_LOGS")}
    quiet = subprocess.run([sys.executable, "-c", NOISY_STAGE], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0
    assert quiet.stderr.splitlines() == [
        "E0000 00:00:1 real_op.cc:1] something that is really wrong",
        "a Python warning",
    ]
    loud = subprocess.run(
        [sys.executable, "-c", NOISY_STAGE],
        capture_output=True,
        text=True,
        env={**env, "VAE_PIPELINE_TF_LOGS": "1"},
    )
    assert "failed call to cuInit" in loud.stderr and "really wrong" in loud.stderr


# --- 9. outside a git clone --------------------------------------------------------------


def test_make_repro_outside_git_says_what_to_do(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path)
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    result = subprocess.run(["make", "repro"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "is not a git repository; this project runs as a git clone" in result.stderr
    assert "git init && git add -A && git commit" in result.stderr
    assert not (tmp_path / ".venv").exists()  # stopped before installing anything


# --- 10. fuzz: every key, every kind of wrong value --------------------------------------

LEAF_KEYS = sorted(leaf_keys())


def _with(dotted: str, value) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    *blocks, key = dotted.split(".")
    target = raw
    for block in blocks:
        target = target[block]
    target[key] = value
    return raw


def _odd_values():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.sampled_from(["", "AUTO", "Conv", "Bernoulli", "none", "null", "-1", "1e400", "∞"]),
        st.text(max_size=8),
    )
    return st.one_of(
        scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
    )


def test_fuzz_every_key_gives_a_config_or_one_line_naming_it():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(key=st.sampled_from(LEAF_KEYS), value=_odd_values())
    def check(key, value):
        try:
            params = parse_params(_with(key, value))
        except ConfigError as error:
            text = str(error)
            assert "\n" not in text and key in text, (key, value, text)  # the full dotted key
            return
        assert isinstance(params, Params)

    check()


def _broken_sources(tmp_path: Path):
    """(data config overrides, what a user did) for broken files of every source."""
    import gzip

    rng = np.random.default_rng(0)
    cases = []

    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        cases.append(({"source": "npz", "path": str(tmp_path / name)}, name))

    npz("nan.npz", x=np.array([[0.1, np.nan]] * 20), y=np.arange(20) % 2)
    npz("inf.npz", x=np.array([[0.1, np.inf]] * 20), y=np.arange(20) % 2)
    npz("one_class.npz", x=rng.normal(size=(20, 3)), y=np.zeros(20))
    npz("empty.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    npz("strings.npz", x=np.array([["a", "b"]] * 20), y=np.arange(20) % 2)
    npz("labels_short.npz", x=rng.normal(size=(20, 3)), y=np.arange(5))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "nan.npz").read_bytes()[:100])
    cases.append(({"source": "npz", "path": str(tmp_path / "truncated.npz")}, "truncated npz"))
    (tmp_path / "empty.csv").write_text("")
    cases.append(({"source": "table", "path": str(tmp_path / "empty.csv")}, "empty csv"))
    (tmp_path / "ragged.csv").write_text("a,b,label\n1,2,x\n3,y\n")
    cases.append(({"source": "table", "path": str(tmp_path / "ragged.csv")}, "ragged csv"))
    (tmp_path / "infinite.csv").write_text("a,b,label\n" + "1,inf,x\n3,2,y\n" * 10)
    cases.append(({"source": "table", "path": str(tmp_path / "infinite.csv")}, "an infinite value in a csv"))
    for name, content in (("magic", b"\x01\x02\x03\x04" + bytes(100)), ("short", None)):
        folder = tmp_path / f"idx_{name}"
        folder.mkdir()
        if content is None:
            write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, size=(10, 4, 4)))
            data = gzip.open(folder / "train-images-idx3-ubyte.gz").read()
            with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
                f.write(data[:-7])
        else:
            with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
                f.write(content)
        cases.append(({"source": "idx", "path": str(folder)}, f"idx {name}"))
    make_image_folder(tmp_path / "mixed", sizes=((10, 12), (8, 8)), per_class=3)
    cases.append(
        (
            {"source": "image_folder", "path": str(tmp_path / "mixed"), "images": {"size": None}},
            "mixed image sizes, data.images.size null",
        )
    )
    (tmp_path / "bad_png" / "a").mkdir(parents=True)
    (tmp_path / "bad_png" / "a" / "0.png").write_bytes(b"\x89PNG not really")
    cases.append(({"source": "image_folder", "path": str(tmp_path / "bad_png")}, "corrupt png"))
    (tmp_path / "no_images").mkdir()
    cases.append(({"source": "image_folder", "path": str(tmp_path / "no_images")}, "empty image folder"))
    return cases


def test_broken_inputs_of_every_source_end_in_one_line(tmp_path):
    from pipeline.data.prepare import prepare

    cases = _broken_sources(tmp_path)
    assert len(cases) == 15
    for overrides, what in cases:
        with pytest.raises(DataError) as info:
            prepare(parse_params({"data": overrides}).data, seed=0, out_dir=tmp_path / "prepared")
        assert "\n" not in str(info.value), what
        assert not (tmp_path / "prepared").exists(), what


def test_a_source_found_corrupt_halfway_through_leaves_the_previous_prepared_data(tmp_path):
    """The gzip stream of the train images ends in the middle: prepare has decoded about
    1,500 rows when it finds out; the previous data/prepared stays byte-identical, no staging is left."""
    from pipeline.data.prepare import prepare

    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for split, rows in (("train", 3000), ("t10k", 500)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 256, size=(rows, 28, 28)).astype(np.uint8),
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=rows).astype(np.uint8))
    out = tmp_path / "data" / "prepared"
    prepare(parse_params({"data": {"source": "idx", "path": str(folder)}}).data, seed=0, out_dir=out)
    before = tree_bytes(out)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"^{images}: cannot read IDX file \(Compressed file ended"):
        prepare(parse_params({"data": {"source": "idx", "path": str(folder)}}).data, seed=1, out_dir=out)
    assert tree_bytes(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]
