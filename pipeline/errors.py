"""User-facing errors and the wrapper that turns them into one line and a non-zero exit."""

import logging
import os
import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A mistake in the user's params or data: reported in one line, never a traceback."""


class ConfigError(PipelineError):
    """A key in params.yaml is unknown, mistyped or out of range."""


class DataError(PipelineError):
    """An input file is missing, unreadable or does not hold what was expected."""


EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`; a PipelineError becomes `error: ...` on stderr and exit 2.

    Stages import TensorFlow inside `main`, after params are validated, so a bad
    params.yaml fails in a second; its C++ start-up chatter is silenced unless asked for
    (TF_CPP_MIN_LOG_LEVEL, VAE_PIPELINE_TF_LOGS=1: see pipeline.console).
    """
    from pipeline.console import quiet_native_startup

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)
    logging.getLogger("pipeline").setLevel(logging.INFO)  # our progress; others' warnings only
    try:
        with quiet_native_startup():
            main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
