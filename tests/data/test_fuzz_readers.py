"""Hostile-input fuzz over the file readers (hypothesis): random bytes, truncations, byte flips
and header edits of PNG, IDX (plain and gzip), npz (stored and compressed), CSV and Parquet;
and for .h5ad, edits of its structure (a CSR X's indices, indptr, shape and encoding, its
dtypes) besides byte flips.
Each mutated file goes through prepare, as `dvc repro` would read it, and must be either read
or refused with a one-line DataError naming it: never a traceback, never a hang, never a
previous output changed.

The encode command's input gets the same: a model trained on the seed table, then mutated
tables through `encode_new_data`, each encoded into a new partition or refused in one line,
the output's other partitions untouched.

`make test` tries FUZZ_EXAMPLES cases per format; benchmarks/fuzz_readers.py runs the same
check for longer (benchmarks/RESULTS.md has the count tried).
"""

import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.prepare import prepare
from pipeline.platform.errors import DataError
from pipeline.platform.params.config import AnndataConfig, DataConfig, NpzConfig

FUZZ_EXAMPLES = int(os.environ.get("VAE_PIPELINE_FUZZ_EXAMPLES", "25"))
# make test replays the same cases every run; the benchmark draws new ones (VAE_PIPELINE_FUZZ_RANDOM=1)
DERANDOMIZE = os.environ.get("VAE_PIPELINE_FUZZ_RANDOM") != "1"
CASE_SECONDS = 20  # a case slower than this is a hang


def _idx(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 0x08, array.ndim])
        + b"".join(d.to_bytes(4, "big") for d in array.shape)
        + array.tobytes()
    )


def seed_sources(root: Path) -> dict[str, tuple[Path, DataConfig]]:
    """One small valid file per format, with the DataConfig that reads it: (the file to mutate, config)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 4, 4), dtype=np.uint8), np.repeat([0, 1], 20).astype(np.uint8)
    sources = {}
    for name, gz in (("idx_gz", True), ("idx", False)):
        folder = root / name
        folder.mkdir()
        suffix, pack = (".gz", gzip.compress) if gz else ("", bytes)
        (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(pack(_idx(x)))
        (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(_idx(y)))
        sources[name] = (
            folder / f"train-images-idx3-ubyte{suffix}",
            DataConfig(source="idx", path=str(folder)),
        )
    for name, save in (("npz", np.savez), ("npz_compressed", np.savez_compressed)):
        save(root / f"{name}.npz", x=x.reshape(40, -1).astype(np.float32), y=y)
        sources[name] = (
            root / f"{name}.npz",
            DataConfig(source="npz", path=str(root / f"{name}.npz"), npz=NpzConfig("x", "y")),
        )
    import pandas as pd

    table = pd.DataFrame(
        {"a": rng.normal(size=40), "b": rng.integers(0, 5, 40), "c": rng.choice(["u", "v"], 40), "label": y}
    )
    table.to_csv(root / "table.csv", index=False)
    table.to_parquet(root / "table.parquet")
    for name in ("csv", "parquet"):
        sources[name] = (root / f"table.{name}", DataConfig(source="table", path=str(root / f"table.{name}")))
    from PIL import Image

    for label in (0, 1):
        (root / "images" / str(label)).mkdir(parents=True)
        for i in np.flatnonzero(y == label):
            Image.fromarray(x[i] * 0 + np.uint8(i * 5)).save(root / "images" / str(label) / f"{i:02d}.png")
    sources["png"] = (
        root / "images" / "0" / "00.png",
        DataConfig(source="image_folder", path=str(root / "images")),
    )
    from tests.builders import make_cells

    make_cells(root / "cells.h5ad", n=40, genes=8)
    sources["h5ad"] = (
        root / "cells.h5ad",
        DataConfig(
            source="anndata", path=str(root / "cells.h5ad"), anndata=AnndataConfig(label_key="cell_type")
        ),
    )
    return sources


@st.composite
def mutations(draw, size: int):
    """What to do to a file of `size` bytes: truncate, flip bytes, edit its header, or replace it."""
    kind = draw(st.sampled_from(["truncate", "flip", "header", "random"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, max(0, size - 1)))
    if kind == "random":
        return kind, draw(st.binary(max_size=512))
    span = min(size, 64) if kind == "header" else size
    edits = draw(
        st.lists(st.tuples(st.integers(0, max(0, span - 1)), st.integers(0, 255)), min_size=1, max_size=8)
    )
    return kind, edits


WHOLE = st.integers(-(2**40), 2**40)


@st.composite
def h5ad_mutations(draw, size: int):
    """What to do to an .h5ad: one of `mutations`, or an edit of X's structure through h5py."""
    kind = draw(st.sampled_from(["bytes", "indices", "indptr", "shape", "encoding", "dtype"]))
    if kind == "bytes":
        return kind, draw(mutations(size))
    if kind in ("indices", "indptr"):
        return kind, draw(st.lists(st.tuples(st.integers(0, 200), WHOLE), min_size=1, max_size=4))
    if kind == "shape":
        return kind, draw(st.lists(WHOLE, min_size=0, max_size=3))
    if kind == "encoding":
        return kind, draw(st.sampled_from(["csc_matrix", "dense", "array", "", "coo_matrix", "csr_matrix"]))
    return kind, draw(st.sampled_from(["complex64", "int8", "float16", "S4", "bool"]))


def mutate_h5ad(path: Path, original: bytes, mutation) -> None:
    import h5py

    kind, arg = mutation
    if kind == "bytes":
        path.write_bytes(mutate(original, arg))
        return
    path.write_bytes(original)
    with h5py.File(path, "r+") as file:
        group = file["X"]
        if kind in ("indices", "indptr"):
            values = group[kind][:].astype(np.int64)
            for position, value in arg:
                values[position % len(values)] = value
            del group[kind]
            group[kind] = values
        elif kind == "shape":
            group.attrs["shape"] = np.array(arg, dtype=np.int64)
        elif kind == "encoding":
            group.attrs["encoding-type"] = arg
        else:
            data = group["data"][:]
            del group["data"]
            group["data"] = data.astype(arg)


def mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[:arg]
    if kind == "random":
        return arg
    out = bytearray(data)
    for position, value in arg:
        if position < len(out):
            out[position] = value
    return bytes(out)


def check_case(source: Path, config: DataConfig, out: Path) -> str:
    """prepare on the (mutated) source: 'read' or 'refused'; asserts the contract otherwise."""
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    start = time.perf_counter()
    try:
        prepare(config, seed=0, out_dir=out)
        result = "read"
    except DataError as error:
        message = str(error)
        assert "\n" not in message and message, message
        assert str(Path(config.path)) in message or str(source) in message, message
        assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
        result = "refused"
    assert time.perf_counter() - start < CASE_SECONDS
    return result


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    sources = seed_sources(root / "seeds")
    previous = root / "previous"
    prepare(sources["npz"][1], seed=0, out_dir=previous)  # a previous output every case must leave alone
    return sources, previous


@pytest.mark.parametrize("fmt", ["png", "idx_gz", "idx", "npz", "npz_compressed", "csv", "parquet", "h5ad"])
def test_every_reader_reads_or_refuses_a_hostile_file_in_one_line(seeds, fmt):
    sources, previous = seeds
    file, config = sources[fmt]
    original = file.read_bytes()
    seen = {"read": 0, "refused": 0}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutation=(h5ad_mutations if fmt == "h5ad" else mutations)(len(original)))
    def case(mutation):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            source_root = Path(config.path)
            copy = work / source_root.name
            (shutil.copytree if source_root.is_dir() else shutil.copy)(source_root, copy)
            target = copy / file.relative_to(source_root) if source_root.is_dir() else copy
            if fmt == "h5ad":
                mutate_h5ad(target, original, mutation)
            else:
                target.write_bytes(mutate(original, mutation))
            out = work / "prepared"
            shutil.copytree(previous, out)
            seen[check_case(target, DataConfig(**{**config.__dict__, "path": str(copy)}), out)] += 1

    case()
    print(f"fuzz {fmt}: {seen['read']} read, {seen['refused']} refused in one line")
    assert seen["refused"] > 0  # the mutations do reach the readers' checks


@pytest.fixture(scope="module")
def table_model(seeds, tmp_path_factory):
    """A model trained on the seed CSV (two epochs), and a latent output holding one partition."""
    from pipeline.latents.encode_command import encode_new_data
    from pipeline.platform.params.load import parse_params
    from pipeline.runner import prepare as prepare_stage
    from pipeline.runner import train

    sources, _ = seeds
    root = tmp_path_factory.mktemp("encode-fuzz")
    params = parse_params(
        {
            "data": {"source": "table", "path": str(sources["csv"][0])},
            "train": {"epochs": 2, "batch_size": 16},
            "model": {"latent_dim": 2, "hidden": [8]},
        }
    )
    prepare_stage(params, out_dir=root / "prepared")
    train(params, prepared_dir=root / "prepared", model_dir=root / "model")
    encode_new_data(
        root / "model" / "model.keras",
        sources["csv"][0],
        root / "latents",
        split="first",
        label_column="label",
    )
    return root / "model" / "model.keras", root / "latents"


def test_the_encode_command_encodes_or_refuses_a_hostile_table_in_one_line(seeds, table_model, tmp_path):
    from pipeline.latents.encode_command import encode_new_data
    from tests.builders import tree_bytes

    sources, _ = seeds
    model, latents = table_model
    original = sources["csv"][0].read_bytes()
    before, seen = tree_bytes(latents), {"read": 0, "refused": 0}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutation=mutations(len(original)))
    def case(mutation):
        new = tmp_path / "new.csv"
        new.write_bytes(mutate(original, mutation))
        start = time.perf_counter()
        try:
            encode_new_data(model, new, latents, split="fuzz", overwrite=True, label_column="label")
            seen["read"] += 1
            shutil.rmtree(latents / "split=fuzz")
        except DataError as error:
            assert "\n" not in str(error) and str(new) in str(error), str(error)
            seen["refused"] += 1
        assert tree_bytes(latents) == before
        assert time.perf_counter() - start < CASE_SECONDS

    case()
    print(f"fuzz encode_csv: {seen['read']} read, {seen['refused']} refused in one line")
    assert seen["refused"] > 0  # (the fixture encoded the file as it is)
