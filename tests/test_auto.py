"""`auto` knobs: one resolution case per kind of data, explicit values winning, and the
choices reaching the manifest, the model bundle, the latents' metadata and the report."""

import json

import numpy as np
import pytest

from pipeline import auto, resolve
from pipeline.config import AUTO, GIVEN, Params, parse_params
from pipeline.errors import ConfigError

from .conftest import tiny_params


def resolve_for(shape, value_range=(0.0, 1.0), **model):
    return resolve.resolve_model(parse_params({"model": model}).model, shape, list(value_range))


@pytest.mark.parametrize("dtype, declared, levels", [("uint8", None, 255.0), ("uint8", 16, 16.0),
                                                     ("float32", None, None), ("int64", None, None)])
def test_pixel_levels_come_from_the_dtype_or_the_reader(dtype, declared, levels):
    assert auto.pixel_levels(np.dtype(dtype), declared) == levels


@pytest.mark.parametrize("scaling, likelihood, levels, expected", [
    (AUTO, AUTO, 255.0, "unit"),  # pixels
    (AUTO, AUTO, None, "standardize"),  # real values
    (AUTO, "bernoulli", None, "unit"),  # an explicit likelihood decides
    (AUTO, "gaussian", 255.0, "standardize"),
    ("none", AUTO, 255.0, "none"),  # explicit wins
])
def test_scaling(scaling, likelihood, levels, expected):
    value, why = auto.resolve_scaling(scaling, likelihood, levels)
    assert value == expected
    assert (why == GIVEN) == (scaling != AUTO)


def test_grey_images_of_28x28_get_a_bernoulli_conv_model():
    model, choices = resolve_for((28, 28, 1))
    assert (model.likelihood, model.architecture, model.filters, model.hidden) == ("bernoulli", "conv", (32, 64), ())
    assert all(item["why"] != GIVEN for item in choices.values())


def test_rgb_images_of_32x32_get_three_conv_layers():
    model, _ = resolve_for((32, 32, 3))
    assert (model.architecture, model.filters) == ("conv", (32, 64, 128))


def test_small_images_get_an_mlp_sized_from_the_input():
    model, choices = resolve_for((8, 8, 1))  # digits: 64 values
    assert (model.likelihood, model.architecture, model.hidden) == ("bernoulli", "mlp", (256, 128))
    assert "a side under 16" in choices["model.architecture"]["why"]


@pytest.mark.parametrize("features, hidden", [(13, (64, 32)), (40, (128, 64)), (784, (512, 256))])
def test_real_valued_vectors_get_a_learned_sigma_gaussian_mlp(features, hidden):
    model, choices = resolve_for((features,), value_range=(-3.2, 4.1))
    assert (model.likelihood, model.architecture, model.hidden, model.sigma) == ("gaussian", "mlp", hidden, "learned")
    assert choices["model.likelihood"]["why"].startswith("prepared values span [-3.2, 4.1]")


def test_explicit_values_win_and_are_marked_given():
    model, choices = resolve_for((28, 28, 1), architecture="mlp", hidden=[32], likelihood="gaussian", sigma=0.5)
    assert (model.architecture, model.hidden, model.likelihood, model.sigma) == ("mlp", (32,), "gaussian", 0.5)
    assert {k: v["why"] for k, v in choices.items() if v["why"] == GIVEN}.keys() == {
        "model.architecture", "model.hidden", "model.likelihood", "model.sigma"}
    model, _ = resolve_for((28, 28, 1), filters=[])  # no conv layers asked for: an mlp
    assert model.architecture == "mlp"


def test_epochs_follow_the_updates_per_epoch_within_bounds():
    training = Params().train
    assert resolve.resolve_epochs(training, 844)[0].epochs == 12  # Fashion-MNIST, batch 64: ~10k updates
    assert resolve.resolve_epochs(training, 50)[0].epochs == resolve.MAX_EPOCHS
    assert resolve.resolve_epochs(training, 100_000)[0].epochs == resolve.MIN_EPOCHS
    given = tiny_params().train
    assert resolve.resolve_epochs(given, 844)[0].epochs == given.epochs
    loss, choice = resolve.resolve_warmup(Params().loss, 12)
    assert loss.kl_warmup_epochs == 2 and choice["loss.kl_warmup_epochs"]["why"] == "the first tenth of 12 epochs"


def test_summary_is_one_line_marking_auto_values():
    _, choices = resolve_for((8, 8, 1), latent_dim=3, hidden=[16])
    line = resolve.summary(choices)
    assert "\n" not in line
    assert line.endswith("model.hidden=[16]") and "model.architecture=mlp (auto)," in line


def test_the_choices_travel_from_prepare_to_the_report(pipeline_run):
    """TINY sets the model explicitly; data.scaling and the warm-up stay auto."""
    from pipeline.latents import read_metadata

    paths = pipeline_run["paths"]
    assert pipeline_run["manifest"].choices["data.scaling"]["value"] == "unit"
    assert pipeline_run["manifest"].pixel_levels == 16.0
    saved = json.loads((paths["model_dir"] / "choices.json").read_text())
    assert saved["data.scaling"]["value"] == "unit" and saved["model.architecture"]["why"] == GIVEN
    assert saved["loss.kl_warmup_epochs"] == {"value": 1, "why": "the first tenth of 6 epochs"}
    part = next(paths["latents"].glob("split=train/*.parquet"))
    assert read_metadata(part)["choices"] == saved
    report = (paths["evaluation"] / "report.md").read_text()
    assert "## Choices made from the data" in report
    assert "| `data.scaling` | `unit` | pixel levels 0..16: divided by 16 into [0, 1] |" in report


def test_a_real_valued_table_does_not_collapse_with_the_defaults(tmp_path):
    """Only the data keys set (epochs capped for time): D > 1 nat and at least two active units."""
    import pandas as pd

    from pipeline import runner
    from pipeline.diagnostics import active_units
    from pipeline.latents import read_z_mean

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(3, 4))
    y = rng.integers(0, 3, size=600)
    informative = centres[y] + rng.normal(size=(600, 4))
    mixed = informative @ rng.normal(size=(4, 8))  # 8 correlated real-valued features
    frame = pd.DataFrame(np.hstack([mixed, rng.normal(size=(600, 4))]), columns=[f"f{i}" for i in range(12)])
    frame["label"] = y
    frame.to_csv(tmp_path / "table.csv", index=False)
    params = parse_params({"data": {"source": "table", "path": str(tmp_path / "table.csv")},
                           "train": {"epochs": 30}, "encode": {"batch_size": 256}})
    runner.prepare(params, out_dir=tmp_path / "prepared")
    runner.train(params, prepared_dir=tmp_path / "prepared", model_dir=tmp_path / "model")
    runner.encode(params, prepared_dir=tmp_path / "prepared", model_path=tmp_path / "model" / "model.keras",
                  out_dir=tmp_path / "latents")
    choices = json.loads((tmp_path / "model" / "choices.json").read_text())
    assert {k: choices[k]["value"] for k in ("data.scaling", "model.likelihood", "model.sigma")} == {
        "data.scaling": "standardize", "model.likelihood": "gaussian", "model.sigma": "learned"}
    live = json.loads((tmp_path / "model" / "live" / "metrics.json").read_text())
    assert live["validation"]["D"] > 1.0
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    ids = np.load(tmp_path / "prepared" / "test" / "id.npy")
    z = read_z_mean(tmp_path / "latents", "test", ids, manifest["fingerprint"], np.arange(len(ids)), 8)
    assert active_units(z)["count"] >= 2


@pytest.mark.gpu_path
@pytest.mark.parametrize("flags, gpus, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, [], "mixed_bfloat16"),  # native bf16 CPU
    ({"avx2", "amx_bf16", "amx_tile"}, [], "mixed_bfloat16"),
    ({"avx2", "avx512f"}, [], "float32"),  # bf16 would be emulated, ~11× slower
    (set(), [(8, 0), (9, 0)], "mixed_bfloat16"),
    ({"avx512_bf16"}, [(7, 5)], "mixed_float16"),  # the GPUs decide, not the CPU
    (set(), [(6, 1)], "float32"),
])
def test_precision_follows_the_hardware(flags, gpus, expected):
    value, choice = resolve.resolve_precision(AUTO, flags, gpus)
    assert value == expected and choice["train.precision"]["value"] == expected
    assert resolve.resolve_precision("float32", {"avx512_bf16"}, [])[0] == "float32"  # explicit wins


def test_steps_per_execution_and_whole_calls_per_epoch():
    training = Params().train
    cfg, updates, choice = resolve.resolve_steps_per_execution(training, 844)
    assert (cfg.steps_per_execution, updates) == (32, 864)  # Keras runs whole calls: 27 × 32
    assert resolve.resolve_steps_per_execution(training, 20)[1] == 20
    multi_worker = parse_params({"train": {"distribution": "multi_worker"}}).train
    assert resolve.resolve_steps_per_execution(multi_worker, 844)[1] == 844  # one step per call there
    assert resolve.resolve_steps_per_execution(training, 844, replicas=2)[1] == 844  # and on two GPUs
    with pytest.raises(ConfigError, match="must be 1 or 'auto' when training is replicated \\(2 replicas"):
        resolve.resolve_steps_per_execution(parse_params({"train": {"steps_per_execution": 4}}).train, 50, replicas=2)
    given = parse_params({"train": {"steps_per_execution": 4}}).train
    assert resolve.resolve_steps_per_execution(given, 50)[1:] == (52, {"train.steps_per_execution": {
        "value": 4, "why": GIVEN}})


def test_each_epoch_logs_u_s_k_and_e_k_on_fixed_validation_examples(pipeline_run):
    """The article's "we don't know how good our bound is during optimization", as curves."""
    live = pipeline_run["paths"]["model_dir"] / "live" / "plots" / "metrics" / "bound"
    curves = {name: np.loadtxt(live / f"{name}.tsv", delimiter="\t", skiprows=1, usecols=1)
              for name in ("U", "S_K", "E_K")}
    assert all(len(c) == pipeline_run["params"].train.epochs and np.isfinite(c).all() for c in curves.values())
    np.testing.assert_allclose(curves["E_K"], curves["U"] - curves["S_K"], rtol=1e-5, atol=1e-4)
    assert curves["S_K"].mean() <= curves["U"].mean()  # S_K bounds S from above, tighter than U on average
    assert curves["U"][-1] < curves["U"][0]
