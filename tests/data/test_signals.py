"""1-D signals: the data say whether the features form an ordered series (data.sequence), a
series gets a 1-D conv network, and that network trains, saves, loads and encodes."""

import json
import logging
import re

import keras
import numpy as np
import pytest

from pipeline.data.prepare import prepare
from pipeline.data.prepared import load_split
from pipeline.data.resolve_data import sequence_rule
from pipeline.latents.reader import latents_to_numpy, load_latents
from pipeline.model.networks import build_decoder, build_encoder
from pipeline.runner import encode, train
from tests.conftest import tiny_params


def smooth_series(n: int, length: int, channels: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of noisy waves of different frequencies, random phases: (n, length[, channels])."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.linspace(0, 1, length)
    frequency = np.array([1.0, 2.0, 3.5])[y][:, None] * rng.uniform(0.9, 1.1, (n, 1))
    x = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi, (n, 1))) + 0.15 * rng.standard_normal(
        (n, length)
    )
    if channels:
        x = np.stack([x * (c + 1) for c in range(channels)], axis=-1)
    return x.astype(np.float32), y


def test_the_rule_tells_a_series_from_the_same_values_shuffled():
    x, _ = smooth_series(500, 48)
    kind, why = sequence_rule(x)
    assert kind == "series" and "neighbouring values correlate" in why
    shuffled = x[:, np.random.default_rng(1).permutation(48)]
    assert sequence_rule(shuffled)[0] == "features"
    assert sequence_rule(np.random.default_rng(2).standard_normal((500, 48)))[0] == "features"  # white noise
    assert sequence_rule(smooth_series(500, 48, channels=2)[0])[0] == "series"
    assert sequence_rule(x[:, :8]) is None  # too short to be worth a convolution
    assert sequence_rule(np.zeros((10, 16, 16, 1))) is None  # images have their own rule


@pytest.mark.parametrize("length, channels", [(40, 0), (64, 2)])
def test_the_decoder_of_a_series_gives_back_its_shape(length, channels):
    shape = (length, channels) if channels else (length,)
    encoder = build_encoder(shape, 4, (), "conv1d", (32, 64, 128))
    assert encoder.get_layer("conv_2").output.shape[1] == length // 8  # 40 -> 20 -> 10 -> 5
    for k in (1, 2):
        decoder = build_decoder(4, shape, (), "conv1d", (32, 64, 128), params_per_value=k)
        assert decoder.output_shape == (None, *shape, *((k,) if k > 1 else ()))


def run_series(tmp_path, x, y, **overrides):
    np.savez(tmp_path / "signals.npz", x=x, y=y)
    params = tiny_params(
        **{
            "data.source": "npz",
            "data.path": str(tmp_path / "signals.npz"),
            "model.architecture": "auto",
            "model.hidden": "auto",
            "model.filters": "auto",
            "model.likelihood": "auto",
            "train.epochs": 3,
            **overrides,
        }
    )
    manifest = prepare(params.data, seed=0, out_dir=tmp_path / "prepared")
    train(params, prepared_dir=tmp_path / "prepared", model_dir=tmp_path / "model")
    return params, manifest, json.loads((tmp_path / "model" / "choices.json").read_text())


def test_a_series_gets_a_conv1d_model_that_trains_saves_loads_and_encodes(tmp_path, caplog):
    x, y = smooth_series(600, 40)
    caplog.set_level(logging.INFO, logger="pipeline")
    params, manifest, choices = run_series(tmp_path, x, y)
    # the rate and the time left
    assert re.search(r"epoch 1/3: \d+ samples/s, [\d.]+ s; at most .* left", caplog.text)
    assert re.search(r"epoch 3/3: .* at most 0 s left", caplog.text)
    assert manifest.choices["data.sequence"]["value"] == "series"
    assert choices["data.sequence"]["value"] == "series"  # recorded with the model, and so in the report
    assert choices["model.architecture"] == {
        "value": "conv1d",
        "why": "ordered series of 40 values (data.sequence)",
    }
    assert choices["model.filters"]["value"] == [64, 128, 256] and choices["model.hidden"]["value"] == []
    import pipeline.model.vae  # noqa: F401 - registers the VAE for loading

    vae = keras.saving.load_model(tmp_path / "model" / "model.keras")
    assert vae.decoder.output_shape == (None, 40)
    rows = encode(
        params,
        prepared_dir=tmp_path / "prepared",
        model_path=tmp_path / "model" / "model.keras",
        out_dir=tmp_path / "latents",
    )
    assert rows == 600
    test = load_split(tmp_path / "prepared", "test")
    stage = latents_to_numpy(load_latents(tmp_path / "latents", split="test", latent_dim=4))
    z_mean, _ = vae.predict_posterior(test.inputs(slice(None)))
    np.testing.assert_allclose(stage, np.asarray(z_mean), rtol=1e-5, atol=1e-5)


def test_the_same_values_shuffled_get_an_mlp(tmp_path):
    x, y = smooth_series(600, 40)
    x = x[:, np.random.default_rng(1).permutation(40)]
    _, manifest, choices = run_series(tmp_path, x, y, **{"train.epochs": 1})
    assert manifest.choices["data.sequence"]["value"] == "features"
    assert choices["model.architecture"]["value"] == "mlp"


def test_conv1d_is_refused_for_examples_that_are_not_series(tmp_path):
    from pipeline.platform.errors import PipelineError

    images = np.random.default_rng(0).integers(0, 256, (60, 16, 16, 1), dtype=np.uint8)
    with pytest.raises(PipelineError, match="model.architecture 'conv1d' needs rows of values"):
        run_series(tmp_path, images, np.arange(60) % 2, **{"model.architecture": "conv1d"})


def test_a_table_whose_columns_are_one_series_is_measured_as_one(tmp_path):
    """A spectrum per row, one column per wavelength: the same rule as for an array."""
    import pandas as pd

    from pipeline.model.resolve_model import is_series

    x, y = smooth_series(300, 24)
    frame = pd.DataFrame(x, columns=[f"nm_{400 + 10 * i}" for i in range(24)]).assign(label=y)
    frame.to_csv(tmp_path / "spectra.csv", index=False)
    params = tiny_params(**{"data.source": "table", "data.path": str(tmp_path / "spectra.csv")})
    manifest = prepare(params.data, seed=0, out_dir=tmp_path / "prepared")
    assert manifest.choices["data.sequence"]["value"] == "series" and is_series(manifest)
    frame.sample(frac=1.0, axis=1, random_state=0).to_csv(tmp_path / "spectra.csv", index=False)
    # the same columns in another order
    shuffled = prepare(params.data, seed=0, out_dir=tmp_path / "prepared")
    assert shuffled.choices["data.sequence"]["value"] == "features"
