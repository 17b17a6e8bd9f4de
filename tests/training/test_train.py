"""Training as a production tool: replicas, workers, resume after SIGKILL, NaN guard, determinism.

Each scenario runs in its own process (TensorFlow's device layout, determinism and
strategies are process-wide) on the digits data prepared once for the module.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, TINY

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A directory with params.yaml and data/prepared (digits), where stages run as in DVC."""
    from pipeline.data.prepare import prepare
    from pipeline.platform.params.load import parse_params

    root = tmp_path_factory.mktemp("train")
    prepare(parse_params(TINY).data, seed=0, out_dir=root / "data" / "prepared")
    return root


def write_params(root: Path, **train) -> None:
    params = {**TINY, "train": {**TINY["train"], **train}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run_train(root: Path, env=None, **popen):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=root,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def live_steps(root: Path, live: str = "data/model/live") -> list[int]:
    path = root / live / "plots/metrics/train/U.tsv"
    if not path.is_file():
        return []
    return [int(line.split("\t")[0]) for line in path.read_text().splitlines()[1:] if line.strip()]


def model_files(root: Path) -> dict:
    """The published model directory (the bundle and live/), not the resume backup."""
    model = root / "data" / "model"
    return {
        str(p.relative_to(model)): p.read_bytes()
        for p in sorted(model.rglob("*"))
        if p.is_file() and "backup" not in p.relative_to(model).parts
    }


def test_resume_after_sigkill_continues_at_the_next_epoch(project, pipeline_run, tmp_path):
    root = tmp_path
    shutil.copytree(project / "data" / "prepared", root / "data" / "prepared")
    shutil.copytree(pipeline_run["paths"]["model_dir"], root / "data" / "model")  # a previous run's bundle
    previous_model = model_files(root)
    assert "model.keras" in previous_model and "live/plots/metrics/train/U.tsv" in previous_model
    write_params(root, epochs=4, batch_size=4)  # ~360 steps an epoch: time to kill mid-epoch
    process = run_train(root)
    deadline = time.time() + 300
    while (
        len(live_steps(root, "data/model/backup/live")) < 2
        and time.time() < deadline
        and process.poll() is None
    ):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert live_steps(root, "data/model/backup/live") == [0, 1]
    assert json.loads((root / "data/model/backup/training_metadata.json").read_text())["epoch"] == 2
    assert model_files(root) == previous_model  # the previous bundle and curves intact after the kill

    second = run_train(root)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-3000:]
    assert "at epoch 3 of 4" in stderr
    assert live_steps(root) == [0, 1, 2, 3]  # issue 12.2: the rows from before the kill survive
    assert not (root / "data/model/backup").exists()  # finished: nothing left to resume
    assert [p.name for p in (root / "data").rglob(".*")] == []  # nor the killed run's scratch or staging
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import keras, pipeline.model.vae
vae = keras.saving.load_model({str(root / "data/model/model.keras")!r})
print(int(vae.optimizer.iterations.numpy()))""",
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    # 90% of the 1,437 train digits, batch 4: 324 steps, rounded up to whole calls of 32
    steps_per_epoch = int(np.ceil(np.ceil(1293 / 4) / 32) * 32)
    assert int(check.stdout.strip()) == 4 * steps_per_epoch  # optimizer state was restored too


def test_nan_stops_with_a_message_and_keeps_the_backup(project, tmp_path):
    shutil.copytree(project / "data" / "prepared", tmp_path / "data" / "prepared")
    write_params(tmp_path, optimizer="sgd", learning_rate=1e12, epochs=2)
    process = run_train(tmp_path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: U became nan") or "U became inf" in last
    assert "is kept in data/model/backup" in last
    assert (tmp_path / "data/model/backup/run_fingerprint.txt").is_file()
    assert not (tmp_path / "data/model/model.keras").exists()


DETERMINISM = """
import json, sys
from pipeline.platform.params.load import parse_params
from pipeline.runner import train
runs = [parse_params(raw) for raw in json.loads(sys.argv[1])]
print(json.dumps([train(params, prepared_dir=sys.argv[2], model_dir=sys.argv[3] + str(i))
                  for i, params in enumerate(runs)]))
"""


def test_deterministic_runs_give_identical_metrics(project, tmp_path):
    """Across two processes (as two `dvc repro` runs are), and also with the per-epoch S_K
    turned off: scoring draws from its own seed stream."""
    params = {
        **TINY,
        "train": {**TINY["train"], "epochs": 2, "deterministic": True},
        "data": {"binarize": "dynamic"},
    }
    no_bound = {**params, "train": {**params["train"], "bound_examples": 0}}
    results = []
    for i, runs in enumerate(([params, no_bound], [params])):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                DETERMINISM,
                json.dumps(runs),
                str(project / "data/prepared"),
                str(tmp_path / f"process{i}-run"),
            ],
            capture_output=True,
            text=True,
            env=ENV,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        results += json.loads(out.stdout.strip().splitlines()[-1])
    first, without_bound, other_process = results
    assert first == without_bound == other_process and np.isfinite(first["U"])


MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from pipeline.platform.params.load import parse_params
from pipeline.model.networks import build_vae
from pipeline.model.resolve_model import resolve_model
from pipeline.training.trainer import Trainer

params = parse_params(json.loads(sys.argv[1]))
model = resolve_model(params.model, (8, 8, 1), [0.0, 1.0])[0]
x = np.random.default_rng(0).uniform(size=(512, 8, 8, 1)).astype("float32")

def one_step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        vae = build_vae((8, 8, 1), model, params.loss, seed=0)
        trainer = Trainer(vae)
        trainer.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [w.numpy().copy() for w in vae.trainable_weights]
    history = trainer.fit(x, batch_size=512, epochs=1, verbose=0, shuffle=False).history
    delta = np.concatenate([(w.numpy() - b).ravel() for w, b in zip(vae.trainable_weights, before)])
    return history["U"][0], float(np.linalg.norm(delta)), strategy.num_replicas_in_sync

print(json.dumps([one_step(tf.distribute.get_strategy()),
                  one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]))
"""


def test_two_replicas_take_the_same_step_as_one():
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED, json.dumps({**TINY, "loss": {"mc_samples": 8}})],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (u1, step1, n1), (u2, step2, n2) = json.loads(out.stdout.strip().splitlines()[-1])
    assert (n1, n2) == (1, 2)
    assert u2 == pytest.approx(u1, rel=0.02)  # the same objective, up to sampling noise
    assert step2 == pytest.approx(step1, rel=0.1)  # gradients averaged over replicas, not summed


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_localhost_complete_an_epoch(project, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    scratch = tmp_path / "tmp"  # the workers' own temporary directory, not /tmp that other tests share
    scratch.mkdir()
    workers = []
    for index in range(2):
        root = tmp_path / f"worker{index}"
        shutil.copytree(project / "data" / "prepared", root / "data" / "prepared")
        write_params(root, epochs=1, distribution="multi_worker")
        # On CPU on purpose: two processes on one GPU cannot run NCCL collectives with each other,
        # and what is tested here is the multi-worker wiring, not the device.
        env = {
            **ENV,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "CUDA_VISIBLE_DEVICES": "",
            "TMPDIR": str(scratch),
        }
        workers.append((root, run_train(root, env=env)))
    for _root, process in workers:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        assert "replicas in sync: 2 (CollectiveAllReduceStrategy)" in stderr  # = MultiWorkerMirrored
    chief, other = workers[0][0], workers[1][0]
    assert (chief / "data/model/model.keras").is_file() and live_steps(chief) == [0]
    assert not (other / "data/model/model.keras").exists()  # only the chief writes outputs
    assert not list(scratch.glob("vae-worker-*"))  # the other worker's backup and bundle removed


def test_multi_worker_without_tf_config_is_a_clear_error(project, tmp_path):
    shutil.copytree(project / "data" / "prepared", tmp_path / "data" / "prepared")
    write_params(tmp_path, distribution="multi_worker")
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    _, stderr = run_train(tmp_path, env=env).communicate(timeout=300)
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("error: train.distribution 'multi_worker' needs the TF_CONFIG")
    )


def test_bf16_cosine_and_clipping_in_process(pipeline_run, tmp_path):
    import keras

    from pipeline.runner import train
    from tests.conftest import tiny_params

    params = tiny_params(
        **{
            "train.precision": "mixed_bfloat16",
            "train.lr_schedule": "cosine",
            "train.clipnorm": 1.0,
            "train.epochs": 3,
            "train.steps_per_execution": 4,
        }
    )
    history = train(params, prepared_dir=pipeline_run["paths"]["prepared"], model_dir=tmp_path)
    assert np.isfinite(history["U"]) and keras.mixed_precision.global_policy().name == "float32"
    rates = np.loadtxt(tmp_path / "live/plots/metrics/train/learning_rate.tsv", skiprows=1, usecols=1)
    assert rates[0] > rates[1] > rates[2] == pytest.approx(0, abs=1e-9)  # cosine decay to 0 over the run
    vae = keras.saving.load_model(tmp_path / "model.keras")
    assert vae.decoder.get_layer("hidden_0").dtype_policy.name == "mixed_bfloat16"
    z_mean, _ = vae.encoder.predict_on_batch(np.zeros((2, 8, 8, 1), np.float32))
    assert z_mean.dtype == np.float32  # heads, and so the SUBO, stay float32


def test_a_backup_is_resumed_only_when_the_auto_knobs_resolve_alike():
    """The same params may resolve differently under another version of the rules."""
    from types import SimpleNamespace

    from pipeline.model.resolve_model import resolve_model
    from pipeline.platform.choices import Choice
    from pipeline.platform.params.load import parse_params
    from pipeline.training.backup import run_fingerprint
    from pipeline.training.resolve_run import TrainingRun

    params = parse_params(TINY)
    model = resolve_model(params.model, (8, 8, 1), [0.0, 1.0])[0]
    run = TrainingRun(model, params.loss, params.train, 100, 0.1, "none", 0)
    manifest = SimpleNamespace(fingerprint="data")
    one, two = {"model.filters": Choice((32,), "rule")}, {"model.filters": Choice((32, 64), "rule")}
    assert run_fingerprint(run, manifest, one) == run_fingerprint(run, manifest, dict(one))
    assert run_fingerprint(run, manifest, one) != run_fingerprint(run, manifest, two)


def _id_split(tmp_path, n: int):
    """A split whose single feature is the row index: batches show which rows they read."""
    from pipeline.data.prepared import Preprocessor, Split

    np.save(tmp_path / "x.npy", np.arange(n, dtype=np.float32)[:, None])
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    none = Preprocessor("none", np.zeros(1, np.float32), np.ones(1, np.float32))
    return Split(x=x, y=np.zeros(n, np.int32), id=np.arange(n), preprocess=none)


def test_fit_batches_are_a_fresh_seeded_permutation_of_the_rows_every_pass(tmp_path):
    from pipeline.training.feed import batches

    split = _id_split(tmp_path, 200)
    rows = np.arange(3, 103, 2)  # 50 fit rows

    def stream(seed, batch=10, in_memory=False):
        ds = batches(split, rows, batch, seed=seed, shuffle=True, in_memory=in_memory)
        return np.concatenate([b.numpy()[:, 0] for b in ds.take(150 // batch)]).astype(int)

    first = stream(0)
    passes = [first[i * 50 : (i + 1) * 50] for i in range(3)]
    for one in passes:  # every pass reads each fit row once (each batch in sorted row order)
        assert sorted(one) == rows.tolist()
    assert passes[0].tolist() != passes[1].tolist()  # reshuffled every pass
    assert first.tolist() == stream(0).tolist() == stream(0, in_memory=True).tolist()  # seeded; memory = mmap
    assert first.tolist() != stream(1).tolist()
    across = stream(0, batch=15)  # batches running across passes: still each row once a pass
    assert np.array_equal(np.bincount(across, minlength=200)[rows], np.full(50, 3))
    in_order = np.concatenate([b.numpy()[:, 0] for b in batches(split, rows, 10, seed=0)])
    assert in_order.astype(int).tolist() == rows.tolist()  # validation: one pass in row order


def test_validation_batches_binarize_the_same_way_every_epoch(tmp_path):
    from pipeline.data.prepared import Preprocessor, Split
    from pipeline.training.feed import batches

    np.save(tmp_path / "x.npy", np.full((40, 3), 0.5, np.float32))
    split = Split(
        np.load(tmp_path / "x.npy", mmap_mode="r"),
        np.zeros(40, np.int32),
        np.arange(40),
        Preprocessor("none", np.zeros(1, np.float32), np.ones(1, np.float32)),
    )
    ds = batches(split, np.arange(40), 16, seed=0, binarize="dynamic")
    once, twice = (np.concatenate([b.numpy() for b in ds]) for _ in range(2))
    assert set(np.unique(once)) == {0.0, 1.0} and np.array_equal(once, twice)
    assert 0.3 < once.mean() < 0.7


def test_validation_and_evaluate_see_the_same_binarization_draw_of_a_row(tmp_path):
    """One draw per (seed, row): training's validation batches, of any size, and the rows
    evaluate scores (data.fixed_inputs) get the same x_b for the same row."""
    from pipeline.data.prepared import Preprocessor, Split, fixed_inputs
    from pipeline.training.feed import batches

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(50, 4)).astype(np.float32))
    split = Split(
        np.load(tmp_path / "x.npy", mmap_mode="r"),
        np.zeros(50, np.int32),
        np.arange(50),
        Preprocessor("none", np.zeros(1, np.float32), np.ones(1, np.float32)),
    )
    val_rows = np.arange(5, 45, 2)
    by_7 = np.concatenate([b.numpy() for b in batches(split, val_rows, 7, seed=3, binarize="dynamic")])
    by_16 = np.concatenate([b.numpy() for b in batches(split, val_rows, 16, seed=3, binarize="dynamic")])
    scored = fixed_inputs(split, val_rows[[3, 11, 17]], "dynamic", seed=3)
    assert set(np.unique(by_7)) == {0.0, 1.0} and np.array_equal(by_7, by_16)
    np.testing.assert_array_equal(scored, by_7[[3, 11, 17]])
    assert not np.array_equal(fixed_inputs(split, val_rows, "dynamic", seed=4), by_7)  # the seed matters
    assert abs(by_7.mean() - np.asarray(split.x[val_rows]).mean()) < 0.1  # x_b ~ Bernoulli(x)
