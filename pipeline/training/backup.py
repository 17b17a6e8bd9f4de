"""Resuming a killed run: backup/ holds the last completed epoch, resumed only by the very
run that wrote it (the same data, every resolved input and the rules that chose them)."""

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from pipeline.data.manifest import Manifest
from pipeline.platform.choices import records
from pipeline.training.resolve_run import TrainingRun


def temporary(stack: contextlib.ExitStack, prefix: str) -> Path:
    """A temporary directory that `stack` removes when it closes."""
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


def run_fingerprint(run: TrainingRun, manifest: Manifest, choices: dict) -> str:
    """What a backup must match to be resumed: the data, every resolved input of the run,
    and the rules that resolved them (rules may change between versions of this code)."""
    text = json.dumps(
        {"run": dataclasses.asdict(run), "data": manifest.fingerprint, "choices": records(choices)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_backup(backup: Path, fingerprint: str) -> bool:
    """True when backup/ holds a completed epoch of this very run; otherwise start it afresh."""
    stamp = backup / "run_fingerprint.txt"
    resumable = (
        (backup / "training_metadata.json").is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8") == fingerprint
    )
    if not resumable:
        shutil.rmtree(backup, ignore_errors=True)
        backup.mkdir(parents=True)
        stamp.write_text(fingerprint, encoding="utf-8")
    return resumable
