"""params.yaml is validated once, with one readable message per mistake."""

import subprocess
import sys

import pytest
import yaml

from pipeline.platform.config import Params, load_params, parse_params
from pipeline.platform.errors import ConfigError

from .conftest import ROOT


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


@pytest.mark.parametrize("raw, message", [
    ({"model": {"latent_dim": -3}}, "model.latent_dim must be an integer >= 1. Got -3 instead."),
    ({"model": {"latent_dim": 2.5}}, "model.latent_dim must be an integer >= 1. Got 2.5 instead."),
    ({"model": {"latent_dim": True}}, "model.latent_dim must be an integer >= 1. Got True instead."),
    ({"data": {"test_fraction": 1.0}}, "data.test_fraction must be a number in (0, 1). Got 1.0 instead."),
    ({"train": {"learning_rate": "fast"}}, "train.learning_rate must be a number > 0. Got 'fast' instead."),
    ({"model": {"hidden": [64, 0]}}, "model.hidden[1] must be an integer >= 1. Got 0 instead."),
    ({"model": {"hidden": 64}}, "model.hidden must be 'auto' or a list of integers >= 1. Got 64 instead."),
    ({"model": {"hidden": "automatic"}}, "model.hidden must be 'auto' or a list of integers >= 1."),
    ({"model": {"sigma": 0}}, "model.sigma must be 'learned' or a number > 0. Got 0 instead."),
    ({"train": {"epochs": 0}}, "train.epochs must be 'auto' or an integer >= 1. Got 0 instead."),
    ({"model": {"sigma_floor": 0}}, "model.sigma_floor must be a number > 0. Got 0 instead."),
    ({"train": {"distribution": "multi_worker", "steps_per_execution": 8}},
     "train.steps_per_execution must be 1 or 'auto' when training is replicated (train.distribution 'multi_worker'"),
    ({"encode": {"workers": 4}}, "encode.workers 4 runs that many Ray workers: set cluster.engine: ray"),
    ({"train": {"workers": 2}}, "train.workers 2 runs that many Ray workers: set cluster.engine: ray"),
    ({"cluster": {"engine": "ray"}, "train": {"workers": 2, "distribution": "mirrored"}},
     "train.workers 2 trains with MultiWorkerMirroredStrategy; train.distribution must be 'auto' or 'multi_worker'"),
    ({"cluster": {"engine": "spark"}}, "cluster.engine must be one of 'local', 'ray'"),
    ({"loss": {"objective": "iwae", "gradient_estimator": "score_function"}},
     "loss.objective 'iwae' needs loss.gradient_estimator 'reparameterized'"),
    ({"model": {"likelihood": "bernouli"}}, "did you mean 'bernoulli'?"),
    ({"modle": {}}, "unknown key 'modle' (did you mean 'model'?)"),
    ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ({"evaluate": {"umap": {"min_dist": -1}}}, "evaluate.umap.min_dist must be a number >= 0."),
    ({"model": 3}, "model must be a mapping of keys to values. Got 3 instead."),
])
def test_bad_values_name_the_key_and_the_expectation(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_keys_take_defaults_and_ints_become_floats():
    params = parse_params({"loss": {"beta": 2}})
    assert params.loss.beta == 2.0 and isinstance(params.loss.beta, float)
    assert params.model == Params().model


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
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: params.yaml: model.latent_dim must be an integer >= 1. "
                                     "Got -3 instead.")
    assert not (tmp_path / "data").exists()
