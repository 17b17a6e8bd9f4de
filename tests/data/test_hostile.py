"""Hostile and malformed files: every reader either reads a file correctly or refuses it in
one line naming it, before allocating what a lying header declares."""

import gzip
import io
import json
import logging
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.data.prepare import validate
from pipeline.data.readers.idx import read_idx_dir
from pipeline.data.readers.images import read_image_folder
from pipeline.data.readers.sources import read_npz
from pipeline.data.readers.tables import read_table
from pipeline.latents.parquet import LatentBatch, RowScores
from pipeline.latents.writer import write_partition
from pipeline.platform.errors import DataError


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(">u1" if code == 0x08 else ">f8").tobytes()


def write_idx_dir(folder, images: bytes, labels: bytes | None = None, gz: bool = True):
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(images) if gz else images)
    if labels is not None:
        (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)
    return folder


def test_an_idx_header_declaring_more_than_the_file_can_hold_is_refused_before_allocation(tmp_path):
    # 2^32 − 1 images of 65,535 × 65,535 pixels: no machine could allocate it; the header is 20 bytes
    header = bytes([0, 0, 0x08, 3]) + b"\xff\xff\xff\xff" + b"\x00\x00\xff\xff" * 2
    with pytest.raises(DataError) as info:
        read_idx_dir(write_idx_dir(tmp_path / "gz", header + b"\0" * 100))
    assert "declares [4294967295, 65535, 65535]" in one_line(info)
    assert "more than" in str(info.value) and "gzip-compressed bytes can hold" in str(info.value)
    with pytest.raises(DataError) as info:
        read_idx_dir(write_idx_dir(tmp_path / "plain", header + b"\0" * 100, gz=False))
    assert "truncated or padded IDX file" in one_line(info) and "train-images-idx3-ubyte" in str(info.value)


def test_a_corrupt_gzip_idx_is_one_line(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(6 * 28 * 28, dtype=np.uint8).reshape(6, 28, 28)))
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 8] = b"\xff" * 8  # inside the deflate stream, not a truncation
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DataError) as info:
        read_idx_dir(folder)
    assert one_line(info).startswith(f"{folder / 'train-images-idx3-ubyte.gz'}: cannot read IDX file")


def _png(width: int, height: int) -> bytes:
    """A 1 × 1 PNG whose header (IHDR) then declares width × height: what a bomb's header says."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    return bytes(data)


@pytest.mark.parametrize("side", [9000, 20000])  # beyond our limit; beyond PIL's own (which raises its error)
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    Image.new("L", (8, 8)).save(folder / "ok.png")
    (folder / "z_bomb.png").write_bytes(_png(side, side))
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path / "images", None, "grey")
    message = one_line(info)
    assert message.startswith(str(folder / "z_bomb.png"))
    assert "more than the 67,108,864 pixels an image may have" in message


def _npz_with_header(path, shape, data: bytes, compression=zipfile.ZIP_STORED):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("x.npy", header.getvalue() + data)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_an_npz_header_that_disagrees_with_its_member_is_refused(tmp_path, compression):
    path = _npz_with_header(
        tmp_path / "lying.npz", (1_000_000, 1000), np.zeros(40, np.float32).tobytes(), compression
    )
    with pytest.raises(DataError) as info:
        read_npz(path, "x", None)
    assert "array 'x' declares shape [1000000, 1000]" in one_line(info) and "corrupt" in str(info.value)


def test_values_beyond_float32_are_refused_and_large_integers_named(tmp_path, caplog):
    x = np.ones((10, 4))
    x[3, 2] = 1e39  # finite as float64, inf as float32
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DataError) as info:
        validate(read_npz(tmp_path / "big.npz", "x", "y"))
    assert "values up to 1e+39 are beyond float32's range" in one_line(info)
    x[3, 2] = 2**24 + 1  # a whole number float32 rounds
    np.savez(tmp_path / "ids.npz", x=x, y=np.arange(10) % 2)
    with caplog.at_level(logging.WARNING):
        validate(read_npz(tmp_path / "ids.npz", "x", "y"))
    assert "integers up to 16777217 are beyond 2^24" in caplog.text

    (tmp_path / "table.csv").write_text(
        "a,b,label\n" + "".join(f"{i},{1e39 if i == 5 else i},{i % 2}\n" for i in range(30))
    )
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "table.csv", "label", None)
    assert "column 'b': values up to 1e+39 are beyond float32's range" in one_line(info)


# --- the publish protocol trusts nothing it reads ---------------------------------------------


def _plant(root, name: str, moves) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f".{name}.journal").write_text(moves if isinstance(moves, str) else json.dumps({"moves": moves}))


@pytest.mark.parametrize(
    "moves",
    [
        [["../victim.txt", "x"]],  # a staged path outside the publication's staging
        [[".split=new.staging/new/x", "../victim.txt"]],  # a target outside root
        [[".split=new.staging/new/victim.txt", "victim.txt"], ["../../victim.txt", "y"]],
        '{"moves": [["a", "b"]',  # not JSON
        '{"renames": []}',
        '{"moves": [["only one"]]}',
    ],
)
def test_a_planted_or_corrupt_journal_changes_no_file(tmp_path, moves):
    """A neighbour plants a journal in a shared --output naming a file outside it: refused in one
    line, every file byte-identical, the journal left for the user to look at."""
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = tmp_path / "shared" / "out"
    _plant(out, "split=new", moves)
    (out / ".split=new.staging" / "new").mkdir(parents=True)
    (out / ".split=new.staging" / "new" / "x").write_text("planted")
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as info:
        write_latents_partition(out)
    assert "not a journal this pipeline wrote" in one_line(info) and "nothing was changed" in str(info.value)
    assert snapshot(tmp_path) == before


def test_symbolic_links_in_a_publication_are_refused_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".split=new.staging").symlink_to(elsewhere)  # staging through a link
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="a symbolic link where a publication keeps its own temporary files"):
        write_latents_partition(out)
    assert snapshot(tmp_path) == before
    (out / ".split=new.staging").unlink()
    (out / "split=new").symlink_to(elsewhere, target_is_directory=True)  # the output itself a link
    before = snapshot(tmp_path)
    with pytest.raises(
        DataError, match="split=new: a symbolic link to a directory; publishing would replace"
    ):
        write_latents_partition(out, overwrite=True)
    assert snapshot(tmp_path) == before and not list(out.glob(".split=new.*"))


CONCURRENT_WRITER = """
import sys, time
import numpy as np
from pipeline.latents.parquet import LatentBatch
from pipeline.latents.writer import write_partition
from pipeline.latents.parquet import RowScores
from pipeline.platform.errors import DataError

def batches(seed):
    rng = np.random.default_rng(seed)
    for start in range(0, 600, 100):
        time.sleep(0.1)  # slow enough that the two commands overlap
        yield LatentBatch("new", np.arange(start, start + 100), np.zeros(100, np.int64),
                          rng.normal(size=(100, 4)), rng.normal(size=(100, 4)),
                          RowScores(np.zeros(100), None, None, np.zeros(100)))

try:
    written = write_partition(sys.argv[1], "new", batches(int(sys.argv[2])), 4, {"writer": sys.argv[2]})
    print(written, flush=True)
except DataError as error:
    print("refused:", error, flush=True)
"""


def test_two_concurrent_encodes_into_one_output_take_turns(tmp_path):
    """Same output, same split, started together: one publishes a complete partition, the other
    waits for it and then refuses to overwrite; no staging of either is lost or mixed."""
    out = tmp_path / "latents_new"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(out), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    outputs = sorted(stdout.strip() for stdout, _ in results)
    assert outputs[0] == "600" and outputs[1].startswith("refused:") and "partition exists" in outputs[1]
    assert any("another command is writing or reading here; waiting" in stderr for _, stderr in results)
    table = pq.read_table(out / "split=new" / "part-0.parquet")
    assert table.num_rows == 600 and table["id"].to_pylist() == list(range(600))
    assert sorted(p.name for p in out.iterdir()) == ["split=new"]


def write_latents_partition(out, overwrite: bool = False) -> int:
    batch = LatentBatch(
        "new",
        np.arange(3),
        np.zeros(3, np.int64),
        np.zeros((3, 2)),
        np.zeros((3, 2)),
        RowScores(np.zeros(3), None, None, np.zeros(3)),
    )
    return write_partition(out, "new", [batch], 2, {}, overwrite=overwrite)


def snapshot(root) -> dict:
    """Every path under root (links as links) with its bytes or link target."""
    return {
        str(p.relative_to(root)): (
            os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
        )
        for p in sorted(root.rglob("*"))
    }


def test_label_names_with_commas_and_quotes_survive_the_csv_outputs():
    """confusion.csv (and umap.csv, through the same writer) read back with any CSV reader."""
    import csv

    from pipeline.evaluation.latent_quality import _latent_probes
    from pipeline.evaluation.probes import ProbeProtocol
    from pipeline.platform.params.config import Params

    rng = np.random.default_rng(0)
    names = ["a, b", 'say "c"', "plain"]
    labels = {split: np.arange(n) % 3 for split, n in (("train", 90), ("test", 30))}
    z = {split: rng.normal(size=(len(y), 2)) + y[:, None] * 4 for split, y in labels.items()}
    protocol = ProbeProtocol.of(Params().evaluate.probe, knn_k=3, seed=0)
    _, confusion = _latent_probes(z, labels, names, protocol, np.arange(100, 130))
    rows = list(csv.reader(io.StringIO(confusion)))
    assert rows[0] == ["actual", "predicted", "id"] and len(rows) == 31
    assert [int(row[2]) for row in rows[1:]] == list(range(100, 130))
    assert [row[0] for row in rows[1:]] == [names[y] for y in labels["test"]]
    assert {row[1] for row in rows[1:]} <= set(names)


def test_what_the_long_fuzz_found_is_refused_in_one_line(tmp_path):
    """Two cases benchmarks/fuzz_readers.py found: an IDX header with a dimension of 0, and a
    CSV whose header names one column twice (Arrow then cannot say which one is meant)."""
    header = bytes([0, 0, 0x08, 3]) + (4).to_bytes(4, "big") + (4).to_bytes(4, "big") + (0).to_bytes(4, "big")
    with pytest.raises(DataError) as info:
        read_idx_dir(write_idx_dir(tmp_path / "idx", header, gz=False))
    assert "declares examples of shape [4, 0], with a dimension of 0" in one_line(info)
    (tmp_path / "twice.csv").write_text("b,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as info:
        read_table(tmp_path / "twice.csv", "label", None)
    assert "column names ['b'] are given more than once" in one_line(info)
