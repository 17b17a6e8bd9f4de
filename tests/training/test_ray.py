"""The Ray engine on a simulated two-node cluster (ray.cluster_utils.Cluster, one CPU per node).

Each test connects to the one cluster the module starts (about 10 s), as a stage would:
the outputs must be the local engine's (prepared bytes, latents), a killed actor must not
cost a row, and an address where nothing answers must fail in seconds, in one line.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.latents.parquet import read_metadata
from pipeline.latents.reader import latents_to_numpy, load_latents
from pipeline.platform.engine import CONNECT_TIMEOUT, open_engine, probe, require_shared
from pipeline.platform.errors import ConfigError, PipelineError
from pipeline.platform.params.config import ClusterConfig
from tests.builders import data_config, make_image_folder, make_mixed_table, table_config
from tests.conftest import ROOT, copy_project, tiny_params

ray = pytest.importorskip("ray")  # the `cluster` extra, in `dev`


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    yield ClusterConfig(engine="ray", address=nodes.address)
    nodes.shutdown()


def _same_files(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_encode_on_ray_gives_the_local_latents(cluster, pipeline_run, tmp_path):
    from pipeline.latents.encode import encode

    paths = pipeline_run["paths"]
    with open_engine(cluster) as engine:
        assert (engine.nodes, engine.cpus, engine.gpus) == (2, 2, 0)
        rows = encode(
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            out_dir=tmp_path / "l",
            batch_size=100,
            engine=engine,
            shard_rows=300,
        )
    assert rows == pipeline_run["rows"]
    counts = pipeline_run["manifest"].counts
    for split in ("train", "test"):
        parts = sorted((tmp_path / "l" / f"split={split}").iterdir())
        assert [p.name for p in parts] == [f"part-{k}.parquet" for k in range(-(-counts[split] // 300))]
        ray_latents, local = (
            load_latents(tmp_path / "l", split=split),
            load_latents(paths["latents"], split=split),
        )
        # the same rows, in order
        assert ray_latents.column("id").to_pylist() == local.column("id").to_pylist()
        np.testing.assert_allclose(
            latents_to_numpy(ray_latents), latents_to_numpy(local), rtol=1e-5, atol=1e-6
        )
        for score, tolerance in (
            ("surprisal", {"rtol": 1e-6}),
            ("surprisal_quantile", {"atol": 1e-5}),
            ("novelty", {"atol": 1e-5}),
        ):  # each row's own draws: the local scores (the
            # quantile and novelty: S's last digits, which another batch's sums may change, over a spread of
            # nats)
            np.testing.assert_allclose(
                ray_latents.column(score).to_numpy(), local.column(score).to_numpy(), **tolerance
            )
    meta = read_metadata(parts[0])
    assert meta["surprisal"] == read_metadata(next(paths["latents"].rglob("*.parquet")))["surprisal"]
    assert meta["engine"]["engine"] == "ray" and meta["engine"]["nodes"] == 2
    assert meta["params"]["encode"]["workers"] == 2  # auto: one actor per CPU
    assert meta["choices"]["encode.workers"] == {"value": 2, "why": "one Ray actor per CPU of the cluster"}
    assert sorted(os.listdir(tmp_path)) == ["l"] and not list((tmp_path / "l").glob(".*"))  # no attempt left


def test_a_killed_actor_is_replaced_and_no_row_is_lost(cluster, pipeline_run, tmp_path, monkeypatch):
    """The first actor to write a row group is SIGKILLed mid-file; Ray restarts it and
    retries the shard, and the latents are complete, in order, with no half file left."""
    from pipeline.latents.encode import encode

    paths = pipeline_run["paths"]
    monkeypatch.setenv("VAE_PIPELINE_KILL_AT", "parquet")
    monkeypatch.setenv("VAE_PIPELINE_KILL_ONCE", str(tmp_path / "killed"))
    with open_engine(cluster) as engine:
        rows = encode(
            prepared_dir=paths["prepared"],
            model_path=paths["model"],
            out_dir=tmp_path / "l",
            batch_size=100,
            engine=engine,
            shard_rows=400,
        )
    assert (tmp_path / "killed").exists()  # an actor did die
    assert rows == pipeline_run["rows"]
    for split in ("train", "test"):
        got, local = load_latents(tmp_path / "l", split=split), load_latents(paths["latents"], split=split)
        assert got.column("id").to_pylist() == local.column("id").to_pylist()
        np.testing.assert_allclose(latents_to_numpy(got), latents_to_numpy(local), rtol=1e-5, atol=1e-6)
    assert not list((tmp_path / "l").glob(".*"))


def test_prepare_on_ray_is_byte_identical_for_images_and_a_parquet_table(cluster, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from pipeline.data.prepare import prepare
    from pipeline.data.readers import table_files

    images = make_image_folder(tmp_path / "imgs", per_class=12)
    table = make_mixed_table(tmp_path / "t.parquet")
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=50)  # six row groups
    monkeypatch.setattr(table_files, "PART_ROWS", 100)  # three parts, three tasks per pass
    configs = {
        "images": data_config(source="image_folder", path=str(images)),
        "table": table_config(tmp_path / "t.parquet"),
    }
    with open_engine(cluster) as engine:
        for name, config in configs.items():
            prepare(config, seed=0, out_dir=tmp_path / f"ray-{name}", engine=engine)
    for name, config in configs.items():
        prepare(config, seed=0, out_dir=tmp_path / f"local-{name}")
        _same_files(tmp_path / f"ray-{name}", tmp_path / f"local-{name}")


def test_a_bad_image_in_a_ray_task_is_the_one_line_local_error(cluster, tmp_path):
    from pipeline.data.prepare import prepare

    images = make_image_folder(tmp_path / "imgs")
    (images / "circle" / "9.png").write_bytes(b"not an image")
    with open_engine(cluster) as engine, pytest.raises(PipelineError, match=r"9\.png: cannot read image"):
        prepare(
            data_config(source="image_folder", path=str(images)),
            seed=0,
            out_dir=tmp_path / "p",
            engine=engine,
        )
    assert not (tmp_path / "p").exists()


def test_an_actor_that_cannot_start_stops_the_run_with_its_own_error(cluster):
    """Ray reports an __init__ that raised as ActorDiedError(RayTaskError(...)); the stage
    gets the PipelineError inside (one line), after each actor has tried, not a hang."""

    def cannot_start():  # a class made here is shipped by value, as the stage's classes are by module
        class CannotStart:
            def __init__(self):
                raise PipelineError("/shared/prepared: the prepared data is not visible on Ray node n2")

            def __call__(self, batch):  # pragma: no cover - never built
                return batch

        return CannotStart

    with open_engine(cluster) as engine, pytest.raises(PipelineError, match="not visible on Ray node n2"):
        list(engine.map_actors(cannot_start(), [{"a": 1}, {"a": 2}], arguments={}, actors=2))


def test_a_failing_task_reports_its_cause_and_a_hung_one_times_out(cluster, caplog):
    """Not Ray's wrapper header but the worker's own error, its report in the log; a task over
    cluster.task_timeout stops the stage in one line instead of hanging it."""
    import dataclasses

    with open_engine(cluster) as engine, pytest.raises(ValueError) as info:
        list(engine.map(int, ["1", "not a number"]))
    assert str(info.value).startswith("invalid literal for int() with base 10: 'not a number'")
    assert "the Ray worker's report" in caplog.text
    start = time.perf_counter()
    with (
        open_engine(dataclasses.replace(cluster, task_timeout=2)) as engine,
        pytest.raises(
            PipelineError,
            match=r"a Ray task running sleep took longer than cluster.task_timeout "
            r"\(2 s\); stopped",
        ),
    ):
        list(engine.map(time.sleep, [60]))
    assert time.perf_counter() - start < 30


def test_two_ray_train_workers_write_a_loadable_bundle_and_curves(cluster, pipeline_run, tmp_path):
    """Ray Train starts two workers (TF_CONFIG set by Ray, MultiWorkerMirroredStrategy);
    the chief publishes the bundle and live/, the launcher returns the chief's logs."""
    from pipeline.model.bundle import load_bundle
    from pipeline.training.train import from_params

    params = tiny_params(
        **{"train.epochs": 1, "train.workers": 2, "cluster.engine": "ray", "cluster.address": cluster.address}
    )
    worker_temporaries = set(Path(tempfile.gettempdir()).glob("vae-worker-*"))
    logs = from_params(params, prepared_dir=pipeline_run["paths"]["prepared"], model_dir=tmp_path / "model")
    assert np.isfinite(logs["U"]) and "val_U" in logs
    # the other worker's removed
    assert set(Path(tempfile.gettempdir()).glob("vae-worker-*")) == worker_temporaries
    bundle = load_bundle(tmp_path / "model" / "model.keras")
    assert bundle.run["train"]["distribution"] == "multi_worker" and bundle.run["train"]["workers"] == 2
    assert bundle.choices["train.distribution"]["why"].startswith("2 Ray Train workers")
    assert (tmp_path / "model" / "live" / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no scratch, no Ray records left
    assert not (tmp_path / "model" / "backup").exists()


@pytest.mark.slow
def test_one_ray_train_worker_trains_as_the_local_stage_does(cluster, pipeline_run, tmp_path):
    """train.workers 1 (the default): no collective, and the worker leaves the launcher's
    scratch alone (it once took it for a killed run's and removed it). A second Ray Train
    launch (`make test-all`): the two-worker test above launches it in the default tier, and
    train.distribution's rule for one worker is tests/model/test_auto.py's."""
    from pipeline.model.bundle import load_bundle
    from pipeline.training.train import from_params

    params = tiny_params(**{"train.epochs": 1, "cluster.engine": "ray", "cluster.address": cluster.address})
    logs = from_params(params, prepared_dir=pipeline_run["paths"]["prepared"], model_dir=tmp_path / "model")
    assert np.isfinite(logs["U"])
    bundle = load_bundle(tmp_path / "model" / "model.keras")
    assert bundle.run["train"]["distribution"] == "none"  # resolved, and recorded with its rule
    assert bundle.choices["train.distribution"] == {
        "value": "none",
        "why": "one device (the CPU): nothing to replicate",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_training_worker_that_cannot_see_the_data_says_which_node(cluster, tmp_path):
    """The training worker's own check, in a Ray task (a worker process, as Ray Train's are, in
    a second instead of Ray Train's twenty); the same through a real Ray Train launch is the
    slow test below."""
    from pipeline.training.train import _train_worker

    config = {
        "train": {"prepared_dir": str(tmp_path / "missing"), "model_dir": str(tmp_path / "model")},
        "logs": str(tmp_path / "logs.json"),
    }
    with open_engine(cluster) as engine, pytest.raises(PipelineError) as info:
        list(engine.map(_train_worker, [config]))
    assert str(info.value).startswith(
        f"{tmp_path / 'missing'}: the prepared data is not visible on Ray node "
    )
    assert not (tmp_path / "model").exists() and not (tmp_path / "logs.json").exists()


@pytest.mark.slow
def test_a_training_worker_that_cannot_see_the_data_stops_the_stage_in_one_line(cluster, tmp_path):
    from pipeline.training.train import from_params

    params = tiny_params(**{"cluster.engine": "ray", "cluster.address": cluster.address})
    with pytest.raises(PipelineError, match=r"missing: the prepared data is not visible on Ray node"):
        from_params(params, prepared_dir=tmp_path / "missing", model_dir=tmp_path / "model")
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())


def test_an_address_where_nothing_or_no_ray_answers_fails_within_seconds(cluster):
    """ray.init waits for minutes there; the probe answers in at most CONNECT_TIMEOUT."""
    probe(cluster.address, "set in params.yaml")  # a Ray head answers the gRPC preface
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(
        ConfigError,
        match=rf"cluster.address 127.0.0.1:{port} \(set in params.yaml\): no Ray "
        r"cluster answers there \(Connection refused\)",
    ):
        probe(f"127.0.0.1:{port}", "set in params.yaml")
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(
            ConfigError, match=rf"no Ray cluster answers there \(no answer within {CONNECT_TIMEOUT:g} s\)"
        ):
            probe(f"ray://127.0.0.1:{silent.getsockname()[1]}", "RAY_ADDRESS")
        assert time.monotonic() - start < CONNECT_TIMEOUT + 2


def test_the_stage_names_the_unreachable_address_in_one_line(tmp_path):
    project = copy_project(tmp_path / "p")
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9", "PYTHONPATH": str(ROOT)}
    params = (project / "params.yaml").read_text().replace("engine: local", "engine: ray")
    (project / "params.yaml").write_text(params)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "stages/prepare.py"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and time.monotonic() - start < 30
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cluster.address 127.0.0.1:9 (RAY_ADDRESS): no Ray cluster answers there (Connection "
        "refused); "
        "start one with `ray start --head` on that machine, or set cluster.address: auto and unset "
        "RAY_ADDRESS "
        "to run Ray on this machine"
    )
    assert not (project / "data" / "prepared").exists()


def test_a_node_that_cannot_see_the_project_says_so(tmp_path):
    assert require_shared(tmp_path, "the prepared data") == tmp_path
    with pytest.raises(
        PipelineError,
        match=r"missing: the prepared data is not visible on Ray node .*storage every "
        "node mounts at the same path",
    ):
        require_shared(tmp_path / "missing", "the prepared data")


def test_auto_starts_a_ray_of_its_own_beside_one_already_running(cluster, monkeypatch):
    """With no RAY_ADDRESS, the stage's Ray is new and this machine's, not the two-node
    cluster the module runs (ray.init with no address would join that one). Last in the
    module: after a second Ray in this process, Ray Train 2.60's controller no longer
    starts on the first one (a stage is a process of its own, so it never meets this)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with open_engine(ClusterConfig(engine="ray")) as engine:
        assert (engine.nodes, engine.cpus) == (1, os.cpu_count())
        assert (
            engine.describe()["address_from"]
            == "started for this stage: cluster.address auto, RAY_ADDRESS unset"
        )
