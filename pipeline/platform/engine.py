"""Where a stage's batch work runs: this process (`cluster.engine: local`) or a Ray cluster (`ray`).

The stage logic hands the engine its work and never the other way round:
- `map(fn, items)`: fn over items, results in order (prepare's image decoding, table reads);
  local runs it here (or in a pool of processes when asked), Ray in tasks on the cluster;
- `map_actors(cls, items)`: items through a pool of Ray actors, each building `cls` once
  (encode: the model loaded once per actor from its path);
- `train(fn, config, workers)`: fn on that many Ray Train workers (TF_CONFIG set by Ray).

This module chooses and opens the engine, and runs the local one; the Ray engine's work is
pipeline.platform.ray_engine.

Ray is imported only under the Ray engine (the `cluster` extra). What Ray runs reads and
writes files by absolute path: the prepared data and the outputs must be on storage every
node reads (`require_shared`). Pitfalls measured with Ray 2.60: `ray.init` on an address
where nothing answers waits for minutes (so the address is probed first, in seconds);
Keras models do not pickle (actors load them from the path).
"""

import contextlib
import logging
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.platform.choices import AUTO, GIVEN
from pipeline.platform.errors import ConfigError, PipelineError
from pipeline.platform.params.config import ClusterConfig
from pipeline.platform.ray_engine import RayEngine

log = logging.getLogger(__name__)
# Seconds to wait for a cluster's head to accept a connection before saying it does not answer.
CONNECT_TIMEOUT = 5.0
# A Ray head's default port (`ray start --head`), when an address gives none.
DEFAULT_PORT = 6379
# The HTTP/2 client preface and an empty SETTINGS frame; a gRPC server replies with a
# frame of type SETTINGS (4), its fourth byte.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4
# Environment the cluster's processes get from the stage: GPU sharing, the Keras backend,
# TensorFlow's log level and the pipeline's own fault points (tests kill an actor with them).
FORWARDED_ENV = (
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "KERAS_BACKEND",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_ENABLE_ONEDNN_OPTS",
)
FORWARDED_PREFIX = "VAE_PIPELINE_"


class LocalEngine:
    """This process; `map` with processes > 1 spreads the items over that many spawned processes.
    cluster: the params it was opened with (recorded with the outputs)."""

    name = "local"

    def __init__(self, cluster: ClusterConfig | None = None):
        self.cluster = cluster or ClusterConfig()

    def map(self, fn: Callable, items: Iterable, processes: int = 1) -> Iterator:
        if processes <= 1:
            yield from map(fn, items)
            return
        # spawn, not fork: the calling process may hold TensorFlow's threads (the encode command).
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield from pool.map(fn, items)

    def shared(self, path: str | Path) -> Path:
        return Path(path)

    def describe(self) -> dict:
        return {"engine": "local"}


@contextlib.contextmanager
def open_engine(cluster: ClusterConfig) -> Iterator[LocalEngine | RayEngine]:
    """The engine of `cluster.engine`; under Ray, connected for the block and disconnected
    after it (a Ray started here for the stage is stopped)."""
    if cluster.engine == "local":
        yield LocalEngine(cluster)
        return
    ray = _import_ray()
    address, why = resolve_address(cluster.address, os.environ)
    if address is not None:
        probe(address, why)
    _connect(ray, address)
    try:
        engine = RayEngine(cluster, address or "this machine", why)
        log.info(
            "engine: ray at %s (%s): %d node(s), %d CPUs, %d GPUs",
            engine.address,
            why,
            engine.nodes,
            engine.cpus,
            engine.gpus,
        )
        yield engine
    finally:
        ray.shutdown()


def _import_ray():
    """The ray module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "cluster.engine 'ray' needs Ray: install the cluster extra (make install EXTRAS=cluster, "
            "or pip install -e '.[cluster]'), or set cluster.engine: local"
        ) from None
    return ray


def _connect(ray, address: str | None) -> None:
    """ray.init on `address` (None: a new Ray for this stage), the cluster's processes given this
    checkout's pipeline package and the stage's forwarded environment."""
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIX)}
    # The code the cluster runs is this checkout's pipeline package (not this module's own
    # folder, whose name `platform` would shadow the standard library's), shipped with the job.
    runtime_env = {"env_vars": env, "py_modules": [str(Path(__file__).parents[1])]}
    for name in ("ray", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "local": a new Ray for this stage; with no address, ray.init joins any Ray already
    # running on this machine (found through /tmp/ray), another project's or a test's.
    ray.init(
        address=address or "local",
        runtime_env=runtime_env,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )


def resolve_address(address: str, environ) -> tuple[str | None, str]:
    """(address, why): cluster.address, else RAY_ADDRESS, else None (a Ray started here)."""
    if address != AUTO:
        return address, GIVEN
    if environ.get("RAY_ADDRESS"):
        return environ["RAY_ADDRESS"], "RAY_ADDRESS"
    return None, "started for this stage: cluster.address auto, RAY_ADDRESS unset"


def probe(address: str, why: str) -> None:
    """Raise ConfigError within about CONNECT_TIMEOUT seconds unless a Ray head answers at the
    address. Ray's head speaks gRPC (HTTP/2): it answers the HTTP/2 connection preface with
    a SETTINGS frame. `ray.init` itself, given an address where nothing or something else
    listens, waits for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(DEFAULT_PORT))
    problem = None
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT) as connection:
            connection.sendall(HTTP2_PREFACE)
            reply = connection.recv(9)
            if len(reply) < 9 or reply[3] != HTTP2_SETTINGS:
                problem = "something answers, but not a Ray head; is it the port `ray start --head` printed?"
    except ValueError:
        problem = f"{port!r} is not a port number"
    except TimeoutError:
        problem = f"no answer within {CONNECT_TIMEOUT:g} s"
    except OSError as error:
        problem = error.strerror or str(error)
    if problem:
        raise ConfigError(
            f"cluster.address {address} ({why}): no Ray cluster answers there ({problem}); start one "
            "with `ray start --head` on that machine, or set cluster.address: auto and unset "
            "RAY_ADDRESS to run Ray on this machine"
        )


def require_shared(path: str | Path, what: str) -> Path:
    """Inside a Ray worker: the path, or a PipelineError saying this node cannot see it."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"{path}: {what} is not visible on Ray node {socket.gethostname()}; under "
            "cluster.engine ray the project directory must be on storage every node "
            "mounts at the same path (docs/how-to/ray.md)"
        )
    return path
