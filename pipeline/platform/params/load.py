"""params.yaml read once and checked before any work starts: an unknown key, a wrong type or
an out-of-range value raises ConfigError naming the dotted key, what was expected and what
was given (pipeline.platform.params.config_checker), then the rules across keys
(pipeline.platform.params.rules). The rest of the code receives the frozen config objects
(pipeline.platform.params.config), never the raw dict.

A stage loads them with `load_params(..., stage=name)`: from then on every knob it reads
is checked against the params its dvc.yaml entry declares (pipeline.platform.params.param_watch).
"""

import logging
from pathlib import Path
from typing import Any

import yaml

from pipeline.platform.errors import ConfigError
from pipeline.platform.params.config import Params, leaf_keys, lookup
from pipeline.platform.params.config_checker import UniqueKeyLoader, build, given_in, one_line
from pipeline.platform.params.param_watch import declared_params, watch
from pipeline.platform.params.rules import check_combinations

log = logging.getLogger(__name__)


def load_params(path: str | Path = "params.yaml", stage: str | None = None) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the first bad key.

    Keys the file leaves out take the code's defaults (the shipped params.yaml lists the
    same values); the keys filled in are logged, so a lost block does not go unnoticed.
    With `stage`, the knobs read from then on are watched against the params the stage
    declares in the dvc.yaml beside `path`, where there is one (`ParamWatch`).
    """
    path = Path(path)
    try:
        # UniqueKeyLoader: a SafeLoader
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (expected the pipeline's params.yaml)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({one_line(error)})") from None
    except ConfigError as error:  # a duplicate key
        raise ConfigError(f"{path}: {error}") from None
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty; expected the pipeline's params "
            "(restore the shipped file with `git checkout params.yaml`)"
        )
    params = parse_params(raw, source=str(path))
    missing = missing_keys(raw)
    if missing:
        log.warning(
            "%s does not set %s; using the defaults",
            path,
            ", ".join(f"{key}={value!r}" for key, value in missing.items()),
        )
    if stage is not None and (path.parent / "dvc.yaml").is_file():  # without one, no DVC to re-run a stage
        watch(stage, declared_params(path.parent / "dvc.yaml", stage))
    return params


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    params = build(Params, raw, key="", source=source)
    check_combinations(params, source)
    return params


def missing_keys(raw: dict) -> dict[str, Any]:
    """{dotted key: default} for every leaf key that `raw` leaves out."""
    defaults = Params()
    out = {}
    for key in leaf_keys():
        if not given_in(raw, key):
            default = lookup(defaults, key)
            out[key] = list(default) if isinstance(default, tuple) else default
    return out
