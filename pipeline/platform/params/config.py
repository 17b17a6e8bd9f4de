"""params.yaml's knobs as typed, frozen config objects, one class per block, with each
knob's default, type and bounds (pipeline.platform.params.load reads and checks the file)."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.platform.choices import AUTO, Auto
from pipeline.platform.families import FAMILIES
from pipeline.platform.params.config_checker import (
    bounded,
)
from pipeline.platform.params.param_watch import Knobs

DEFAULT_DATA_PATH = "data/raw"


@dataclass(frozen=True)
class NpzConfig(Knobs):
    x_key: str = "x"
    y_key: str | None = "y"  # null: no labels


@dataclass(frozen=True)
class TableConfig(Knobs):
    label_column: str | None = "label"  # null: no labels
    # null: every column but the label
    feature_columns: tuple[str, ...] | None = field(
        default=None, metadata={"min_length": 1, "noun": "column names"}
    )
    # {column: type} overriding the typing rule (pipeline.data.resolve_columns) for those columns
    column_types: dict[str, Literal["real", "binary", "categorical", "count"]] | None = None
    drop_columns: tuple[str, ...] = ()  # columns left out, whatever the rule would make of them


@dataclass(frozen=True)
class AnndataConfig(Knobs):
    layer: str | None = None  # null: X
    label_key: str | None = None  # the obs column of the labels; null: no labels


@dataclass(frozen=True)
class ImagesConfig(Knobs):
    # [H, W] (readers.images)
    size: tuple[int, ...] | Auto | None = field(default=AUTO, metadata={"lo": 1, "length": 2})
    color: Literal["auto", "grey", "rgb"] = AUTO  # auto: rgb when any image has colour


@dataclass(frozen=True)
class DataConfig(Knobs):
    source: Literal["digits", "fashion_mnist", "mnist", "idx", "npz", "table", "image_folder", "anndata"] = (
        "digits"
    )
    # The local file or directory a source reads; a DVC dependency of prepare.
    path: str = DEFAULT_DATA_PATH
    npz: NpzConfig = NpzConfig()
    table: TableConfig = TableConfig()
    anndata: AnndataConfig = AnndataConfig()
    images: ImagesConfig = ImagesConfig()
    # unit: to [0, 1] (pixels by their range, others by train min/max); standardize: per feature on train
    scaling: Literal["auto", "unit", "standardize", "none"] = AUTO
    binarize: Literal["none", "static", "dynamic"] = "none"  # dynamic: resampled every epoch
    binarize_threshold: float = bounded(0.5, lo=0, hi=1, lo_open=True, hi_open=True)  # static only
    max_examples: int | None = bounded(None, lo=2)  # a seeded, stratified subsample
    test_fraction: float = bounded(0.2, lo=0, hi=1, lo_open=True, hi_open=True)
    validation_fraction: float = bounded(0.1, lo=0, hi=1, hi_open=True)
    # nuisances the model conditions on (batch, site, donor): table columns, .h5ad obs columns or npz arrays
    covariates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig(Knobs):
    architecture: Literal["auto", "mlp", "conv", "conv1d"] = AUTO  # conv: H×W×C images; conv1d: series
    latent_dim: int = bounded(8, lo=1)
    hidden: tuple[int, ...] | Auto = bounded(AUTO, lo=1)  # Dense widths (after the convs for conv)
    filters: tuple[int, ...] | Auto = bounded(AUTO, lo=1)  # conv, conv1d: widths per layer
    # level_categorical, discretized_logistic: masses on pixel levels; bernoulli: binary data
    # (a mass only there); gaussian: real values (σ floored); columns: one family per table
    # column. All keep S ≥ a bound.
    likelihood: Literal[("auto", *FAMILIES)] = AUTO  # the families: pipeline.platform.families
    # count columns and count matrices: negative_binomial (a learned dispersion per feature) or poisson
    count_likelihood: Literal["negative_binomial", "poisson"] = "negative_binomial"
    # gaussian only: a fixed σ, or "learned": one trainable σ per feature, at least sigma_floor
    sigma: float | Literal["learned"] = bounded("learned", lo=0, lo_open=True)
    sigma_floor: float = bounded(0.05, lo=0, lo_open=True)
    activation: Literal["relu", "silu", "gelu"] = "relu"  # of every hidden and conv layer
    # conv, conv1d: residual blocks (two size-3 convs and a skip) at each resolution, both networks
    residual_blocks: int = bounded(0, lo=0)
    # conv, conv1d: "strided": the last upsampling outputs the likelihood parameters (the
    # encoder's mirror); "full": a stride-1 layer at full resolution (filters[0] wide) before it
    decoder_top: Literal["strided", "full"] = "strided"
    # q(z|x): gaussian | flow: then flow_steps IAF steps (Kingma et al. 2016), log q exact
    posterior: Literal["gaussian", "flow"] = "gaussian"
    flow_steps: int = bounded(2, lo=1)
    # p(z): standard N(0, I) | vamp: the proxy at prior_components pseudo-inputs (Tomczak & Welling 2018)
    prior: Literal["standard", "vamp"] = "standard"
    prior_components: int = bounded(50, lo=1)
    encode_covariates: bool = False  # data.covariates: q(z|x, c) reads them too (p(x|z, c) always does)


@dataclass(frozen=True)
class LossConfig(Knobs):
    mc_samples: int = bounded(1, lo=1)  # m, samples of q(z|x) per example in Û
    beta: float = bounded(1.0, lo=0)  # weight on D in the training objective only
    # ramp the weight on D from 0 to beta; auto: the first tenth of the epochs (pipeline.training.resolve_run)
    kl_warmup_epochs: int | Auto = bounded(AUTO, lo=0)
    # λ nats per latent dimension below which D_j is free: keeps units from collapsing
    free_bits: float = bounded(0.25, lo=0)
    gradient_estimator: Literal["reparameterized", "score_function"] = "reparameterized"
    # subo: minimise Û (the article's proxy); iwae: minimise S_K with K = mc_samples
    # (Burda et al.), a tighter bound; its D term has no warm-up or free bits
    objective: Literal["subo", "iwae"] = "subo"
    score_baseline: bool = True  # score_function only: subtract a running mean of the surprisal


@dataclass(frozen=True)
class TrainConfig(Knobs):
    # auto: from the number of examples (pipeline.training.resolve_run)
    epochs: int | Auto = bounded(AUTO, lo=1)
    batch_size: int = bounded(64, lo=1)  # global: split across replicas
    learning_rate: float = bounded(1e-3, lo=0, lo_open=True)
    # cosine decays to 0 over all epochs; warmup_cosine first ramps up over the first epoch
    lr_schedule: Literal["constant", "cosine", "warmup_cosine"] = "constant"
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    clipnorm: float | None = bounded(None, lo=0, lo_open=True)  # per-gradient norm clipping
    early_stopping_patience: int | None = bounded(10, lo=1)  # epochs without a better val U
    phi_steps: int = bounded(1, lo=1)  # encoder steps per decoder step; 1 = joint updates
    # auto: mixed_bfloat16 on native-bf16 CPUs and bf16 GPUs, mixed_float16 on older tensor-core GPUs
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = AUTO
    distribution: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    deterministic: bool = False  # TensorFlow op determinism: identical runs, somewhat slower
    steps_per_execution: int | Auto = bounded(AUTO, lo=1)  # train steps per compiled call
    # Each epoch, U, S_K and E_K = U − S_K on this many fixed validation examples (0: off),
    # K = importance_samples: how tight the bound is during optimisation (dvclive bound/*).
    bound_examples: int = bounded(128, lo=0)
    importance_samples: int = bounded(100, lo=1)
    jit_compile: bool = False  # XLA-compile the train step
    # Where batches are read from: memory (the fit rows copied in once) or mmap (read by row
    # from the memory-mapped prepared file every time); auto: memory up to 1 GiB of them.
    input: Literal["auto", "memory", "mmap"] = AUTO
    # Ray Train workers (cluster.engine: ray), one MultiWorkerMirroredStrategy replica each
    workers: int = bounded(1, lo=1)


@dataclass(frozen=True)
class EncodeConfig(Knobs):
    batch_size: int = bounded(1024, lo=1)
    # Ray actors encoding (cluster.engine: ray), each writing part files of its shards;
    # auto: one per GPU of the cluster, else one per CPU
    workers: int | Auto = bounded(AUTO, lo=1)
    # tables: each row also `completed` (missing cells imputed by the model) and `imputed` flags
    impute: bool = False
    importance_samples: int = bounded(10, lo=1)  # K of every row's surprisal (pipeline.latents.scores)


@dataclass(frozen=True)
class UmapConfig(Knobs):
    split: Literal["train", "test"] = "test"
    n_neighbors: int = bounded(15, lo=2)
    min_dist: float = bounded(0.1, lo=0)
    max_points: int = bounded(10_000, lo=10)


@dataclass(frozen=True)
class GradientVarianceConfig(Knobs):
    repeats: int = bounded(50, lo=2)  # R gradient draws per estimator on one fixed batch
    batch_size: int = bounded(64, lo=1)


@dataclass(frozen=True)
class ProbeConfig(Knobs):
    c_grid: tuple[float, ...] = field(
        default=(0.01, 0.1, 1.0, 10.0),  # logistic regression C
        metadata={"lo": 0, "lo_open": True, "min_length": 1},
    )
    validation_fraction: float = bounded(0.2, lo=0, hi=1, lo_open=True, hi_open=True)  # of train, to pick C
    # A seeded, stratified cap on the train rows every probe sees (raw 784-d inputs are slow).
    max_train_examples: int = bounded(20_000, lo=10)
    # The same on test rows: a probe's score is a mean over them, ±0.005 at 10,000.
    max_test_examples: int = bounded(10_000, lo=10)


@dataclass(frozen=True)
class EvaluateConfig(Knobs):
    # K for S_K; S_1, S_10, ... up to K are reported from the same K samples.
    importance_samples: int = bounded(100, lo=1)
    surprisal_examples: int = bounded(1000, lo=1)  # validation and test examples for U, D, S_K
    gradient_variance: GradientVarianceConfig = GradientVarianceConfig()
    probe: ProbeConfig = ProbeConfig()
    knn_k: int = bounded(5, lo=1)
    umap: UmapConfig = UmapConfig()


@dataclass(frozen=True)
class ClusterConfig(Knobs):
    # local: this process (and its GPUs); ray: prepare's reads, encode, training on the cluster at `address`
    engine: Literal["local", "ray"] = "local"
    # auto: the cluster RAY_ADDRESS names, else a Ray started on this machine for the stage;
    # or host:port of a running cluster's head (`ray start --head` prints it)
    address: str = AUTO
    # seconds per Ray task or actor call: a hung worker stops the stage
    task_timeout: int = bounded(3600, lo=1)
    train_timeout: int | None = bounded(None, lo=1)  # seconds for Ray training in all; null: no limit


@dataclass(frozen=True)
class Params(Knobs):
    seed: int = bounded(0, lo=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    encode: EncodeConfig = EncodeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    cluster: ClusterConfig = ClusterConfig()


def as_dict(params: Params) -> dict:
    """The params as plain nested dicts (for metadata and logs)."""
    return dataclasses.asdict(params)


def leaf_keys(cls=Params, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of every knob under a config class, in file order ("model.latent_dim", ...)."""
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            keys += leaf_keys(type(f.default), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return tuple(keys)


def lookup(params: Params, key: str) -> Any:
    """The value of a dotted key, e.g. lookup(params, "train.epochs")."""
    value = params
    for part in key.split("."):
        value = getattr(value, part)
    return value
