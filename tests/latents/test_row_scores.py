"""The surprisal of every row (pipeline.latents.scores): S_K per row agrees with the stage's
average, does not depend on the row's batch, its quantile is calibrated on the training rows, and
novelty is what its definition says, recomputed with other tools."""

import io
import json
import logging
import math

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from pipeline.data.prepared import load_split
from pipeline.data.readers.sources import read_digits
from pipeline.latents.complexity import MAX_SIDE, NATS_PER_BYTE, code_nats, picture
from pipeline.latents.encode_command import encode_new_data, find_reference
from pipeline.latents.imputation import decoded_means
from pipeline.latents.parquet import METADATA_PREFIX, read_metadata
from pipeline.latents.reader import load_latents
from pipeline.latents.scores import NEIGHBOURS, QUANTILES, Reference, _feature_sd, _nearest
from pipeline.model.bundle import load_vae
from pipeline.model.diagnostics import BoundEstimator, RowSurprisal
from pipeline.platform.errors import DataError
from pipeline.platform.params.config import EncodeConfig


@pytest.fixture(scope="module")
def trained(pipeline_run):
    paths = pipeline_run["paths"]
    return load_vae(paths["model"]), load_split(paths["prepared"], "test")


def test_a_row_scores_the_same_in_any_batch_and_order_and_as_its_duplicate(trained):
    vae, test = trained
    x = test.inputs(slice(300))
    score = RowSurprisal(vae, 10)
    alone = score(x)
    assert alone.dtype == np.float64 and alone.shape == (300,) and np.isfinite(alone).all()
    np.testing.assert_allclose(score(x[::-1])[::-1], alone, rtol=1e-6)  # other batches, other positions
    np.testing.assert_allclose(score(np.repeat(x[7:8], 5, axis=0)), alone[7], rtol=1e-6)
    assert len(np.unique(alone)) == 300 or len(np.unique(x.reshape(300, -1), axis=0)) < 300
    other_seed = RowSurprisal(vae, 10, seed=1)(x)
    assert not np.allclose(other_seed, alone)  # the draws are the seed's: distinct rows, independent draws


def test_the_mean_of_the_rows_is_the_stages_s_k_on_the_same_rows_and_k(trained):
    """Both estimate E[S_K] on the same rows, with independent draws: they agree within four
    standard errors of the draws' noise (measured from two seeds of the per-row scores)."""
    vae, test = trained
    x = test.inputs(slice(None))
    rows = RowSurprisal(vae, 20)(x)
    noise = (RowSurprisal(vae, 20, seed=1)(x) - rows).std() / math.sqrt(2)  # one row's Monte Carlo spread
    stage = BoundEstimator(vae, 20)(x)["S_K"]["20"]
    assert abs(rows.mean() - stage) < 4 * math.sqrt(2) * noise / math.sqrt(len(x)), (
        rows.mean(),
        stage,
        noise,
    )
    assert noise > 0


def test_the_latents_carry_the_scores_and_the_quantile_is_uniform_on_training_rows(pipeline_run, trained):
    paths, manifest = pipeline_run["paths"], pipeline_run["manifest"]
    vae, test = trained
    latents = load_latents(paths["latents"])
    for name in ("surprisal", "bits_per_dim", "surprisal_quantile", "novelty"):
        assert latents.column(name).null_count == 0, name
    meta = read_metadata(next(paths["latents"].rglob("*.parquet")))["surprisal"]
    k = EncodeConfig.importance_samples
    assert meta["importance_samples"] == k and meta["reference"]["rows"] == manifest.counts["train"]
    # the stage wrote what the scorer computes, in nats and in bits per pixel (digits: 64)
    stage = load_latents(paths["latents"], split="test").sort_by("id")
    surprisal = stage.column("surprisal").to_numpy()
    np.testing.assert_allclose(
        surprisal, RowSurprisal(vae, k)(test.inputs(slice(None))[np.argsort(test.id)]), rtol=1e-6
    )
    np.testing.assert_allclose(stage.column("bits_per_dim").to_numpy(), surprisal / (64 * math.log(2)))
    # the reference is every training row here: their quantiles are their ranks, uniform on [0, 1]
    train = load_latents(paths["latents"], split="train")
    quantiles = np.sort(train.column("surprisal_quantile").to_numpy())
    uniform = np.linspace(0, 1, len(quantiles))
    assert np.abs(quantiles - uniform).max() < 0.01
    reference = Reference.of(meta["reference"])
    assert_novelty_as_defined(vae, train.sort_by("id"), reference, load_split(paths["prepared"], "train"))


def assert_novelty_as_defined(vae, train, reference, split):
    """novelty recomputed from its definition with other tools (sklearn's neighbours, numpy's sd):
    three parts (S_K - L; the squared error of E[x | z = mu] in training sd units; the mean distance
    to the 5 nearest other training z_means), each from the training median in units of the 99th
    percentile's distance, summed, the sum measured the same way. Every training row is in the
    reference here, so its spreads are these rows' own quantiles, and 1% of them lie beyond 1."""
    ids, order = train.column("id").to_numpy(), np.argsort(split.id)
    assert np.array_equal(split.id[order], ids)
    inputs = split.inputs(order).reshape(len(ids), -1)
    sd = inputs.std(0)
    np.testing.assert_allclose(reference.scale, np.where(sd > 0, sd, 1), rtol=1e-4)
    z = np.stack(train.column("z_mean").to_numpy(zero_copy_only=False))
    assert reference.neighbours.shape == z.shape  # 1,437 rows: every training row is a neighbour
    distances, _ = NearestNeighbors(n_neighbors=6).fit(z).kneighbors(z)
    assert np.abs(distances[:, 0]).max() < 1e-5  # each row's nearest is itself, left out
    error = (((inputs - decoded_means(vae, z).reshape(len(z), -1)) / reference.scale) ** 2).sum(1)
    s = train.column("surprisal").to_numpy()
    parts = [s - code_nats(read_digits().x[ids]), error, distances[:, 1:].mean(1)]

    def beyond(values, spread):
        return (values - spread[0]) / (spread[1] - spread[0])

    for part, spread in zip(parts, reference.spreads):
        np.testing.assert_allclose(spread, np.quantile(part, [0.5, 0.99]), rtol=1e-4)
    novelty = train.column("novelty").to_numpy()
    total = sum(beyond(part, spread) for part, spread in zip(parts, reference.spreads))
    np.testing.assert_allclose(novelty, beyond(total, reference.spreads[3]), rtol=1e-4, atol=1e-4)
    assert 0.01 * len(novelty) - 2 <= (novelty > 1).sum() <= 0.01 * len(novelty) + 2
    assert abs(np.median(novelty)) < 1e-3


def test_new_rows_get_quantiles_of_the_training_rows_and_a_training_row_is_not_novel(
    pipeline_run, tmp_path, caplog
):
    """The command finds the stage's reference beside the model; a training row given again
    scores as it did in training (the same surprisal, the same quantile)."""
    paths = pipeline_run["paths"]
    train = load_latents(paths["latents"], split="train").sort_by("surprisal")
    typical = train.slice(len(train) // 2, 20)  # the middle of the training rows
    np.savez(tmp_path / "again.npz", x=read_digits().x[typical.column("id").to_numpy()])  # the source's rows
    encode_new_data(paths["model"], tmp_path / "again.npz", tmp_path / "out")
    again = load_latents(tmp_path / "out", split="new")
    np.testing.assert_allclose(
        again.column("surprisal").to_numpy(), typical.column("surprisal").to_numpy(), rtol=1e-6
    )
    quantile = again.column("surprisal_quantile").to_numpy()
    np.testing.assert_allclose(quantile, typical.column("surprisal_quantile").to_numpy(), atol=2e-3)
    assert (0.4 < quantile).all() and (quantile < 0.6).all()
    np.testing.assert_allclose(
        again.column("novelty").to_numpy(), typical.column("novelty").to_numpy(), atol=1e-5
    )
    assert (again.column("novelty").to_numpy() < 1).all()  # not novel
    # Noise in the digits' 17 levels: more surprising and more novel than nearly every training row
    noise = np.random.default_rng(0).integers(0, 17, (20, 8, 8, 1)).astype(np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise)
    encode_new_data(paths["model"], tmp_path / "noise.npz", tmp_path / "noise")
    odd = load_latents(tmp_path / "noise", split="new")
    assert (odd.column("surprisal_quantile").to_numpy() > 0.99).all()
    assert (odd.column("novelty").to_numpy() > 1).all()
    # Without the stage's latents beside the model: the quantile is null, and a warning says why
    moved = tmp_path / "elsewhere"
    paths["model_dir"].rename(moved)
    try:
        with caplog.at_level(logging.WARNING):
            encode_new_data(moved / "model.keras", tmp_path / "again.npz", tmp_path / "bare")
        assert "surprisal_quantile and novelty are null" in caplog.text
        bare = load_latents(tmp_path / "bare", split="new")
        assert bare.column("surprisal_quantile").null_count == bare.column("novelty").null_count == 20
        assert bare.column("surprisal").null_count == 0
        with pytest.raises(DataError, match="no latents of this model"):
            encode_new_data(
                moved / "model.keras", tmp_path / "again.npz", tmp_path / "o2", reference=tmp_path / "bare"
            )
        encode_new_data(
            moved / "model.keras", tmp_path / "again.npz", tmp_path / "o3", reference=paths["latents"]
        )
        assert load_latents(tmp_path / "o3", split="new").column("surprisal_quantile").null_count == 0
    finally:
        moved.rename(paths["model_dir"])


def test_the_reference_maps_surprisal_to_the_fraction_below_and_is_stored_exactly():
    rng = np.random.default_rng(0)
    s = rng.gamma(3.0, size=5000)
    scale, neighbours = rng.random(64).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    spreads = np.array([[1.0, 2.0], [3.0, 5.0], [0.5, 0.75], [0.0, 1.0]])
    reference = Reference(10, len(s), np.quantile(s, QUANTILES), True, scale, neighbours, spreads)
    assert reference.quantile(np.array([-1.0, 1e9]))[[0, 1]].tolist() == [0.0, 1.0]
    probes = np.quantile(s, [0.1, 0.5, 0.99])
    np.testing.assert_allclose(reference.quantile(probes), [0.1, 0.5, 0.99], atol=1e-3)
    back = Reference.of(json.loads(json.dumps(reference.as_dict())))  # as the files' metadata holds it
    for name in ("quantiles", "scale", "neighbours", "spreads"):
        assert np.array_equal(getattr(back, name), getattr(reference, name)), name
    assert back.neighbours.dtype == np.float32 and back.pixels
    # each part at its 99th percentile and the others at their medians: the sum is one unit, novelty 1
    at_tail = np.array([[2.0, 3.0, 0.5], [1.0, 5.0, 0.5], [1.0, 3.0, 0.75], [1.0, 3.0, 0.5]])
    np.testing.assert_allclose(reference.novelty(at_tail), [1, 1, 1, 0])


def test_neighbours_leave_the_row_itself_out_and_the_feature_sd_is_numpys():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(50, 4))
    mine = _nearest(sample, sample)  # each row of the sample, as the reference and the stage measure it
    expected, _ = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(sample).kneighbors(sample)
    np.testing.assert_allclose(mine, expected[:, 1:].mean(1))
    twice = _nearest(sample, np.concatenate([sample, sample[:1]]))  # a duplicate stays a neighbour
    assert twice[0] < mine[0] and (twice[1:] <= mine[1:] + 1e-12).all()
    new = rng.normal(size=(7, 4))
    expected, _ = NearestNeighbors(n_neighbors=NEIGHBOURS).fit(sample).kneighbors(new)
    np.testing.assert_allclose(_nearest(new, sample), expected.mean(1))
    assert _nearest(new, sample[:1]).tolist() == [0.0] * 7  # no second row: no neighbours part
    # the sd merged batch by batch is numpy's over all rows, NaN cells left out, 1 where constant
    x = rng.normal(1e6, 1.0, size=(1000, 3))  # a large mean: the naive sum of squares loses it
    x[:, 2] = 5.0
    x[::7, 0] = np.nan
    sd = _feature_sd(np.array_split(x, 9))
    np.testing.assert_allclose(sd[:2], np.nanstd(x[:, :2], axis=0), rtol=1e-5)
    assert sd[2] == 1.0


def test_l_is_a_lossless_code_length_of_every_shape_of_pixels():
    """Lossless WebP gives the pixels back exactly (a code length, not an approximation), noise
    costs more than a flat picture, and every stored shape of pixels has a picture, one wider
    than WebP takes folded into rows."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shapes = (
        (5, 12, 9, 1),
        (5, 12, 9, 3),
        (5, 12, 9, 2),
        (5, 30),
        (5, 6, 7),
        (2, 2, 3, 4, 1),
        (2, MAX_SIDE + 5),
    )
    for shape in shapes:
        pixels = rng.integers(0, 256, shape).astype(np.uint8)
        lengths = code_nats(pixels)
        for example, length in zip(pixels, lengths):
            out = io.BytesIO()
            Image.fromarray(picture(example)).save(out, format="WEBP", lossless=True)
            assert len(out.getvalue()) * NATS_PER_BYTE == length
            back = np.asarray(Image.open(io.BytesIO(out.getvalue())))
            back = back if picture(example).ndim == 3 else back[..., 0]  # grey comes back as RGB
            assert np.array_equal(back, picture(example))
            kept = np.sort(picture(example), axis=None)[-example.size :]  # every value, zeros after
            assert np.array_equal(kept, np.sort(example, axis=None))
    assert picture(np.zeros(MAX_SIDE + 5, np.uint8)).shape == (2, MAX_SIDE)
    flat = code_nats(np.full((1, 28, 28, 1), 7, np.uint8))[0]
    assert flat < code_nats(rng.integers(0, 256, (1, 28, 28, 1)).astype(np.uint8))[0] / 5


def test_a_reference_measured_with_another_compressor_is_refused(pipeline_run, tmp_path, caplog):
    """Latents written before L was WebP's hold spreads of another L: scoring new rows against
    them would mix two scales, so the command names the file and writes nothing; found beside
    the model rather than given, it is left out with a warning, as a missing one is."""
    import types

    import pyarrow.parquet as pq

    paths = pipeline_run["paths"]
    old = tmp_path / "old" / "split=train"
    old.mkdir(parents=True)
    source = sorted((paths["latents"] / "split=train").glob("*.parquet"))[0]
    table = pq.read_table(source)
    key = f"{METADATA_PREFIX}surprisal".encode()
    record = json.loads(table.schema.metadata[key])
    del record["reference"]["compressor"]  # as a file of the PNG version had it
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, key: json.dumps(record)}), old / "0.parquet"
    )
    np.savez(tmp_path / "rows.npz", x=read_digits().x[:5])
    with pytest.raises(
        DataError, match=r"old/split=train/0\.parquet: .* the png code length, this version's is webp"
    ):
        encode_new_data(paths["model"], tmp_path / "rows.npz", tmp_path / "out", reference=tmp_path / "old")
    assert not (tmp_path / "out").exists()
    beside = types.SimpleNamespace(  # a model at tmp_path/model whose stage latents are the old ones
        model_path=tmp_path / "model" / "model.keras", model_sha256=read_metadata(source)["model_sha256"]
    )
    (tmp_path / "old").rename(tmp_path / "latents")
    with caplog.at_level(logging.WARNING):
        assert find_reference(beside, None) is None
    assert "the png code length" in caplog.text and "novelty are null" in caplog.text


def test_the_report_names_the_most_surprising_rows_and_pictures_them(pipeline_run):
    paths = pipeline_run["paths"]
    odd = pipeline_run["metrics"]["odd_rows"]
    test = load_latents(paths["latents"], split="test")
    order = np.argsort(-test.column("surprisal").to_numpy(), kind="stable")
    assert [r["id"] for r in odd["test"]["most"]] == test.column("id").to_numpy()[order[:8]].tolist()
    assert odd["test"]["rows"] == 360 and odd["train"]["rows"] == 1437
    assert (
        odd["test"]["most"][0]["surprisal"]
        >= odd["test"]["quantiles"]["0.99"]
        >= odd["test"]["quantiles"]["0.5"]
    )
    assert odd["test"]["most"][0]["label"] in [str(i) for i in range(10)]
    report = (paths["evaluation"] / "report.md").read_text()
    first = odd["test"]["most"][0]
    assert (
        "## The odd rows" in report
        and f"| {first['id']} | {first['label']} | {first['surprisal']:.2f} |" in report
    )
    for drawn in ("surprisal_histogram.png", "odd_rows.png"):
        assert (paths["evaluation"] / "pictures" / drawn).stat().st_size > 1000
