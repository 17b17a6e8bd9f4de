"""Atomic outputs, and the publish protocol that makes a stage's outputs change all together or not at all.

One file: `atomic_path` writes beside the target under a temporary name and renames it
into place; a rename within one directory is atomic.

A stage's outputs (several files and directories under one `root`): a `Publication(root, name)`
publishes them as one, by this protocol, which holds under SIGKILL at any instant:

1. Stage. The stage writes its complete new outputs into root/.<name>.staging/new/; nothing
   under a final name changes. A failure or a kill here leaves the previous outputs as
   they were, and the staging is discarded (rolled back) before the next run stages.
2. Commit. Every staged file is fsynced; then the journal root/.<name>.journal, listing every
   rename, is written under a temporary name, fsynced and renamed into place. Its presence
   is the commit point: from here on the new outputs will be published, by this run or,
   after a kill, by the next one.
3. Roll forward. For each entry the previous output, if any, is renamed aside into the
   staging directory, then the new one onto its name. A step already done is skipped, so
   replaying the journal from the start finishes a run killed at any point of it.
4. Clean up. The staging directory (now holding the previous outputs) is removed, then
   the journal.

Its `recover()` rolls a journalled publication forward and discards an unjournalled
staging. Every stage calls it for its outputs before it reads or computes anything, and
every publication calls it before staging. So after a kill a stage's outputs are the
previous run's whole, or the new run's whole, or, only between a kill during step 3 and
the next run, a mix that a journal beside them marks and the next run completes. Every
path of a publication lies directly under `root`, so each rename is within one directory.

A publication holds root's lock (pipeline.platform.locks) from its recovery to its commit,
so two commands publishing under one root take turns. Nothing read back is trusted: a
journal must list renames from this publication's staging onto single names directly under
root (a planted one cannot move a file elsewhere), and a symbolic link where the staging,
the journal or a directory output would go is refused, never followed or replaced.

Fault points (pipeline.platform.faults) let the reliability tests stop a process at each
step of the protocol.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.platform.errors import DataError
from pipeline.platform.faults import fault_point
from pipeline.platform.locks import directory_lock


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent.glob(f".{target.stem}.*.tmp{target.suffix}"))
    # The temporary name keeps the suffix: Keras only saves to paths ending in ".keras".
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the output from the rest of a team
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def staged_outputs(root: str | Path, name: str):
    """`Publication(root, name).staged()`."""
    return Publication(Path(root), name).staged()


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty directory; on success it replaces `target` whole (a publication named after it)."""
    target = Path(target)
    with staged_outputs(target.parent, target.name) as new:
        (new / target.name).mkdir()
        yield new / target.name


def recover(root: str | Path, name: str) -> None:
    """`Publication(root, name).recover()`."""
    Publication(Path(root), name).recover()


def recover_dir(target: str | Path) -> None:
    """recover() for an `atomic_dir(target)` publication."""
    recover(Path(target).parent, Path(target).name)


class Publication:
    """A stage's outputs under `root`, published as one by the protocol above. `name` is unique
    under root (the stage's): a stage makes one, recovers it before it reads or computes
    anything, and writes its outputs in `staged()`."""

    def __init__(self, root: str | Path, name: str):
        self.root = root = Path(root)
        self.staging = root / f".{name}.staging"
        self.journal = root / f".{name}.journal"
        self._journal_tmp = root / f".{name}.journal.tmp"

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield an empty staging directory; on success each of its entries replaces its namesake
        under root, all of them or none. Entries the stage did not write stay as they are. Holds
        root's lock throughout: a second publication under root waits, and never finds (and
        discards) this one's staging."""
        self.root.mkdir(parents=True, exist_ok=True)
        with directory_lock(self.root):
            self.recover()
            new = self.staging / "new"
            new.mkdir(parents=True)
            try:
                yield new
            except BaseException:
                shutil.rmtree(self.staging, ignore_errors=True)
                raise
            self.commit(new)

    def recover(self) -> None:
        """Finish (journal present) or discard (no journal) what a killed run left."""
        if not self.root.is_dir():
            return
        with directory_lock(self.root):
            self._refuse_links(self.staging, self.journal, self._journal_tmp)
            if self.journal.exists():
                self._roll_forward(self._moves())
            shutil.rmtree(self.staging, ignore_errors=True)
            self._journal_tmp.unlink(missing_ok=True)

    def commit(self, new: Path) -> None:
        with directory_lock(self.root):
            moves = [[str(entry.relative_to(self.root)), entry.name] for entry in sorted(new.iterdir())]
            try:
                for _, target in moves:
                    if (self.root / target).is_symlink() and (self.root / target).is_dir():
                        raise DataError(
                            f"{self.root / target}: a symbolic link to a directory; publishing would "
                            "replace the link, not write where it points. Link a parent directory instead"
                        )
                _sync_tree(new)
                fault_point("staged", self._journal_tmp)
                with open(
                    self._journal_tmp, "x", encoding="utf-8"
                ) as f:  # "x": never through a link planted since
                    json.dump({"moves": moves}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(self._journal_tmp, self.journal)
                _sync_dir(self.root)
            except BaseException:  # not committed: roll back
                self.recover()
                raise
            fault_point("journaled")
            self._roll_forward(moves)

    def _moves(self) -> list[list[str]]:
        """The journal's renames, each from this publication's staging/new onto the same
        single name under root."""
        try:
            moves = json.loads(self.journal.read_text(encoding="utf-8"))["moves"]
            valid = isinstance(moves, list) and all(
                isinstance(m, list)
                and len(m) == 2
                and all(isinstance(p, str) for p in m)
                and "/" not in m[1]
                and m[1] not in ("", ".", "..")
                and m[0] == f"{self.staging.name}/new/{m[1]}"
                for m in moves
            )
            problem = None if valid else "a rename that leaves this publication's staging or root"
        except (OSError, ValueError, KeyError, TypeError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem:
            raise DataError(
                f"{self.journal}: not a journal this pipeline wrote ({problem}); nothing was changed. "
                f"If no command is writing to {self.root}, remove it and {self.staging}, then run again"
            )
        return moves

    def _refuse_links(self, *paths: Path) -> None:
        for path in paths:
            if path.is_symlink():
                raise DataError(
                    f"{path}: a symbolic link where a publication keeps its own temporary files; "
                    "nothing was changed. Remove the link, then run again"
                )

    def _roll_forward(self, moves: list[list[str]]) -> None:
        for i, (staged, target) in enumerate(moves):
            staged, target = self.root / staged, self.root / target
            if not os.path.lexists(staged):
                continue  # published by the run this one finishes
            if os.path.lexists(target):
                os.replace(target, self.staging / f"previous-{i}")
                fault_point("aside")  # the previous output moved aside, the new one not yet in
            os.replace(staged, target)
            fault_point("renamed")  # one output published, the others not yet
        _sync_dir(self.root)
        fault_point("published")
        shutil.rmtree(self.staging, ignore_errors=True)  # a replay may find it gone already
        self.journal.unlink(missing_ok=True)
        _sync_dir(self.root)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under root: the data is on disk before the journal says it is ready."""
    for directory, _, files in os.walk(root):
        for file in files:
            fd = os.open(os.path.join(directory, file), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(directory))


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale(paths) -> None:
    """Temporaries left by a killed run of the same output (runs of one output never overlap)."""
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
