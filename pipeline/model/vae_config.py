"""The frozen configs a VAE is built from: the model resolved from the data
(`ResolvedModel`, what `build_vae` takes) and the VAE's own (`VAEConfig`: its likelihood,
proxy, prior and the loss it minimises), which the saved model round-trips through
get_config/from_config; and the trainer's `TrainingPlan` the train step reads."""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pipeline.platform.config import LossConfig


@dataclass(frozen=True)
class ResolvedModel:
    """A ModelConfig with every `auto` resolved (`pipeline.model.resolve_model`): what
    `pipeline.model.networks.build_vae` takes, so nothing that builds a model can see "auto"."""

    architecture: Literal["mlp", "conv", "conv1d"]
    latent_dim: int
    hidden: tuple[int, ...]
    filters: tuple[int, ...]
    # columns: one family per column group (tables and count matrices, see `groups`)
    likelihood: Literal["bernoulli", "level_categorical", "discretized_logistic", "gaussian", "columns"]
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
    covariates: int = 0  # data.covariates: the model's last inputs that are covariates c (their one-hots, values)
    encode_covariates: bool = False  # q(z|x, c) reads c too (p(x|z, c) always does)


@dataclass(frozen=True)
class VAEConfig:
    """What a VAE is besides its networks: p_θ(x|z)'s family and the loss it minimises.

    likelihood .. levels, posterior .. encode_covariates: as in ResolvedModel. mc_samples ..
    score_baseline: the loss (LossConfig, less the warm-up, which the trainer schedules).
    seed: the sampler's seed stream. No defaults: every VAE's come from the resolved model
    and the params (`of`), or from the saved model (`from_dict`), never from a second copy.
    """

    likelihood: str
    sigma: float | str
    sigma_floor: float
    groups: tuple[tuple[str, int, int], ...]
    log1p_features: tuple[int, ...]
    mask_features: tuple[int, ...]
    levels: int | None
    posterior: str
    flow_steps: int
    prior: str
    prior_components: int
    covariates: int
    encode_covariates: bool
    mc_samples: int
    beta: float
    free_bits: float
    gradient_estimator: Literal["reparameterized", "score_function"]
    objective: Literal["subo", "iwae"]
    score_baseline: bool
    seed: int | None

    @classmethod
    def of(cls, model: ResolvedModel, loss: LossConfig, seed: int | None) -> "VAEConfig":
        """The VAE's part of a resolved model and a loss config."""
        return cls(likelihood=model.likelihood, sigma=model.sigma, sigma_floor=model.sigma_floor,
                   groups=model.groups, log1p_features=model.log1p_features, mask_features=model.mask_features,
                   levels=model.levels, posterior=model.posterior, flow_steps=model.flow_steps, prior=model.prior,
                   prior_components=model.prior_components, covariates=model.covariates,
                   encode_covariates=model.encode_covariates and model.covariates > 0, mc_samples=loss.mc_samples,
                   beta=float(loss.beta),
                   free_bits=float(loss.free_bits), gradient_estimator=loss.gradient_estimator,
                   objective=loss.objective, score_baseline=loss.score_baseline, seed=seed)

    @classmethod
    def from_dict(cls, config: dict) -> "VAEConfig":
        """From `as_dict` (JSON: lists where the fields hold tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if missing := names - set(config):
            raise ValueError(f"the saved model's VAE config lacks {sorted(missing)}: a model saved by an older "
                             "version of the pipeline; train it again")
        fields = {key: value for key, value in config.items() if key in names}
        for key in ("log1p_features", "mask_features"):
            fields[key] = tuple(int(i) for i in fields.get(key, ()))
        fields["groups"] = tuple((str(f), int(a), int(w)) for f, a, w in fields.get("groups") or ())
        return cls(**fields)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingPlan:
    """What the training side decides for each train step, read by `VAE.train_step`:
    the weight on D' in the objective (a number, or a scalar variable the trainer's schedule
    moves; None: the config's β) and the φ steps per θ step (the article's "aggressive φ")."""

    kl_weight: object = None
    phi_steps: int = 1
