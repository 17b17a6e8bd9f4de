"""Advisory locks on directories (fcntl.flock): commands that write, or read and write, one
directory at the same time take turns instead of interleaving.

A publication (pipeline.platform.io) holds its root's lock, exclusive, while it recovers and
while it commits; the encode command holds its output's from its first check to its publish;
a model bundle is read under its directory's lock, shared, so a train stage publishing a new
model waits for the readers and they never see half of one. The lock is on the directory
itself (no lock file to leave behind) and the kernel's: a killed holder releases it. Locks
nest within a process: a publication inside a command that already holds its root.
"""

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
_held: dict[str, int] = {}  # directories this process holds (real paths), with their nesting depth


@contextlib.contextmanager
def directory_lock(directory: str | Path, shared: bool = False) -> Iterator[None]:
    """Hold `directory`'s lock (shared: with other readers) for the block, waiting for it
    when another process holds it. A directory that does not exist is not locked: nothing
    in it can be read or replaced."""
    key = os.path.realpath(directory)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: another command is writing or reading here; waiting for it to finish", directory)
            fcntl.flock(fd, mode)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the lock
