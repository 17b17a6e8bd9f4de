"""`auto` knobs: one resolution case per kind of data, explicit values winning, and the
choices reaching the manifest, the model bundle, the latents' metadata and the report."""

import json
import os

import numpy as np
import pytest

from pipeline.data import resolve_data as auto
from pipeline.model import resolve_model
from pipeline.platform.choices import AUTO, GIVEN, Choice, summary
from pipeline.platform.errors import ConfigError
from pipeline.platform.params.config import LossConfig, TrainConfig, leaf_keys, lookup
from pipeline.platform.params.load import parse_params
from pipeline.training import resolve_run as resolve
from tests.conftest import tiny_params


def resolve_for(shape, value_range=(0.0, 1.0), levels=None, series=False, train_rows=None, **model):
    return resolve_model.resolve_model(
        parse_params({"model": model}).model,
        shape,
        list(value_range),
        "pixels" if levels else "real",
        levels=levels,
        series=series,
        train_rows=train_rows,
    )


@pytest.mark.parametrize(
    "dtype, declared, levels",
    [("uint8", None, 255.0), ("uint8", 16, 16.0), ("float32", None, None), ("int64", None, None)],
)
def test_pixel_levels_come_from_the_dtype_or_the_reader(dtype, declared, levels):
    assert auto.pixel_levels(np.dtype(dtype), declared) == levels


@pytest.mark.parametrize(
    "scaling, likelihood, levels, expected",
    [
        (AUTO, AUTO, 255.0, "unit"),  # pixels
        (AUTO, AUTO, None, "standardize"),  # real values
        (AUTO, "bernoulli", None, "unit"),  # an explicit likelihood decides
        (AUTO, "gaussian", 255.0, "standardize"),
        ("none", AUTO, 255.0, "none"),  # explicit wins
    ],
)
def test_scaling(scaling, likelihood, levels, expected):
    choice = auto.resolve_scaling(scaling, likelihood, levels)
    assert choice.value == expected
    assert (choice.why == GIVEN) == (scaling != AUTO) == (not choice.is_auto)


def test_grey_images_of_28x28_get_a_bernoulli_conv_model():
    model, choices = resolve_for((28, 28, 1))
    assert (model.likelihood, model.architecture, model.filters, model.hidden) == (
        "bernoulli",
        "conv",
        (32, 64),
        (),
    )
    assert all(choice.is_auto for choice in choices.values())


def test_rgb_images_of_32x32_get_three_conv_layers():
    model, _ = resolve_for((32, 32, 3))
    assert (model.architecture, model.filters) == ("conv", (32, 64, 128))


@pytest.mark.parametrize(
    "side, filters",
    [(64, (32, 64, 128)), (96, (16, 32, 64, 128)), (128, (16, 32, 64, 128)), (256, (8, 16, 32, 64, 128))],
)
def test_photos_get_depth_from_their_size_and_a_width_budget(side, filters):
    """Down to an 8×8 map whatever the size; wider images start narrower, so each layer costs
    within 1.4× of a 64-pixel image's (the full-resolution ends grow): time grows with depth."""
    from pipeline.model.resolve_model import forward_flops

    model, choices = resolve_for((side, side, 3), levels=256)
    assert model.filters == filters and model.likelihood == "discretized_logistic"
    per_layer = forward_flops((side, side, 3), model, 2) / len(filters)
    reference, _ = resolve_for((64, 64, 3), levels=256)
    assert per_layer < 1.4 * forward_flops((64, 64, 3), reference, 2) / 3
    assert ("to keep each layer's cost" in choices["model.filters"].why) == (side > 64)


def test_long_series_get_depth_from_their_length_without_narrowing():
    model, _ = resolve_for((1024,), value_range=(-3.0, 3.0), series=True)
    assert model.filters == (64, 128, 256, 256, 256, 256, 256)  # 1024 -> 8, widths from 64, at most 256


def test_small_images_get_an_mlp_sized_from_the_input():
    model, choices = resolve_for((8, 8, 1))  # digits: 64 values
    assert (model.likelihood, model.architecture, model.hidden) == ("bernoulli", "mlp", (256, 128))
    assert "a side under 16" in choices["model.architecture"].why


@pytest.mark.parametrize("features, hidden", [(13, (64, 32)), (40, (128, 64)), (784, (512, 256))])
def test_real_valued_vectors_get_a_learned_sigma_gaussian_mlp(features, hidden):
    model, choices = resolve_for((features,), value_range=(-3.2, 4.1))
    assert (model.likelihood, model.architecture, model.hidden, model.sigma) == (
        "gaussian",
        "mlp",
        hidden,
        "learned",
    )
    assert choices["model.likelihood"].why.startswith("prepared values span [-3.2, 4.1]")


@pytest.mark.parametrize("rows, hidden", [(455, (64,)), (999, (64,)), (1_000, (128, 64)), (None, (128, 64))])
def test_an_mlp_on_few_training_rows_gets_one_layer(rows, hidden):
    model, choices = resolve_for((30,), value_range=(-3.2, 4.1), train_rows=rows)
    assert model.hidden == hidden
    assert ("only the second on" in choices["model.hidden"].why) == (len(hidden) == 1)


def test_explicit_values_win_and_are_marked_given():
    model, choices = resolve_for(
        (28, 28, 1), architecture="mlp", hidden=[32], likelihood="gaussian", sigma=0.5
    )
    assert (model.architecture, model.hidden, model.likelihood, model.sigma) == (
        "mlp",
        (32,),
        "gaussian",
        0.5,
    )
    assert {k for k, v in choices.items() if not v.is_auto} == {
        "model.architecture",
        "model.hidden",
        "model.likelihood",
        "model.sigma",
    }
    model, _ = resolve_for((28, 28, 1), filters=[])  # no conv layers asked for: an mlp
    assert model.architecture == "mlp"


def test_epochs_follow_the_updates_per_epoch_within_bounds():
    assert resolve.resolve_epochs(AUTO, 844).value == 12  # Fashion-MNIST, batch 64: ~10k updates
    assert resolve.resolve_epochs(AUTO, 50).value == resolve.MAX_EPOCHS
    assert resolve.resolve_epochs(AUTO, 100_000).value == resolve.MIN_EPOCHS
    assert resolve.resolve_epochs(7, 844) == Choice(7, GIVEN)
    assert resolve.resolve_warmup(AUTO, 12) == Choice(2, "the first tenth of 12 epochs")


def test_epochs_stay_within_a_compute_budget_for_large_examples(tmp_path):
    """2,400 photos of 64×64×3 (1,728 fit rows): ~10k updates would be 157 epochs, about an
    hour on two cores; the FLOPs budget cuts them. Small examples keep the update rule."""
    import dataclasses

    from pipeline.data.prepare import prepare
    from pipeline.model.resolve_model import forward_flops

    digits = prepare(tiny_params().data, seed=0, out_dir=tmp_path / "p")
    params = parse_params({})

    def run_for(shape, fit_rows):
        manifest = dataclasses.replace(digits, input_shape=list(shape), example_shape=list(shape))
        return resolve.resolve_run(
            params.model,
            params.loss,
            params.train,
            manifest,
            fit_rows=fit_rows,
            machine=resolve.Machine(),
            distribution=resolve.resolve_distribution(AUTO, 0, 1),
            validation_fraction=0.1,
            binarize="none",
            seed=0,
        )

    run, choices = run_for((64, 64, 3), 1728)
    assert run.model.likelihood == "discretized_logistic" and run.updates_per_epoch == 64
    epoch_flops = 3 * forward_flops((64, 64, 3), run.model, 2) * 64 * 64
    assert run.train.epochs == resolve.TRAINING_FLOPS // epoch_flops < resolve.MIN_EPOCHS * 4
    assert "cut to what 2e+13 training FLOPs allow" in choices["train.epochs"].why
    run, choices = run_for((8, 8, 1), 1728)
    assert run.train.epochs == resolve.MAX_EPOCHS and "cut" not in choices["train.epochs"].why
    assert resolve.resolve_epochs(AUTO, 50, epoch_flops=1e15).value == 1  # at least one epoch


def test_summary_is_one_line_marking_auto_values():
    _, choices = resolve_for((8, 8, 1), latent_dim=3, hidden=[16])
    line = summary(choices)
    assert "\n" not in line
    assert line.endswith("model.hidden=[16]") and "model.architecture=mlp (auto)," in line


def test_the_choices_travel_from_prepare_to_the_report(pipeline_run):
    """TINY sets the model explicitly; data.scaling and the warm-up stay auto."""
    from pipeline.latents.parquet import read_metadata

    paths = pipeline_run["paths"]
    assert pipeline_run["manifest"].choices["data.scaling"]["value"] == "unit"
    assert pipeline_run["manifest"].pixel_levels == 16.0
    saved = json.loads((paths["model_dir"] / "choices.json").read_text())
    assert saved["data.scaling"]["value"] == "unit" and saved["model.architecture"]["why"] == GIVEN
    assert saved["loss.kl_warmup_epochs"] == {"value": 1, "why": "the first tenth of 6 epochs"}
    part = next(paths["latents"].glob("split=train/*.parquet"))
    # the model's choices and encode's own
    assert read_metadata(part)["choices"] == {
        **saved,
        "encode.workers": {"value": 1, "why": "the local engine encodes in this process"},
    }
    report = (paths["evaluation"] / "report.md").read_text()
    assert "## Choices made from the data" in report
    # the stage's recipe passes model.likelihood to prepare (TINY's bernoulli), which sets the scaling's
    # reason
    assert "| `data.scaling` | `unit` | model.likelihood bernoulli needs values in [0, 1] |" in report


def test_a_real_valued_table_does_not_collapse_with_the_defaults(tmp_path):
    """Only the data keys set (epochs capped for time): D > 1 nat and at least two active units."""
    import pandas as pd

    from pipeline import runner
    from pipeline.latents.reader import read_z_mean
    from pipeline.model.diagnostics import active_units

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(3, 4))
    y = rng.integers(0, 3, size=600)
    informative = centres[y] + rng.normal(size=(600, 4))
    mixed = informative @ rng.normal(size=(4, 8))  # 8 correlated real-valued features
    frame = pd.DataFrame(np.hstack([mixed, rng.normal(size=(600, 4))]), columns=[f"f{i}" for i in range(12)])
    frame["label"] = y
    frame.to_csv(tmp_path / "table.csv", index=False)
    params = parse_params(
        {
            "data": {"source": "table", "path": str(tmp_path / "table.csv")},
            "train": {"epochs": 30},
            "encode": {"batch_size": 256},
        }
    )
    runner.prepare(params, out_dir=tmp_path / "prepared")
    runner.train(params, prepared_dir=tmp_path / "prepared", model_dir=tmp_path / "model")
    runner.encode(
        params,
        prepared_dir=tmp_path / "prepared",
        model_path=tmp_path / "model" / "model.keras",
        out_dir=tmp_path / "latents",
    )
    choices = json.loads((tmp_path / "model" / "choices.json").read_text())
    assert {k: choices[k]["value"] for k in ("data.scaling", "model.likelihood", "model.sigma")} == {
        "data.scaling": "standardize",
        "model.likelihood": "gaussian",
        "model.sigma": "learned",
    }
    live = json.loads((tmp_path / "model" / "live" / "metrics.json").read_text())
    assert live["validation"]["D"] > 1.0
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    ids = np.load(tmp_path / "prepared" / "test" / "id.npy")
    z = read_z_mean(tmp_path / "latents", "test", ids, manifest["fingerprint"], np.arange(len(ids)), 8)
    assert active_units(z.var(axis=0))["count"] >= 2


@pytest.mark.gpu_path
@pytest.mark.parametrize(
    "flags, gpus, onednn, expected",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, [], True, "mixed_bfloat16"),  # native bf16 through oneDNN
        ({"avx2", "amx_bf16", "amx_tile"}, [], True, "mixed_bfloat16"),
        # native, but Eigen's bf16 is slower than float32
        (
            {"avx2", "amx_bf16", "amx_tile"},
            [],
            False,
            "float32",
        ),
        ({"avx2", "avx512f"}, [], True, "float32"),  # bf16 would be emulated, ~11× slower
        ({"avx2", "avx512f"}, [], False, "float32"),
        (set(), [(8, 0), (9, 0)], False, "mixed_bfloat16"),
        ({"avx512_bf16"}, [(7, 5)], True, "mixed_float16"),  # the GPUs decide, not the CPU
        (set(), [(6, 1)], False, "float32"),
    ],
)
def test_precision_follows_the_hardware_and_the_kernels(flags, gpus, onednn, expected):
    choice = resolve.resolve_precision(AUTO, flags, gpus, onednn)
    assert choice.value == expected
    if not gpus:  # the reason names both the CPU's bf16 and the kernels' switch
        assert "bf16" in choice.why and f"oneDNN kernels are {'on' if onednn else 'off'}" in choice.why
    # explicit wins
    assert resolve.resolve_precision("float32", {"avx512_bf16"}, [], True) == Choice("float32", GIVEN)


@pytest.mark.parametrize(
    "switch, flags, expected",
    [
        (None, {"avx2", "amx_bf16", "amx_tile"}, True),
        (None, {"avx2", "avx512_vnni"}, True),
        (None, {"avx2"}, False),
        ("0", {"amx_bf16"}, False),
        ("1", {"avx2"}, True),
        ("true", set(), True),
        ("False", {"amx_tile"}, False),
        ("maybe", {"avx2"}, False),
    ],
)
def test_onednn_rule_is_tensorflows(switch, flags, expected):
    from pipeline.platform.hardware import onednn_by_rule

    assert onednn_by_rule(switch, flags) is expected


def test_onednn_switch_as_this_tensorflow_resolved_it():
    """TensorFlow's own answer agrees with its documented rule on this machine, as the test runs
    (tests/model/test_kernel_paths.py runs the harness with the switch forced the other way)."""
    from pipeline.platform.hardware import cpu_flags, onednn_by_rule, onednn_enabled

    assert onednn_enabled() is onednn_by_rule(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), cpu_flags())


def test_steps_per_execution_one_per_call_when_replicated():
    assert resolve.resolve_steps_per_execution(AUTO, 844).value == 32
    assert resolve.resolve_steps_per_execution(AUTO, 20).value == 20  # no more than an epoch
    assert resolve.resolve_steps_per_execution(AUTO, 844, distribution="multi_worker").value == 1
    assert resolve.resolve_steps_per_execution(AUTO, 844, replicas=2).value == 1  # and on two GPUs
    with pytest.raises(ConfigError, match="must be 1 or 'auto' when training is replicated \\(2 replicas"):
        resolve.resolve_steps_per_execution(4, 50, replicas=2)
    assert resolve.resolve_steps_per_execution(4, 50) == Choice(4, GIVEN)


@pytest.mark.parametrize(
    "given, gpus, workers, expected",
    [
        (AUTO, 0, 1, "none"),
        (AUTO, 1, 1, "none"),
        (AUTO, 2, 1, "mirrored"),
        (AUTO, 0, 3, "multi_worker"),
        ("mirrored", 0, 1, "mirrored"),
    ],
)
def test_distribution_from_the_gpus_and_the_workers(given, gpus, workers, expected):
    choice = resolve.resolve_distribution(given, gpus, workers)
    assert choice.value == expected and choice.is_auto == (given == AUTO)


def test_one_resolution_records_every_auto_knob_of_train_and_rounds_epochs_to_whole_calls(tmp_path):
    from pipeline.data.prepare import prepare

    manifest = prepare(tiny_params().data, seed=0, out_dir=tmp_path / "p")
    params = parse_params({})  # every train knob at its default: auto where it can be
    run, choices = resolve.resolve_run(
        params.model,
        params.loss,
        params.train,
        manifest,
        fit_rows=844 * 64,
        machine=resolve.Machine(),
        distribution=resolve.resolve_distribution(AUTO, 0, 1),
        validation_fraction=0.1,
        binarize="none",
        seed=0,
    )
    auto_train = {key for key in leaf_keys(TrainConfig, "train.") if lookup(params, key) == AUTO}
    auto_train |= {key for key in leaf_keys(LossConfig, "loss.") if lookup(params, key) == AUTO}
    assert auto_train <= set(choices) and "train.distribution" in auto_train
    # Keras runs whole calls: 27 × 32
    assert (run.train.steps_per_execution, run.updates_per_epoch) == (
        32,
        864,
    )
    assert AUTO not in {lookup(run, key) for key in auto_train}


def test_each_epoch_logs_u_s_k_and_e_k_on_fixed_validation_examples(pipeline_run):
    """The article's "we don't know how good our bound is during optimization", as curves."""
    live = pipeline_run["paths"]["model_dir"] / "live" / "plots" / "metrics" / "bound"
    tables = {
        name: np.loadtxt(live / f"{name}.tsv", delimiter="\t", skiprows=1, ndmin=2)
        for name in ("U", "S_K", "E_K")
    }
    epochs = tables["U"][:, 0]  # the first two epochs, then those where the bound stays a tenth of the time
    assert (epochs[:2] == [0, 1]).all() and (np.diff(epochs) > 0).all()
    assert epochs[-1] < pipeline_run["params"].train.epochs
    assert all((t[:, 0] == epochs).all() for t in tables.values())
    curves = {name: t[:, 1] for name, t in tables.items()}
    assert all(np.isfinite(c).all() for c in curves.values())
    np.testing.assert_allclose(curves["E_K"], curves["U"] - curves["S_K"], rtol=1e-5, atol=1e-4)
    assert curves["S_K"].mean() <= curves["U"].mean()  # S_K bounds S from above, tighter than U on average
    assert curves["U"][-1] < curves["U"][0]
