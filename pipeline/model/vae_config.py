"""The frozen configs a VAE is built from: the model resolved from the data
(`ResolvedModel`, what `build_vae` takes) and the VAE's own (`VAEConfig`: that model, the
loss it minimises and its seed), which the saved model round-trips through
get_config/from_config."""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pipeline.platform.families import FAMILIES
from pipeline.platform.params.config import LossConfig


@dataclass(frozen=True)
class ResolvedModel:
    """A ModelConfig with every `auto` resolved (`pipeline.model.resolve_model`): what
    `pipeline.model.networks.build_vae` takes, so nothing that builds a model can see "auto"."""

    architecture: Literal["mlp", "conv", "conv1d"]
    latent_dim: int
    hidden: tuple[int, ...]
    filters: tuple[int, ...]
    # columns: one family per column group (tables and count matrices, see `groups`)
    likelihood: Literal[tuple(FAMILIES)]
    count_likelihood: Literal["negative_binomial", "poisson"]
    sigma: float | Literal["learned"]
    sigma_floor: float
    activation: Literal["relu", "silu", "gelu"]
    residual_blocks: int
    decoder_top: Literal["strided", "full"]
    # likelihood "columns": (family, first feature, width) per group, the features whose
    # encoder input is log1p (counts), and the first feature of every column whose missing
    # cells the encoder is told of (a mask input per column; empty when nothing is missing)
    groups: tuple[tuple[str, int, int], ...] = ()
    log1p_features: tuple[int, ...] = ()
    mask_features: tuple[int, ...] = ()
    levels: int | None = None  # level_categorical, discretized_logistic: L, the levels of each pixel (0..L−1)
    posterior: Literal["gaussian", "flow"] = "gaussian"
    flow_steps: int = 2
    prior: Literal["standard", "vamp"] = "standard"
    prior_components: int = 50
    # data.covariates: the model's last inputs that are covariates c (their one-hots, values)
    covariates: int = 0
    encode_covariates: bool = False  # q(z|x, c) reads c too (p(x|z, c) always does)


# The loss as a VAE holds it: LossConfig's fields in a plain frozen dataclass, made from it (so
# a knob is added once). A loaded model's loss is not this run's params: reading it is no read
# of params.yaml, which LossConfig's reads are (pipeline.platform.params.param_watch).
LossTerms = dataclasses.make_dataclass(
    "LossTerms", [(f.name, f.type) for f in dataclasses.fields(LossConfig)], frozen=True
)
LossTerms.__module__ = __name__  # where pickle and repr find it


@dataclass(frozen=True)
class VAEConfig:
    """Everything a VAE is besides its weights: the resolved model (networks, likelihood, proxy,
    prior, covariates), the loss it minimises (the warm-up is the trainer's) and the sampler's
    seed. No defaults of its own: every VAE's come from the resolved run (`build_vae`) or from
    its saved model (`from_dict`); a knob is a field of ResolvedModel or LossConfig, once."""

    model: ResolvedModel
    loss: LossTerms
    seed: int | None

    @classmethod
    def of(cls, model: ResolvedModel, loss: LossConfig, seed: int | None) -> "VAEConfig":
        """The config of a VAE built for this run: its resolved model, the params' loss, the seed."""
        return cls(model, LossTerms(**dataclasses.asdict(loss)), seed)

    @classmethod
    def from_dict(cls, config: dict) -> "VAEConfig":
        """From `as_dict` (JSON: lists where the fields hold tuples)."""
        model_fields = {f.name for f in dataclasses.fields(ResolvedModel)}
        if set(config) != {"model", "loss", "seed"} or not model_fields <= set(config["model"]):
            raise ValueError(
                "the saved model's VAE config is not {model, loss, seed} with every field of the "
                "resolved model: a model saved by an older version of the pipeline; train it again"
            )
        model = {key: value for key, value in config["model"].items() if key in model_fields}
        for key in ("hidden", "filters", "log1p_features", "mask_features"):
            model[key] = tuple(int(i) for i in model[key])
        model["groups"] = tuple((str(f), int(a), int(w)) for f, a, w in model["groups"])
        return cls(ResolvedModel(**model), LossTerms(**config["loss"]), config["seed"])

    def as_dict(self) -> dict:
        return {
            "model": dataclasses.asdict(self.model),
            "loss": dataclasses.asdict(self.loss),
            "seed": self.seed,
        }
