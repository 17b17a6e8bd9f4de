"""A stage reads only the params it declares.

A stage's params are the ones its dvc.yaml entry lists: DVC re-runs a stage when one of
those changes, and only then. A read of a key the stage does not declare would leave
`dvc repro` saying "up to date" on stale results. So once a stage has loaded its params
(`pipeline.platform.params.load.load_params(..., stage=name)`), every knob it reads is noted
and checked against that list (`ParamWatch`): a warning, or with VAE_PIPELINE_STRICT_PARAMS=1
(the tests set it) an error. The config classes derive from `Knobs`, which notes the reads.
"""

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.platform.errors import ConfigError

log = logging.getLogger(__name__)
STRICT_ENV = "VAE_PIPELINE_STRICT_PARAMS"
# Keys that decide whether a stage finishes in time, never what it writes: any stage may read
# them and none declares them (a change need not re-run anything; a stage that timed out has
# no result to keep and runs again anyway).
NO_RESULT = frozenset({"cluster.task_timeout", "cluster.train_timeout"})


@dataclass
class ParamWatch:
    """The knobs a stage reads, checked against the ones it declares (its dvc.yaml params)."""

    stage: str
    declared: frozenset[str]
    strict: bool
    read: set[str] = field(default_factory=set)

    def note(self, key: str) -> None:
        if key in self.read or key in NO_RESULT:
            return
        self.read.add(key)
        if not declares(self.declared, key):
            message = (
                f"stage {self.stage!r} reads the param {key!r}, which its dvc.yaml entry does not list: "
                f"`dvc repro` would not re-run {self.stage} when it changes (add it to the stage's params)"
            )
            if self.strict:
                raise ConfigError(message)
            log.warning("%s", message)


def declares(declared, key: str) -> bool:
    """Whether dvc.yaml params `declared` cover the dotted `key`: the key itself, or a block
    above it declared whole (train's model, loss and train)."""
    return any(key == d or key.startswith(f"{d}.") for d in declared)


_watch: ParamWatch | None = None
_paths: dict[type, str] = {}  # each config class's dotted prefix ("data.npz."), filled on first use
_knobs: dict[type, frozenset[str]] = {}  # each config class's field names


class Knobs:
    """Base of the config classes: while a stage is watched (`watch`), every knob read is noted."""

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if _watch is not None and not name.startswith("_") and not isinstance(value, Knobs):
            cls = type(self)
            if cls not in _knobs:
                _knobs[cls] = frozenset(f.name for f in dataclasses.fields(cls))
            if name in _knobs[cls]:
                _watch.note(_prefix(cls) + name)
        return value


def _prefix(cls: type) -> str:
    from pipeline.platform.params.config import (
        Params,  # the tree of config classes (which import this module)
    )

    if not _paths:

        def walk(config_class, prefix):
            _paths[config_class] = prefix
            for f in dataclasses.fields(config_class):
                if dataclasses.is_dataclass(f.default):
                    walk(type(f.default), f"{prefix}{f.name}.")

        walk(Params, "")
    return _paths[cls]


def watch(stage: str, declared) -> ParamWatch:
    """Check every knob read from now on against `declared` (a stage's dvc.yaml params)."""
    global _watch
    _watch = ParamWatch(stage, frozenset(declared), strict=os.environ.get(STRICT_ENV) == "1")
    return _watch


def unwatch() -> None:
    global _watch
    _watch = None


def declared_params(dvc_yaml: Path, stage: str) -> list[str]:
    """The params.yaml keys the stage lists in dvc.yaml."""
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise ConfigError(f"{dvc_yaml}: no stage {stage!r}")
    return [key for key in stages[stage].get("params", []) if isinstance(key, str)]
