"""Every kernel path on any CPU, through DVC: `dvc repro` of the default run with
TensorFlow's oneDNN kernels on and off × float32 and mixed_bfloat16 (see
tests/model/test_kernel_paths.py for the switch). The session's repository (conftest.dvc_repo) ran
on this machine's default path with train.precision auto; the other three combinations run
here, in a copy of it: train and evaluate, forced. Evaluate runs every op of the model that
the encode and explore stages do (the encoder over examples, S_K by importance sampling,
the decoded means of the pictures), so their runs here would add minutes and no kernel.
"""

import json
import math
import re
import shutil

import pytest

from pipeline.platform.choices import AUTO
from pipeline.platform.hardware import cpu_flags, onednn_enabled
from pipeline.training.resolve_run import resolve_precision
from tests.conftest import edit_params, run

DEFAULT = "1" if onednn_enabled() else "0"
MODEL_STAGES = ["train", "evaluate"]  # encode and explore run no op evaluate does not; the rest run no model
# evaluate's part of metrics.json (report, not run here, gathers it) and its decoded means
EVALUATED = ["data/evaluation/latent_metrics.json", "data/evaluation/pictures/reconstructions.png"]


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


@pytest.fixture(scope="module")
def repo(dvc_repo, tmp_path_factory):
    return shutil.copytree(dvc_repo[0], tmp_path_factory.mktemp("kernel-paths") / "repo", symlinks=True)


@pytest.mark.parametrize("switch, precision", combinations(), ids=lambda v: f"onednn{v}" if v in "01" else v)
def test_dvc_repro_on_each_kernel_path_and_precision(switch, precision, repo, dvc_repo):
    if (switch, precision) == (DEFAULT, AUTO):  # the session's run
        folder, ran = dvc_repo[0], re.findall(r"Running stage '(\w+)'", dvc_repo[1])
        assert set(MODEL_STAGES) <= set(ran), ran
    else:
        edit_params(repo, **{"train.precision": precision})
        for made_by_evaluate in EVALUATED:  # so that what is checked below is this run's
            (repo / made_by_evaluate).unlink()
        out = run(
            ["dvc", "repro", "--force", "--single-item", *MODEL_STAGES], repo, TF_ENABLE_ONEDNN_OPTS=switch
        ).stdout
        folder, ran = repo, re.findall(r"Running stage '(\w+)'", out)
        assert ran == MODEL_STAGES
    chosen = json.loads((folder / "data/model/choices.json").read_text())["train.precision"]
    assert chosen["value"] == (auto_precision(switch) if precision == AUTO else precision)
    if precision == AUTO:  # the reason names the kernels' switch as TensorFlow resolved it in train
        assert f"oneDNN kernels are {'on' if switch == '1' else 'off'}" in chosen["why"]
    bound = json.loads((folder / EVALUATED[0]).read_text())["subo"]["test"]
    assert (
        all(math.isfinite(v) for v in (bound["U"], *bound["S_K"].values())) and bound["U"] >= bound["D"] >= 0
    )
    assert (folder / EVALUATED[1]).is_file()  # the decoded means
