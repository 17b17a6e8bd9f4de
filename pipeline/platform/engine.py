"""Where a stage's batch work runs: this process (`cluster.engine: local`) or a Ray cluster (`ray`).

The stage logic hands the engine its work and never the other way round:
- `map(fn, items)`: fn over items, results in order (prepare's image decoding, table reads);
  local runs it here (or in a pool of processes when asked), Ray in tasks on the cluster;
- `map_actors(cls, items)`: items through a pool of Ray actors, each building `cls` once
  (encode: the model loaded once per actor from its path);
- `train(fn, config, workers)`: fn on that many Ray Train workers (TF_CONFIG set by Ray).

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
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.platform.choices import AUTO, GIVEN
from pipeline.platform.config import ClusterConfig
from pipeline.platform.errors import ConfigError, PipelineError

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
# Times Ray restarts an actor whose process died (and retries the item it was running).
ACTOR_RESTARTS = 3


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


class RayEngine:
    """A connected Ray cluster: its address, how it was chosen and what it has."""

    name = "ray"

    def __init__(self, cluster: ClusterConfig, address: str, why: str):
        import ray

        resources = ray.cluster_resources()
        self.cluster, self.address, self.why = cluster, address, why
        self.nodes = sum(1 for node in ray.nodes() if node["Alive"])
        self.cpus, self.gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))

    def map(self, fn: Callable, items: Iterable, processes: int | None = None) -> Iterator:
        """fn(item) in Ray tasks (one CPU each), yielded in the items' order; at most two
        tasks per CPU in flight, so the results waiting here stay few. A task whose worker
        dies is retried by Ray; a PipelineError raised in a task is raised here as itself, any
        other error as its cause; a task over cluster.task_timeout stops the stage."""
        import ray

        task = ray.remote(num_cpus=1, max_retries=3)(_call)
        fn_ref = ray.put(fn)
        pending: deque = deque()
        try:
            for item in items:
                pending.append(task.remote(fn_ref, item))
                if len(pending) >= 2 * max(self.cpus, 1):
                    yield _get(pending.popleft(), self.cluster.task_timeout, fn)
            while pending:
                yield _get(pending.popleft(), self.cluster.task_timeout, fn)
        finally:
            for ref in pending:  # an error (or a consumer that stopped): nothing left running
                ray.cancel(ref, force=True)

    def map_actors(self, cls: type, items: list, *, arguments: dict, actors: int) -> Iterator:
        """cls(**arguments)(item) for every item, in a pool of `actors` Ray actors (one GPU
        each when the cluster has GPUs, else one CPU), each built once; results in no
        particular order. An actor whose process dies is restarted and its item retried, up
        to ACTOR_RESTARTS times; a PipelineError raised in an actor is raised here as itself,
        any other failure as one PipelineError.

        Plain actors rather than Ray Data's actor pool: Ray Data 2.60 failed short runs
        with "actors died during initialization" when the last item finished while an
        actor was still starting (2 of 3 runs at 10,000 rows in benchmarks/ray_engine.py).
        """
        import ray
        from ray.util import ActorPool

        actor = ray.remote(
            num_cpus=1,
            num_gpus=1 if self.gpus else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=ACTOR_RESTARTS,
        )(_Actor)
        pool = ActorPool([actor.remote(cls, arguments) for _ in range(max(min(actors, len(items)), 1))])
        for item in items:
            pool.submit(lambda handle, item: handle.run.remote(item), item)
        try:
            while pool.has_next():
                yield pool.get_next_unordered(timeout=self.cluster.task_timeout)
        except TimeoutError:
            raise PipelineError(
                f"a Ray actor running {cls.__name__} took longer than cluster.task_timeout "
                f"({self.cluster.task_timeout} s) on one item; stopped, the previous outputs are "
                "kept"
            ) from None
        except ray.exceptions.RayError as error:
            cause = _cause(error)
            if isinstance(cause, PipelineError):
                raise cause from None
            _log_remote(error)
            raise PipelineError(
                f"a Ray actor running {cls.__name__} failed ({_first_line(cause)}), after "
                f"{ACTOR_RESTARTS} restarts at most; the previous outputs are kept"
            ) from None

    def train(self, fn: Callable[[dict], None], config: dict, workers: int, storage: Path) -> None:
        """fn(config) on `workers` Ray Train workers (one GPU each when the cluster has GPUs).
        storage: Ray Train's own run records (no checkpoints), on storage every node reads."""
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer

        trainer = TensorflowTrainer(
            fn,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=self.gpus > 0),
            run_config=RunConfig(storage_path=str(storage), name="train"),
        )
        outcome: list = []  # fit() has no timeout: it runs in a daemon thread, which cannot outlive the stage
        fitting = threading.Thread(target=lambda: outcome.append(_outcome(trainer.fit)), daemon=True)
        fitting.start()
        fitting.join(self.cluster.train_timeout)
        if fitting.is_alive():
            ray.shutdown()  # stops the workers
            raise PipelineError(
                f"Ray training took longer than cluster.train_timeout "
                f"({self.cluster.train_timeout} s); stopped, the previous model is kept"
            )
        if isinstance(outcome[0], Exception):  # Ray wraps what a worker raised, a user error included
            cause = _cause(outcome[0])
            if not isinstance(cause, PipelineError):
                _log_remote(outcome[0])
            raise cause from None

    def shared(self, path: str | Path) -> Path:
        """The absolute path the cluster's processes use (they do not share this working directory)."""
        return Path(path).resolve()

    def describe(self) -> dict:
        return {
            "engine": "ray",
            "address": self.address,
            "address_from": self.why,
            "nodes": self.nodes,
            "cpus": self.cpus,
            "gpus": self.gpus,
        }


@contextlib.contextmanager
def open_engine(cluster: ClusterConfig) -> Iterator[LocalEngine | RayEngine]:
    """The engine of `cluster.engine`; under Ray, connected for the block and disconnected
    after it (a Ray started here for the stage is stopped)."""
    if cluster.engine == "local":
        yield LocalEngine(cluster)
        return
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "cluster.engine 'ray' needs Ray: install the cluster extra (make install EXTRAS=cluster, "
            "or pip install -e '.[cluster]'), or set cluster.engine: local"
        ) from None
    address, why = resolve_address(cluster.address, os.environ)
    if address is not None:
        probe(address, why)
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


def _call(fn: Callable, item):
    return fn(item)


class _Actor:
    """A Ray actor holding one cls(**arguments), built once in its process."""

    def __init__(self, cls: type, arguments: dict):
        self.function = cls(**arguments)

    def run(self, item):
        return self.function(item)


def _first_line(error: BaseException) -> str:
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _get(ref, timeout: int, fn: Callable):
    import ray

    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)  # the hung task's worker, freed for what runs next
        raise PipelineError(
            f"a Ray task running {getattr(fn, '__name__', fn)} took longer than "
            f"cluster.task_timeout ({timeout} s); stopped, the previous outputs are kept"
        ) from None
    except ray.exceptions.RayError as error:
        cause = _cause(error)
        if not isinstance(cause, PipelineError):
            _log_remote(error)
        raise cause from None


def _outcome(fn: Callable):
    try:  # fn()'s result, or the exception it raised, for the caller to raise
        return fn()
    except Exception as error:
        return error


def _log_remote(error: BaseException) -> None:
    """Ray's error text (it holds the worker's traceback) to the stage's log, where the workers' output
    is not."""
    log.error("the Ray worker's report:\n%s", error)


def _cause(error: BaseException) -> BaseException:
    """The user error a Ray error carries (a PipelineError raised in a task, in an actor's
    __init__ or call, or in a training worker), found along its causes (Ray keeps them in
    `cause`, in `args`, as __cause__ or, from Ray Train, by worker); else the innermost
    error that is not Ray's own wrapper (the worker's exception, not its header)."""
    import ray

    pending, seen, innermost = [error], set(), error
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, PipelineError) and not isinstance(current, ray.exceptions.RayError):
            return current  # not Ray's RayTaskError(PipelineError), whose text starts with Ray's header
        seen.add(id(current))
        if not isinstance(current, ray.exceptions.RayError) and current is not error:
            innermost = current
        pending += [
            getattr(current, "cause", None),
            current.__cause__,
            *(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)),
            *getattr(current, "worker_failures", {}).values(),
        ]
    return innermost
