"""Stage output without TensorFlow's start-up chatter.

On a machine without a GPU, TensorFlow's C++ runtime prints lines such as
`E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)` before its own log-level
setting applies; they read like failures and are not. `quiet_native_startup` passes
stderr through a filter that drops exactly those known lines and nothing else, so real
errors and Python tracebacks still show. Set VAE_PIPELINE_TF_LOGS=1 to see everything.
"""

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

SHOW_ALL = "VAE_PIPELINE_TF_LOGS"
KNOWN_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags",
]).encode())


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
