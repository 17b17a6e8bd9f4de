"""Fault points: where the reliability tests stop a process with SIGKILL at an exact step
(VAE_PIPELINE_KILL_AT set to a point's name) or fail it there as a full disk would
(VAE_PIPELINE_DISK_FULL_AT). The publish protocol's points (pipeline.platform.io): staged,
journaled, aside (a previous output moved aside, the new one not yet in), renamed (one
output published), published (before clean-up); elsewhere: bundle (inside the model save),
parquet (after the latents' first row group).
"""

import errno
import os
import signal
from pathlib import Path

KILL_AT = "VAE_PIPELINE_KILL_AT"
FULL_AT = "VAE_PIPELINE_DISK_FULL_AT"
# With KILL_AT: a file path; only the first process to reach the point (it creates the
# file) is killed, so a retried task or a restarted actor runs through (the Ray tests).
KILL_ONCE = "VAE_PIPELINE_KILL_ONCE"


def fault_point(name: str, path: str | Path | None = None) -> None:
    """For the reliability tests: SIGKILL this process here when VAE_PIPELINE_KILL_AT is `name`
    (nothing after it runs, no clean-up), or fail as a write to `path` on a full disk would
    (OSError ENOSPC) when VAE_PIPELINE_DISK_FULL_AT is `name`."""
    kill_at, full_at = _faults()
    if kill_at == name and _first_to_die():
        os.kill(os.getpid(), signal.SIGKILL)
    if full_at == name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path else None)


def _faults() -> tuple[str | None, str | None]:
    """The fault points asked for, read at every point: a value cached by a long-lived
    process (a test worker that drove a Ray test setting them) must not outlive the setting."""
    return os.environ.get(KILL_AT), os.environ.get(FULL_AT)


def _first_to_die() -> bool:
    """True unless VAE_PIPELINE_KILL_ONCE names a file that exists; creates it."""
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
