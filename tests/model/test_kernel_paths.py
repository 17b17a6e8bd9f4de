"""Every kernel path on any CPU, the model harness: TensorFlow's oneDNN kernels on and off ×
float32 and mixed_bfloat16 (pipeline.model.kernels says why).

TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI / AVX512_BF16 / AMX and
reads TF_ENABLE_ONEDNN_OPTS once per process, so the path this test run has is the CPU's
default, and the other one needs a process of its own: `=1` runs oneDNN's kernels on an
AVX2 CPU too, `=0` turns them off on any CPU. The harness (tests/model/test_model_harness.py,
both precisions) runs in this test run on the default path; here once more in a process on
the other one. `dvc repro` on every path and precision: tests/pipeline/test_kernel_paths_dvc.py.
"""

import re
import sys

from pipeline.platform.hardware import onednn_enabled
from tests.conftest import ROOT, run

from .test_model_harness import COMBINATIONS  # every case ran

OTHER = "0" if onednn_enabled() else "1"


def test_the_model_harness_on_the_other_kernel_path(tmp_path):
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/model/test_model_harness.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            "--basetemp",
            str(tmp_path / "harness"),
        ],  # pytest prunes old base folders: not this run's
        ROOT,
        check=False,
        TF_ENABLE_ONEDNN_OPTS=OTHER,
    )
    assert result.returncode == 0, (
        f"TF_ENABLE_ONEDNN_OPTS={OTHER}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed[1]) == len(COMBINATIONS) and "skipped" not in result.stdout, result.stdout[
        -500:
    ]
