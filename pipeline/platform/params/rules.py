"""The rules across params.yaml's keys: values valid alone but not together (a convolutional
network without convolutions, Ray workers on the local engine, an estimator the proxy cannot
serve). `parse_params` applies them after each value passed its own check."""

from pipeline.platform.choices import AUTO
from pipeline.platform.errors import ConfigError
from pipeline.platform.params.config import ModelConfig, Params


def check_combinations(params: Params, source: str) -> None:
    """Values that are valid alone but not together."""
    _check_network(params.model, source)
    _check_spread(params, source)
    _check_objective(params, source)


def _check_network(model: ModelConfig, source: str) -> None:
    """A convolutional architecture needs at least one convolution."""
    if model.architecture in ("conv", "conv1d") and not model.filters:
        raise ConfigError(
            f"{source}: model.filters must list at least one convolution's width when "
            f"model.architecture is {model.architecture!r}. Got [] instead."
        )


def _check_spread(params: Params, source: str) -> None:
    """How the work is spread: replicated training takes one step per call, Ray workers need
    the Ray engine, several training workers need MultiWorkerMirroredStrategy."""
    steps, distribution, workers = (
        params.train.steps_per_execution,
        params.train.distribution,
        params.train.workers,
    )
    check_replicated_steps(
        steps,
        "train.distribution 'multi_worker'"
        if distribution == "multi_worker"
        else f"train.workers {workers}"
        if workers > 1
        else None,
        source,
    )
    if params.cluster.engine == "local":
        for key, value in (
            ("train.workers", params.train.workers),
            ("encode.workers", params.encode.workers),
        ):
            if value not in (AUTO, 1):
                raise ConfigError(
                    f"{source}: {key} {value} runs that many Ray workers: set cluster.engine: ray "
                    "(docs/how-to/ray.md); the local engine is one process"
                )
    if params.train.workers > 1 and distribution not in (AUTO, "multi_worker"):
        raise ConfigError(
            f"{source}: train.workers {params.train.workers} trains with MultiWorkerMirroredStrategy; "
            f"train.distribution must be 'auto' or 'multi_worker'. Got {distribution!r} instead."
        )


def _check_objective(params: Params, source: str) -> None:
    """What the objective's estimator needs of the proxy and the prior, and the VampPrior of
    the encoder's inputs."""
    proxy = (params.model.posterior, params.model.prior)
    if params.loss.gradient_estimator == "score_function" and proxy != ("gaussian", "standard"):
        raise ConfigError(
            f"{source}: loss.gradient_estimator 'score_function' needs model.posterior 'gaussian' and "
            f"model.prior 'standard' (it holds z fixed, so D must have its closed form). Got {proxy}."
        )
    if params.data.covariates and params.model.encode_covariates and params.model.prior == "vamp":
        raise ConfigError(
            f"{source}: model.prior 'vamp' places its pseudo-inputs where the encoder reads x alone; "
            "with data.covariates it needs model.encode_covariates: false"
        )
    if params.loss.objective == "iwae" and params.loss.gradient_estimator != "reparameterized":
        raise ConfigError(
            f"{source}: loss.objective 'iwae' needs loss.gradient_estimator 'reparameterized'. "
            f"Got {params.loss.gradient_estimator!r} instead."
        )


def check_replicated_steps(steps: int | str, replicated: str | None, source: str) -> None:
    """Raise ConfigError for train.steps_per_execution > 1 when training is replicated
    (`replicated` says why; None: it is not). Keras' multi-step loop fails there: an unfed
    placeholder inside the loop (TensorFlow 2.21 / Keras 3.15, keras-team/keras#19246)."""
    if replicated and steps not in (AUTO, 1):
        raise ConfigError(
            f"{source + ': ' if source else ''}train.steps_per_execution must be 1 or 'auto' when "
            "training is replicated "
            f"({replicated}; Keras' multi-step loop fails there). Got {steps} instead."
        )
