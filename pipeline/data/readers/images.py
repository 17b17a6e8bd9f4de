"""Image folders: one subfolder per class of PNG/JPEG files, decoded to uint8 pixels."""

import functools
import os
from pathlib import Path

import numpy as np

from pipeline.data.readers.source_dataset import Dataset, chunk_rows
from pipeline.data.resolve_data import AUTO_SIZE_SAMPLE, resolve_color, resolve_image_size
from pipeline.platform.choices import Choice
from pipeline.platform.engine import LocalEngine
from pipeline.platform.errors import DataError
from pipeline.platform.io import allocate

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# Image folders with at least this many files are decoded by worker processes (one per core)
# under the local engine.
PARALLEL_DECODE_FILES = 4096
# The most pixels one image may have (8192 × 8192, 192 MiB as RGB), checked from its header
# before it is decoded: a small file can declare a huge image (a decompression bomb).
MAX_IMAGE_PIXELS = 8192 * 8192


def read_image_folder(
    path: Path, size: tuple[int, int] | str | None, color: str, scratch: Path | None = None, engine=None
) -> Dataset:
    """One subfolder per class of PNG/JPEG files -> uint8 (n, H, W, 1 or 3).

    Decoded into a preallocated array (a scratch memory map when given), in chunks of files;
    large folders by worker processes, one per core, or under `cluster.engine: ray` in Ray
    tasks (pipeline.platform.engine). color "auto": decoded as RGB, then kept or made grey by
    pipeline.data.resolve_data.resolve_color (the reader says which image has colour).

    Args:
        path: the folder of class folders.
        size: [H, W] to resize every image to, None (every image must share one size) or
            "auto" (pipeline.data.resolve_data.resolve_image_size).
        color: data.images.color: auto, grey or rgb.
        scratch: a directory for the decoded array (a memory map), or None.
        engine: where chunks of files are decoded (None: worker processes here).

    Returns:
        The Dataset, with the colour choice in its choices.
    """
    engine = engine or LocalEngine()
    classes, files = _class_files(path)
    paths = [f for f, _ in files]
    size, choices = _image_size(paths, size)
    x, step = _decode_folder(path, paths, size, "rgb" if color == "auto" else color, scratch, engine)
    if color == "auto":
        choices["data.images.color"] = resolve_color(_first_coloured(x, step))
        x = x if choices["data.images.color"].value == "rgb" else _grey(x, step, scratch)
    x = x[..., None] if x.ndim == 3 else x
    y = np.array([label for _, label in files], np.int32)
    return Dataset(
        x=x, y=y, label_names=tuple(classes), source="image_folder", path=str(path), choices=choices
    )


def _class_files(path: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(the class folders' names, sorted; (file, class index) of every PNG/JPEG file in them)."""
    if not path.is_dir():
        raise DataError(f"{path}: data.source 'image_folder' needs a directory with one subfolder per class")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((path / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{path}: no PNG or JPEG files in class subfolders")
    return classes, files


def _image_size(
    paths: list[Path], size: tuple[int, int] | str | None
) -> tuple[tuple[int, int] | None, dict[str, Choice]]:
    """(the size every image is resized to, None to keep them as read; data.images.size's choice
    when it is auto). The rule is resolve_data's; the reader gives it the sizes it sampled."""
    if size != "auto":
        return size, {}
    choice = resolve_image_size(sampled_sizes(paths))
    return (None if choice.value == "as read" else tuple(choice.value)), {"data.images.size": choice}


def _decode_folder(
    path: Path, paths: list[Path], size: tuple[int, int] | None, color: str, scratch: Path | None, engine
) -> tuple[np.ndarray, int]:
    """(uint8 (n, H, W) or (n, H, W, 3) of every file, the files per chunk), decoded by the engine in
    chunks of files: by worker processes, one per core, for a large folder."""
    reference = (paths[0], decode_images(paths[:1], size, color)[0].shape)
    x = allocate(scratch, "images_x", (len(paths), *reference[1]), np.uint8)
    # Chunks of at most 1,024 images: small enough to keep every worker busy to the end.
    step = min(chunk_rows(x[0].nbytes), 1024)
    root = engine.shared(path)  # where the cluster's tasks find the files
    chunks = [
        [root / f.relative_to(path) for f in paths[start : start + step]]
        for start in range(0, len(paths), step)
    ]
    decode = functools.partial(decode_images, size=size, color=color, reference=reference)
    processes = (os.cpu_count() or 1) if len(paths) >= PARALLEL_DECODE_FILES else 1
    _fill(x, engine.map(decode, chunks, processes=processes), step)
    return x, step


def sampled_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(height, width) of at most AUTO_SIZE_SAMPLE of the files, evenly spread. Reads headers only."""
    from PIL import Image

    sample = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(len(paths), AUTO_SIZE_SAMPLE))]
    sizes = []
    for file in sample:
        try:
            with Image.open(file) as image:
                sizes.append(image.size[::-1])  # PIL: (W, H)
        except Exception as error:
            raise DataError(f"{file}: cannot read image ({type(error).__name__}: {error})") from None
    return sizes


def _first_coloured(x: np.ndarray, step: int) -> int | None:
    """The first image (in file order) with a pixel whose channels differ, or None."""
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        coloured = np.flatnonzero(
            (chunk.max(axis=-1) != chunk.min(axis=-1)).reshape(len(chunk), -1).any(axis=1)
        )
        if len(coloured):
            return start + int(coloured[0])
    return None


def _grey(x: np.ndarray, step: int, scratch: Path | None) -> np.ndarray:
    """RGB images whose channels are equal, as their one grey channel."""
    grey = allocate(scratch, "images_grey", x.shape[:-1], np.uint8)
    for start in range(0, len(x), step):
        grey[start : start + step] = x[start : start + step, ..., 0]
    return grey


def _fill(x: np.ndarray, chunks, step: int) -> None:
    for i, chunk in enumerate(chunks):
        x[i * step : i * step + len(chunk)] = chunk


def decode_images(
    paths: list[Path], size: tuple[int, int] | None, color: str, reference: tuple[Path, tuple] | None = None
) -> np.ndarray:
    """uint8 (n, H, W) or (n, H, W, 3) of image files, each of the shape of `reference`
    ((file, shape); the first of `paths` when None)."""
    out = None
    for i, file in enumerate(paths):
        pixels = _decode(file, size, color)
        reference = reference or (file, pixels.shape)
        if pixels.shape != reference[1]:
            raise DataError(
                f"{file}: image of size {pixels.shape[:2]} but {reference[0]} is {reference[1][:2]}; "
                "set data.images.size (auto, or [height, width]) to resize them all"
            )
        if out is None:
            out = np.empty((len(paths), *pixels.shape), np.uint8)
        out[i] = pixels
    return out


def _decode(file: Path, size: tuple[int, int] | None, color: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) of one image file, resized to `size` when given; DataError for a
    file too large (its header read first) or one PIL cannot decode."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{file}: image of {width} × {height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS:,} pixels an image may have; shrink it before training"
                )
            image = image.convert("L" if color == "grey" else "RGB")
            if size:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL: (W, H)
            return np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own limit, met before the header's size is ours
        raise DataError(
            f"{file}: image of more than the {MAX_IMAGE_PIXELS:,} pixels an image may have ({error})"
        ) from None
    # A hostile or broken file can make any of PIL's decoders raise almost anything
    # (OSError, ValueError, SyntaxError, struct.error, zlib.error, DecompressionBombError):
    # every one is this file's problem, said in one line.
    except Exception as error:
        raise DataError(f"{file}: cannot read image ({type(error).__name__}: {error})") from None
