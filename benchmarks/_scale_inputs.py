"""The synthetic data of benchmarks/scale.py, written chunk by chunk so any size fits: an npz
of 28×28 images, a messy CSV and a folder of PNGs.
"""

import zipfile
from pathlib import Path

import numpy as np

SIDE, CLASSES = 28, 10


def write_npz(path: Path, rows: int, seed: int = 0, chunk: int = 100_000) -> None:
    """An uncompressed npz of x (rows, 28, 28) uint8 and y (rows,) int64, written chunk by chunk.

    Each class is a smooth random prototype; an example is its prototype plus noise.
    """
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, SIDE)
    prototypes = (
        np.stack(
            [
                np.clip(
                    sum(
                        np.outer(np.sin(2 * np.pi * (a * grid + b)), np.cos(2 * np.pi * (c * grid + d)))
                        for a, b, c, d in rng.uniform(0, 2, size=(3, 4))
                    ),
                    -1,
                    1,
                )
                for _ in range(CLASSES)
            ]
        )
        * 100
        + 128
    )
    labels = np.arange(rows) % CLASSES
    rng.shuffle(labels)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": (rows, SIDE, SIDE)}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, rows, chunk):
                y = labels[start : start + chunk]
                noise = rng.normal(0, 30, size=(len(y), SIDE, SIDE))
                f.write(np.clip(prototypes[y] + noise, 0, 255).astype(np.uint8).tobytes())
        with archive.open("y.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, labels)


def write_csv(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    """A messy table of `rows` rows, written chunk by chunk (pyarrow's CSV writer)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        z = rng.normal(size=n)
        stamp = np.datetime64("2017-01-01T00:00:00") + rng.integers(0, 365 * 86_400, n).astype(
            "timedelta64[s]"
        )
        gender = rng.choice(["Male", "Female", "Unknown", ""], n, p=[0.6, 0.3, 0.05, 0.05])
        batch = pa.table(
            {
                "idNum": [f"17-{i:09d}" for i in range(start, start + n)],
                "date": pa.array(stamp, pa.timestamp("s")),
                "problem": np.where(z > 0, "suspicious", "traffic"),
                "gender": pa.array(gender).cast(pa.string()),
                "race": rng.choice(
                    ["White", "Black", "Unknown", "East African", "Latino", "Asian", "Other"], n
                ),
                "neighborhood": [f"Neighborhood number {k}" for k in rng.integers(0, 87, n)],
                "lat": 44.95 + 0.02 * z + rng.normal(0, 0.01, n),
                "long": -93.27 + rng.normal(0, 0.02, n),
                "precinct": rng.integers(1, 6, n),
                "searches": rng.poisson(0.4, n),
                "speed": np.round(50 + 10 * z + rng.normal(0, 3, n), 2),
            }
        )
        if writer is None:
            writer = pacsv.CSVWriter(str(path), batch.schema)
        writer.write_table(batch)
    writer.close()


def write_png_folder(folder: Path, images: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        pixels = rng.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"class{i % CLASSES}" / f"{i}.png")
