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
    """Yield an empty temporary directory; on success it replaces `target` whole.

    The old directory is moved aside just before the new one is renamed in, so `target`
    is always the complete old output or the complete new one, except for the instant
    between the two renames; a run killed there leaves the old one aside, and the next
    run puts it back before anything else.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.parent / f".{target.name}.old"
    if old.exists() and not target.exists():  # a run killed between the two renames
        os.replace(old, target)
    _remove_stale(target.parent.glob(f".{target.name}.*.tmp"))
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
