"""The GPU code paths, run on CPU (marker `gpu_path`; `benchmarks/gpu_check.sh` runs them on
a GPU): mixed_float16 with loss scaling, XLA, and MirroredStrategy, each through
`pipeline.training.train` itself: the tf.data input, the callbacks, the per-epoch bound estimator,
the bundle saved and loaded. The precision rule on GPU capabilities is in test_auto.py.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, tiny_params

pytestmark = pytest.mark.gpu_path


def bound_figures(model_dir) -> dict:
    """The last epoch's U, S_K and E_K of the bound estimator, from the dvclive curves."""
    out = {}
    for name in ("U", "S_K", "E_K"):
        rows = (model_dir / "live/plots/metrics/bound" / f"{name}.tsv").read_text().splitlines()
        out[name] = float(rows[-1].split("\t")[1])
    return out


def test_mixed_float16_trains_with_loss_scaling_and_scores_in_float32(pipeline_run, tmp_path):
    import keras

    from pipeline.model.bundle import load_bundle
    from pipeline.model.diagnostics import subo_estimates
    from pipeline.runner import train

    params = tiny_params(**{"train.precision": "mixed_float16", "train.epochs": 1})
    history = train(params, prepared_dir=pipeline_run["paths"]["prepared"], model_dir=tmp_path)
    assert np.isfinite(history["U"]) and keras.mixed_precision.global_policy().name == "float32"
    figures = bound_figures(tmp_path)
    assert all(np.isfinite(v) for v in figures.values()) and figures["E_K"] >= -0.5
    vae = load_bundle(tmp_path / "model.keras").vae
    assert type(vae.optimizer).__name__ == "LossScaleOptimizer"  # and its scale was saved with it
    assert vae.decoder.get_layer("hidden_0").compute_dtype == "float16"
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    terms = vae.subo_terms(x)
    assert {k: v.dtype.name for k, v in terms.items() if k in ("U", "D")} == {"U": "float32", "D": "float32"}
    assert np.isfinite(subo_estimates(vae, x, importance_samples=10)["S_K"]["10"])


def test_xla_compiled_training_through_pipeline_train(pipeline_run, tmp_path):
    from pipeline.model.bundle import load_bundle
    from pipeline.runner import train

    params = tiny_params(**{"train.jit_compile": True, "train.epochs": 1})
    history = train(params, prepared_dir=pipeline_run["paths"]["prepared"], model_dir=tmp_path)
    assert np.isfinite(history["U"]) and all(np.isfinite(v) for v in bound_figures(tmp_path).values())
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["train"]["jit_compile"] is True
    z_mean, _ = load_bundle(tmp_path / "model.keras").vae.predict_posterior(
        np.zeros((2, 8, 8, 1), np.float32)
    )
    assert np.isfinite(z_mean).all()


MIRRORED_TRAIN = """
import json, logging, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from pipeline.model.bundle import load_bundle
from pipeline.platform.params.load import parse_params
from pipeline.runner import train

logging.basicConfig(level=logging.INFO)
history = train(parse_params(json.loads(sys.argv[1])), prepared_dir=sys.argv[2], model_dir=sys.argv[3])
bundle = load_bundle(sys.argv[3] + "/model.keras")
z_mean, _ = bundle.vae.predict_posterior(np.zeros((3, 8, 8, 1), np.float32))
print(json.dumps({"U": history["U"], "z_mean_finite": bool(np.isfinite(z_mean).all())}))
"""


def test_mirrored_strategy_over_two_devices_through_pipeline_train(pipeline_run, tmp_path):
    from tests.conftest import TINY

    raw = {**TINY, "train": {**TINY["train"], "epochs": 1, "distribution": "mirrored"}}
    # the two CPU devices, also on a GPU host
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MIRRORED_TRAIN,
            json.dumps(raw),
            str(pipeline_run["paths"]["prepared"]),
            str(tmp_path / "model"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "replicas in sync: 2 (MirroredStrategy)" in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert np.isfinite(result["U"]) and result["z_mean_finite"]
    assert all(np.isfinite(v) for v in bound_figures(tmp_path / "model").values())
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "choices.json",
        "data_manifest.json",
        "encoder.keras",
        "live",
        "model.keras",
        "preprocessing.npz",
        "run.json",
    ]


@pytest.mark.skipif(
    bool(shutil.which("nvidia-smi")), reason="a GPU host: the check itself is what runs there"
)
def test_the_device_check_says_in_one_line_that_there_is_no_gpu():
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == "gpu_check: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing run\n"
