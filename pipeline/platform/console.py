"""What a stage prints: one line per user error, progress, no TensorFlow start-up chatter.

On a machine without a GPU, TensorFlow's C++ runtime prints lines such as
`E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)` before its own log-level
setting applies; they read like failures and are not. `quiet_native_startup` passes
stderr through a filter that drops exactly those known lines and nothing else, so real
errors and Python tracebacks still show. Set VAE_PIPELINE_TF_LOGS=1 to see everything.
"""

import contextlib
import errno
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

from pipeline.platform.errors import PipelineError

EXIT_USER_ERROR = 2
EXIT_MACHINE_ERROR = 3
# What the machine, not the code, gets wrong: one line, like a user error, not a traceback.
MACHINE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
SHOW_ALL = "VAE_PIPELINE_TF_LOGS"
KNOWN_NOISE = re.compile(
    "|".join(
        [
            r"All log messages before absl::InitializeLog\(\) is called",
            r"oneDNN custom operations are on",
            r"Could not find cuda drivers on your machine",
            r"failed call to cuInit",
            r"Unable to register cu(DNN|FFT|BLAS) factory",
            r"computation placer already registered",
            r"TF-TRT Warning: Could not find TensorRT",
            r"This TensorFlow binary is optimized to use available CPU instructions",
            r"rebuild TensorFlow with the appropriate compiler flags",
        ]
    ).encode()
)


def as_command(main: Callable[[], None]) -> None:
    """Run a stage's `main`; a PipelineError becomes `error: ...` on stderr and exit 2.

    Stages import TensorFlow inside `main`, after params are validated, so a bad
    params.yaml fails in a second; its C++ start-up chatter is silenced unless asked for
    (TF_CPP_MIN_LOG_LEVEL, or VAE_PIPELINE_TF_LOGS=1 to show it).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    logging.getLogger("pipeline").setLevel(logging.INFO)  # our progress; others' warnings only
    try:
        with quiet_native_startup():
            main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        _exit(EXIT_USER_ERROR)
    except OSError as error:
        if error.errno not in MACHINE_ERRORS:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror}{where}; the previous outputs are kept", file=sys.stderr)
        _exit(EXIT_MACHINE_ERROR)


def _exit(code: int) -> None:
    """Exit with `code`, the error said and every output already settled. Once TensorFlow
    has run, skip the interpreter's teardown: after a fit stopped by an error it can hang
    on TensorFlow's threads (seen once in four `make test` runs: a train stage that had
    printed its error and never exited)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if "tensorflow" in sys.modules:
        os._exit(code)
    sys.exit(code)


@contextlib.contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Filter file descriptor 2 (C++ and Python writes alike) while the block runs."""
    if os.environ.get(SHOW_ALL) == "1":
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump reads to the end and stops
        thread.join(timeout=10)  # a child process still holding the pipe must not hang the exit
        os.close(original)


def _pump(read_end: int, out: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not KNOWN_NOISE.search(line):
                os.write(out, line)


@contextlib.contextmanager
def timed(part: str) -> Iterator[None]:
    """Log the start and the duration of a part of a stage."""
    log = logging.getLogger("pipeline")
    start = time.perf_counter()
    log.info("%s ...", part)
    yield
    log.info("%s done in %.1f s", part, time.perf_counter() - start)
