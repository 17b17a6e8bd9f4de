"""The Ray engine (`cluster.engine: ray`): batch work on a connected Ray cluster.

`RayEngine.map` runs fn over items in Ray tasks, `map_actors` puts items through a pool of
plain Ray actors (each building its callable once), `train` runs fn on Ray Train workers.
A failure on the cluster reaches the stage as the user's PipelineError it carries, or as one
PipelineError naming what failed, the worker's report in the log; a call over
cluster.task_timeout (or training over cluster.train_timeout) stops the stage.
pipeline.platform.engine connects it (`open_engine`); Ray is imported only when used.
"""

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.platform.errors import PipelineError
from pipeline.platform.params.config import ClusterConfig

log = logging.getLogger(__name__)
# Times Ray restarts an actor whose process died (and retries the item it was running).
ACTOR_RESTARTS = 3


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

        pool = self._actor_pool(cls, arguments, max(min(actors, len(items)), 1))
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
            raise _actor_failure(cls, error) from None

    def _actor_pool(self, cls: type, arguments: dict, actors: int):
        """`actors` Ray actors, each holding one cls(**arguments): one GPU each when the cluster has
        GPUs, else one CPU; restarted (and their item retried) up to ACTOR_RESTARTS times."""
        import ray
        from ray.util import ActorPool

        actor = ray.remote(
            num_cpus=1,
            num_gpus=1 if self.gpus else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=ACTOR_RESTARTS,
        )(_Actor)
        return ActorPool([actor.remote(cls, arguments) for _ in range(actors)])

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


def _actor_failure(cls: type, error: BaseException) -> PipelineError:
    """What a failed actor call raises in the stage: the PipelineError it carries as itself, any
    other failure as one PipelineError (its report logged)."""
    cause = _cause(error)
    if isinstance(cause, PipelineError):
        return cause
    _log_remote(error)
    return PipelineError(
        f"a Ray actor running {cls.__name__} failed ({_first_line(cause)}), after "
        f"{ACTOR_RESTARTS} restarts at most; the previous outputs are kept"
    )


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
