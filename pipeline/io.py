"""Atomic outputs: write beside the target under a temporary name, then rename into place.

A stage that fails or is killed midway leaves the previous output untouched and no
half-written file or directory under the final name; the next run of the same output
clears the hidden temporaries a killed run left behind.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent.glob(f".{target.stem}.*.tmp{target.suffix}"))
    # The temporary name keeps the suffix: Keras only saves to paths ending in ".keras".
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `target` whole (`replace_dir`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _restore_aside(target)
    _remove_stale(target.parent.glob(f".{target.name}.*.tmp"))
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(source: str | Path, target: str | Path) -> None:
    """Move the finished directory `source` onto `target` (same file system), replacing it whole.

    The old directory is moved aside just before the new one is renamed in, so `target`
    is always the complete old output or the complete new one, except for the instant
    between the two renames; a run killed there leaves the old one aside, and the next
    write of `target` puts it back before anything else.
    """
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _restore_aside(target)
    old = _aside(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success each of its entries replaces its namesake in `target`.

    For a stage with several outputs in one directory: nothing under `target` changes
    until the whole stage has succeeded, and entries the stage did not write stay as they
    are. Files are renamed in one by one, subdirectories whole (`replace_dir`).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.glob(".staging.*.tmp"))
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".staging.", suffix=".tmp"))
    try:
        yield staging
        for entry in sorted(staging.iterdir()):
            if entry.is_dir():
                replace_dir(entry, target / entry.name)
            else:
                os.replace(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(near: str | Path, clear_stale: bool = False) -> Iterator[Path]:
    """A temporary directory beside `near`, removed afterwards: on the disk the outputs go to,
    not in /tmp, which may be held in memory. clear_stale: first remove the scratch a killed
    run of the same output left (only where runs of that output never overlap: a stage)."""
    parent = Path(near).parent
    parent.mkdir(parents=True, exist_ok=True)
    if clear_stale:
        _remove_stale(parent.glob(f".{Path(near).name}.scratch.*"))
    path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{Path(near).name}.scratch."))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def allocate(scratch: Path | None, name: str, shape: tuple[int, ...], dtype):
    """A new array to fill: a memory-mapped scratch/<name>.npy (file-backed pages the kernel
    can drop), or plain memory when scratch is None."""
    import numpy as np

    if scratch is None:
        return np.empty(shape, dtype)
    return np.lib.format.open_memmap(Path(scratch) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _restore_aside(target: Path) -> None:
    """Undo a run killed between the two renames of `replace_dir`."""
    old = _aside(target)
    if old.exists() and not target.exists():
        os.replace(old, target)


def _remove_stale(paths) -> None:
    """Temporaries left by a killed run of the same output (runs of one output never overlap)."""
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
