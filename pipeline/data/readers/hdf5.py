"""What an HDF5 file (an .h5ad) may hold before a reader touches its data.

HDF5 lets a file point elsewhere: an external link names an object in another file, an
external dataset keeps its bytes in other (raw) files, a virtual dataset maps other files'
datasets. Read blindly, a crafted file's X can be any file on the machine, and its bytes go
into the prepared data, the latents and the explorer page users share. So every object a
reader opens is reached through hard links only, stored in the file itself, of the dtype
expected (real numbers; no complex values cut to their real part), and stores what its
shape declares: a 17 KB file may declare a 10M × 100k matrix whose chunks it never wrote.
"""

import math
import os
import shutil
from pathlib import Path

from pipeline.platform.errors import DataError

MAX_DEPTH = 8  # groups below an obs or var column (a categorical's codes and categories are one down)


def checked(path: Path, file, name: str, numbers: bool = False):
    """file[name] (a group or a dataset) reached through hard links only; a dataset checked by
    `_check_dataset` (real numbers only when `numbers`)."""
    import h5py

    element = file
    for part in name.strip("/").split("/"):
        link = element.get(part, getlink=True) if isinstance(element, h5py.Group) else None
        if link is None:
            raise DataError(f"{path}: no {name!r} in the file")
        if not isinstance(link, h5py.HardLink):
            where = (
                f"an external link to {link.filename}:{link.path}"
                if isinstance(link, h5py.ExternalLink)
                else f"a soft link to {getattr(link, 'path', '?')}"
            )
            raise DataError(
                f"{path}: {name!r} is {where}; only objects stored in the file itself are read "
                "(anndata writes no links)"
            )
        element = element[part]
    if isinstance(element, h5py.Dataset):
        _check_dataset(path, name, element, numbers)
    return element


def checked_tree(path: Path, file, name: str, depth: int = 0):
    """file[name], and everything below it when it is a group, checked as `checked` does."""
    import h5py

    element = checked(path, file, name)
    if isinstance(element, h5py.Group):
        if depth >= MAX_DEPTH:
            raise DataError(f"{path}: {name!r} nests groups deeper than {MAX_DEPTH}; not an anndata element")
        for member in element:
            checked_tree(path, file, f"{name}/{member}", depth + 1)
    return element


def _check_dataset(path: Path, name: str, dataset, numbers: bool) -> None:
    import h5py

    if dataset.is_virtual:
        raise DataError(f"{path}: {name!r} is a virtual dataset (its data lives in other files); refused")
    if dataset.external:
        files = sorted({str(entry[0]) for entry in dataset.external})
        raise DataError(
            f"{path}: {name!r} keeps its data in external files ({', '.join(files[:3])}); refused"
        )
    text = h5py.check_string_dtype(dataset.dtype) is not None
    if dataset.dtype.kind not in "biuf" and (numbers or not text):  # complex, references, compounds
        raise DataError(f"{path}: {name!r} must hold real numbers. Got dtype {dataset.dtype} instead.")
    if text:
        return
    if dataset.chunks is not None:
        needed = math.prod(math.ceil(s / c) for s, c in zip(dataset.shape, dataset.chunks))
        stored = dataset.id.get_num_chunks()
        if stored < needed:
            raise DataError(
                f"{path}: {name!r} declares shape {list(dataset.shape)} but stores {stored:,} of the "
                f"{needed:,} chunks it needs; the file is corrupt"
            )
    else:
        declared = math.prod(dataset.shape) * dataset.dtype.itemsize
        if dataset.id.get_storage_size() < declared:
            raise DataError(
                f"{path}: {name!r} declares shape {list(dataset.shape)} of {dataset.dtype} ({declared:,} "
                f"bytes) but stores {dataset.id.get_storage_size():,}; the file is corrupt"
            )


def check_room(path: Path, what: str, nbytes: int, scratch: Path | None) -> None:
    """DataError unless `nbytes` (what reading `what` takes) fit: on scratch's disk, or in the
    memory available now when there is no scratch."""
    room = shutil.disk_usage(scratch).free if scratch is not None else available_memory()
    if nbytes > room:
        where = f"the free disk at {scratch}" if scratch is not None else "the memory available"
        raise DataError(f"{path}: reading {what} takes {_gib(nbytes)} but {where} is {_gib(room)}")


def available_memory() -> int:
    """Bytes of memory available without swapping (Linux's MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:,.1f} MiB"
