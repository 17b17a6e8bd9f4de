"""params.yaml is validated once, with one readable message per mistake."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.platform.errors import ConfigError
from pipeline.platform.params.config import Params
from pipeline.platform.params.load import load_params, parse_params
from tests.conftest import ROOT


def test_shipped_params_are_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert isinstance(params, Params)
    assert params.model.latent_dim == raw["model"]["latent_dim"]
    assert params.model.hidden == raw["model"]["hidden"] == "auto"
    # every knob is visible to DVC: the file lists every field of every block
    assert set(raw) == set(Params.__dataclass_fields__)
    for block in ("data", "model", "loss", "train", "encode", "evaluate"):
        assert set(raw[block]) == set(getattr(params, block).__dataclass_fields__), block


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"latent_dim": -3}}, "model.latent_dim must be an integer >= 1. Got -3 instead."),
        ({"model": {"latent_dim": 2.5}}, "model.latent_dim must be an integer >= 1. Got 2.5 instead."),
        ({"model": {"latent_dim": True}}, "model.latent_dim must be an integer >= 1. Got True instead."),
        ({"data": {"test_fraction": 1.0}}, "data.test_fraction must be a number in (0, 1). Got 1.0 instead."),
        (
            {"train": {"learning_rate": "fast"}},
            "train.learning_rate must be a number > 0. Got 'fast' instead.",
        ),
        ({"model": {"hidden": [64, 0]}}, "model.hidden[1] must be an integer >= 1. Got 0 instead."),
        (
            {"model": {"hidden": 64}},
            "model.hidden must be 'auto' or a list of integers >= 1. Got 64 instead.",
        ),
        ({"model": {"hidden": "automatic"}}, "model.hidden must be 'auto' or a list of integers >= 1."),
        ({"model": {"sigma": 0}}, "model.sigma must be 'learned' or a number > 0. Got 0 instead."),
        ({"train": {"epochs": 0}}, "train.epochs must be 'auto' or an integer >= 1. Got 0 instead."),
        ({"model": {"sigma_floor": 0}}, "model.sigma_floor must be a number > 0. Got 0 instead."),
        (
            {"train": {"distribution": "multi_worker", "steps_per_execution": 8}},
            "train.steps_per_execution must be 1 or 'auto' when training is replicated (train.distribution "
            "'multi_worker'",
        ),
        ({"encode": {"workers": 4}}, "encode.workers 4 runs that many Ray workers: set cluster.engine: ray"),
        ({"train": {"workers": 2}}, "train.workers 2 runs that many Ray workers: set cluster.engine: ray"),
        (
            {"cluster": {"engine": "ray"}, "train": {"workers": 2, "distribution": "mirrored"}},
            "train.workers 2 trains with MultiWorkerMirroredStrategy; train.distribution must be 'auto' or "
            "'multi_worker'",
        ),
        ({"cluster": {"engine": "spark"}}, "cluster.engine must be one of 'local', 'ray'"),
        (
            {"loss": {"objective": "iwae", "gradient_estimator": "score_function"}},
            "loss.objective 'iwae' needs loss.gradient_estimator 'reparameterized'",
        ),
        ({"model": {"likelihood": "bernouli"}}, "did you mean 'bernoulli'?"),
        ({"modle": {}}, "unknown key 'modle' (did you mean 'model'?)"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ({"evaluate": {"umap": {"min_dist": -1}}}, "evaluate.umap.min_dist must be a number >= 0."),
        ({"model": 3}, "model must be a mapping of keys to values. Got 3 instead."),
        # each stage's own knobs (tests/test_e2e.py checks one such error through `dvc repro`)
        ({"encode": {"batch_size": 0}}, "encode.batch_size must be an integer >= 1."),
        ({"evaluate": {"knn_k": 0}}, "evaluate.knn_k must be an integer >= 1."),
        ({"evaluate": {"importance_samples": 0}}, "evaluate.importance_samples must be an integer >= 1."),
        ({"evaluate": {"umap": {"max_points": 3}}}, "evaluate.umap.max_points must be an integer >= 10."),
    ],
)
def test_bad_values_name_the_key_and_the_expectation(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_keys_take_defaults_and_ints_become_floats():
    params = parse_params({"loss": {"beta": 2}})
    assert params.loss.beta == 2.0 and isinstance(params.loss.beta, float)
    assert params.model == Params().model


def test_numbers_read_as_people_write_them(tmp_path):
    """YAML 1.2 numbers: PyYAML alone (YAML 1.1) reads 1e-3 and 5e4 as strings."""
    path = tmp_path / "params.yaml"
    path.write_text(
        "train:\n  learning_rate: 1e-3\n  epochs: 2E1\ndata:\n  max_examples: 5e3\n"
        "loss:\n  beta: .5\n  free_bits: 1_0e-1\n"
    )
    params = load_params(path)
    assert params.train.learning_rate == 0.001 and params.data.max_examples == 5000
    assert params.train.epochs == 20 and isinstance(params.train.epochs, int)
    assert (params.loss.beta, params.loss.free_bits) == (0.5, 1.0)
    path.write_text("model:\n  latent_dim: 25e-1\n")  # a float that is not a count stays refused
    with pytest.raises(ConfigError, match=r"model.latent_dim must be an integer >= 1. Got 2.5 instead"):
        load_params(path)
    path.write_text("train:\n  learning_rate: '1e-3'\n")  # quoted: a string, as the user asked
    with pytest.raises(ConfigError, match="train.learning_rate must be a number > 0. Got '1e-3' instead"):
        load_params(path)


def test_dvc_exp_run_set_param_reaches_the_stages_as_a_number(tmp_path):
    """`dvc exp run -S train.learning_rate=1e-3`: DVC parses the value as YAML 1.2 and writes
    0.001 into params.yaml, which the stages read as that number."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    reader = "from pipeline.platform.params.load import load_params; print(load_params().train.learning_rate)"
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "read": {
                        "cmd": f"{sys.executable} -c '{reader}' > rate.txt",
                        "params": ["train.learning_rate"],
                        "outs": ["rate.txt"],
                    }
                }
            }
        )
    )
    dvc, env = [str(Path(sys.executable).parent / "dvc")], {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in (
        ["git", "init", "-q"],
        dvc + ["init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"],
        dvc + ["exp", "run", "-q", "-S", "train.learning_rate=1e-3"],
    ):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, env=env)
    assert (tmp_path / "rate.txt").read_text().strip() == "0.001"


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_stage_exits_with_one_line_on_a_bad_param(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["latent_dim"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: params.yaml: model.latent_dim must be an integer >= 1. Got -3 instead."
    )
    assert not (tmp_path / "data").exists()
