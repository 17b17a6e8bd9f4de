"""Shared fixtures: a tiny configuration, one in-process run of the whole pipeline
(`pipeline_run`) and one `dvc repro` of a copy of the project (`dvc_repo`).

TensorFlow and UMAP are slow to import and training takes time, so each of the two is
built once per test run, whatever the number of xdist workers (`built_once`), and the tests
that need outputs share it, each worker through its own copy.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On a GPU host the test run holds a GPU while it starts stages in other processes: with
# memory growth (pipeline.platform.hardware.share_gpus) they share it instead of failing to allocate.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# Every stage the tests run fails on a read of a param its dvc.yaml entry does not list
# (pipeline.platform.params.config.ParamWatch): each `dvc repro` here checks the lists.
os.environ.setdefault("VAE_PIPELINE_STRICT_PARAMS", "1")  # param_watch.STRICT_ENV

from pipeline.platform.params.config_checker import set_dotted
from pipeline.platform.params.load import parse_params

ROOT = Path(__file__).resolve().parents[1]
# The files with the longest tests (`pytest --durations`), run first: `make test` gives
# each of its workers one file at a time (`--dist loadfile`: a file's module fixtures are
# built once), in this order, so the workers end together instead of one running the
# longest file alone at the end. The first two build nothing the other waits for: test_e2e
# builds the shared DVC repository while the other kernel path's harness runs, and the
# next two, which start from that repository, come to each worker after them.
LONGEST_FIRST = (
    "test_e2e.py",
    "test_kernel_paths.py",
    "test_e2e_sources.py",
    "test_kernel_paths_dvc.py",
    "test_ray.py",
    "test_levels.py",
    "test_train.py",
    "test_model_harness.py",
    "test_kill.py",
)

TINY = {
    "seed": 0,
    # explicit, so that tests may build the model without a manifest (test_auto covers `auto`)
    "model": {
        "latent_dim": 4,
        "hidden": [64],
        "architecture": "mlp",
        "filters": [32, 64],
        "likelihood": "bernoulli",
    },
    "train": {"epochs": 6, "batch_size": 64, "learning_rate": 0.003},
    "encode": {"batch_size": 256},
    "evaluate": {
        "importance_samples": 20,
        "surprisal_examples": 120,
        "gradient_variance": {"repeats": 8, "batch_size": 32},
        "umap": {"n_neighbors": 10, "max_points": 200},
    },
}


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


def tiny_params(**overrides):
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    for dotted, value in overrides.items():
        block, key = dotted.split(".")
        raw.setdefault(block, {})[key] = value
    return parse_params(raw)


def resolved(model, shape=(8, 8, 1)):
    """A ModelConfig resolved for examples of `shape` with values in [0, 1] (what build_vae takes)."""
    from pipeline.model.resolve_model import resolve_model

    return resolve_model(model, shape, [0.0, 1.0])[0]


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per test run, however many xdist workers ask
    for it (they share the parent of their base temporary folders): the first builds it
    under a lock, the others wait. Each worker gets its own copy, so a test that changes its
    copy touches no other worker's. A failed build fails every worker that asks, with its error."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, failed = shared / name, shared / f"{name}.failed"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir() and not failed.exists():
            try:
                build(shared / f"{name}.partial")
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}")
                raise
            (shared / f"{name}.partial").rename(folder)
    if failed.exists():
        pytest.fail(f"building the shared {name} failed in another worker: {failed.read_text()[-3000:]}")
    return Path(shutil.copytree(folder, base / f"{name}-copy", symlinks=True))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """prepare -> train -> encode -> evaluate on digits with TINY params (pipeline.runner.run_all),
    once per test run; this worker's copy of it."""
    from pipeline.data.manifest import Manifest

    def build(folder: Path) -> None:
        from pipeline.runner import run_all

        run = run_all(tiny_params(), folder)
        (folder / "run.json").write_text(
            json.dumps({key: run[key] for key in ("history", "rows", "metrics")})
        )

    from pipeline.runner import run_paths

    root = built_once(tmp_path_factory, "run", build)
    paths = run_paths(root)
    return {
        "params": tiny_params(),
        "paths": paths,
        "manifest": Manifest.read(paths["prepared"]),
        **json.loads((root / "run.json").read_text()),
    }


def copy_project(dest: Path) -> Path:
    """The project's git-tracked files copied to dest (no data, no .venv)."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory):
    """A committed copy of the project with tiny training settings after one `dvc repro` on
    this machine's default kernel path, once per test run: (this worker's copy, that run's
    stdout). The run's stdout is in repro.log beside it."""

    def build(folder: Path) -> None:
        copy_project(folder / "repo")
        repo = folder / "repo"
        edit_params(
            repo,
            **{
                "train.epochs": 3,
                "model.hidden": TINY["model"]["hidden"],
                "evaluate.importance_samples": 10,
                "evaluate.surprisal_examples": 100,
            },
        )
        run(["git", "init", "-q"], repo)
        run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "init", "--allow-empty"],
            repo,
        )
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny params"], repo)
        (folder / "repro.log").write_text(run(["dvc", "repro"], repo).stdout)

    root = built_once(tmp_path_factory, "e2e", build)
    return root / "repo", (root / "repro.log").read_text()


BIN = Path(sys.executable).parent


def run(args, cwd, check=True, **extra_env):
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **extra_env,
    }
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def edit_params(repo: Path, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        set_dotted(params, dotted, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
