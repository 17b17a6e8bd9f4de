"""User-facing errors: pipeline.platform.console.as_command turns them into one line and a non-zero exit."""


class PipelineError(Exception):
    """A mistake in the user's params or data: reported in one line, never a traceback."""


class ConfigError(PipelineError):
    """A key in params.yaml is unknown, mistyped or out of range."""


class DataError(PipelineError):
    """An input file is missing, unreadable or does not hold what was expected."""
