"""Every kernel path on any CPU: TensorFlow's oneDNN kernels on and off × float32 and
mixed_bfloat16 (pipeline.model.kernels says why).

TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI / AVX512_BF16 / AMX and
reads TF_ENABLE_ONEDNN_OPTS once per process, so the path this test run has is the CPU's
default, and the other one needs a process of its own: `=1` runs oneDNN's kernels on an
AVX2 CPU too, `=0` turns them off on any CPU.

- The model harness (tests/test_model_harness.py) runs in this test run on the default
  path; here once more in a process on the other one.
- `dvc repro` of the default run: the session's repository (conftest.dvc_repo) ran on the
  default path with train.precision auto; the other three combinations run here, in a copy
  of it, from train on (prepare and the baselines run no model).
"""

import json
import math
import re
import shutil
import sys

import pytest

from pipeline.platform.choices import AUTO
from pipeline.platform.hardware import cpu_flags, onednn_enabled
from pipeline.training.resolve_run import resolve_precision

from .conftest import ROOT, edit_params, run

DEFAULT = "1" if onednn_enabled() else "0"
OTHER = {"1": "0", "0": "1"}[DEFAULT]
MODEL_STAGES = ["train", "encode", "evaluate", "umap", "explore", "report"]


def auto_precision(switch: str) -> str:
    return resolve_precision(AUTO, cpu_flags(), [], onednn=switch == "1").value


def combinations() -> list[tuple[str, str]]:
    """(TF_ENABLE_ONEDNN_OPTS, train.precision) covering both paths × both precisions, `auto`
    wherever it resolves to one of them (so that its reason is checked on both paths)."""
    found = []
    for switch in ("1", "0"):
        chosen = auto_precision(switch)
        found += [(switch, AUTO), (switch, "float32" if chosen == "mixed_bfloat16" else "mixed_bfloat16")]
    return found


def test_the_model_harness_on_the_other_kernel_path(tmp_path):
    result = run([sys.executable, "-m", "pytest", "tests/test_model_harness.py", "-q", "-p", "no:cacheprovider", "-x",
                  "--basetemp", str(tmp_path / "harness")],  # pytest prunes old base folders: not this run's
                 ROOT, check=False, TF_ENABLE_ONEDNN_OPTS=OTHER)
    assert result.returncode == 0, f"TF_ENABLE_ONEDNN_OPTS={OTHER}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed[1]) >= 25 and "skipped" not in result.stdout, result.stdout[-500:]  # every case ran


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory):
    return shutil.copytree(dvc_repo[0], tmp_path_factory.mktemp("kernel-paths") / "repo", symlinks=True)


@pytest.mark.parametrize("switch, precision", combinations(), ids=lambda v: f"onednn{v}" if v in "01" else v)
def test_dvc_repro_on_each_kernel_path_and_precision(switch, precision, repo, dvc_repo):
    if (switch, precision) == (DEFAULT, AUTO):  # the session's run
        ran = re.findall(r"Running stage '(\w+)'", dvc_repo[1])
        assert set(MODEL_STAGES) <= set(ran), ran
    else:
        edit_params(repo, **{"train.precision": precision})
        out = run(["dvc", "repro", "--force", "--downstream", "train"], repo, TF_ENABLE_ONEDNN_OPTS=switch).stdout
        assert re.findall(r"Running stage '(\w+)'", out) == MODEL_STAGES
    folder = repo if (switch, precision) != (DEFAULT, AUTO) else dvc_repo[0]
    chosen = json.loads((folder / "data/model/choices.json").read_text())["train.precision"]
    assert chosen["value"] == (auto_precision(switch) if precision == AUTO else precision)
    if precision == AUTO:  # the reason names the kernels' switch as TensorFlow resolved it in train
        assert f"oneDNN kernels are {'on' if switch == '1' else 'off'}" in chosen["why"]
    metrics = json.loads((folder / "data/evaluation/metrics.json").read_text())
    bound = metrics["subo"]["test"]
    assert all(math.isfinite(v) for v in (bound["U"], *bound["S_K"].values())) and bound["U"] >= bound["D"] >= 0
    assert (folder / "data/evaluation/pictures/reconstructions.png").is_file()  # the decoded means
