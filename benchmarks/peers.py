"""Peers on the same data, in one run: pythae's VAE, IWAE, VAMP and VAE_IAF (its own
implementations) beside this project's gaussian, flow and vamp variants, on dynamically
binarized Fashion-MNIST (a true Bernoulli mass, so every S is a real negative
log-likelihood), latent 16, 10 epochs, batch 128, learning rate 1e-3, contenders interleaved, one round per
training seed
(initialisation, batch order, sampling; the data and the scored binarization stay fixed).

    make peers-env                      # once: .venv-peers with torch (CPU) and pythae, benchmark-only
    .venv/bin/python -m benchmarks.peers [--seeds 0 1 2] [--only ours|pythae] [--test-examples 1000]

Reported per contender: test S_1000 on the same binarized test images (the same
importance-sampling estimator: −log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = 1000; ours through
pipeline.model.diagnostics, pythae's through its models' `get_nll`, which computes exactly
that), seconds per epoch, and the linear / kNN probes of the encoder means under this
project's probe protocol. pythae runs in its own environment (.venv-peers, never a
dependency of `make repro` or `make test`): this script starts it as a subprocess
(`--pythae-worker`), handing data and embeddings over as npz files. Both sides see a
fresh binarization of the training images every epoch; pythae's MLP networks are its
defaults (512 units), ours the shipped conv defaults for 28×28.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, module_command, write_results

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
BUDGET = {"latent_dim": 16, "epochs": 10, "batch_size": 128, "learning_rate": 1e-3}
OURS = {"gaussian": {}, "flow": {"model.posterior": "flow"}, "vamp": {"model.prior": "vamp"}}
PYTHAE = ("VAE", "IWAE", "VAMP", "VAE_IAF")
IMPORTANCE_SAMPLES = 1000


def _pythae_model(model_name: str):
    """pythae's `model_name` with its default (MLP) networks for 28×28 grey images and a Bernoulli
    likelihood, at the budget's latent size."""
    from pythae import models

    common = {"input_dim": (1, 28, 28), "latent_dim": BUDGET["latent_dim"], "reconstruction_loss": "bce"}
    configs = {
        "VAE": models.VAEConfig,
        "IWAE": models.IWAEConfig,
        "VAMP": models.VAMPConfig,
        "VAE_IAF": models.VAE_IAF_Config,
    }
    return getattr(models, model_name)(model_config=configs[model_name](**common))


def _train_pythae(model, model_name: str, grey, out_path: Path) -> float:
    """pythae's own training pipeline at the budget on the grey images, binarized afresh every
    time an image is drawn; returns the training seconds."""
    import torch
    from pythae.data.datasets import BaseDataset, DatasetOutput
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    class Binarized(BaseDataset):
        """Grey levels, binarized afresh every time an image is drawn (dynamic binarization)."""

        def __getitem__(self, index):
            return DatasetOutput(data=torch.bernoulli(self.data[index]), labels=self.labels[index])

    trainer = BaseTrainerConfig(
        output_dir=str(out_path.parent / f"pythae-{model_name}"),
        no_cuda=True,
        num_epochs=BUDGET["epochs"],
        learning_rate=BUDGET["learning_rate"],
        per_device_train_batch_size=BUDGET["batch_size"],
        steps_saving=None,
    )
    start = time.perf_counter()
    TrainingPipeline(training_config=trainer, model=model)(train_data=Binarized(grey, torch.zeros(len(grey))))
    return time.perf_counter() - start


def _score_and_embed(model, data) -> tuple[float, dict]:
    """The trained model's test S_1000 on the binarized test images and its encoder means of
    the probes' train and test images."""
    import torch

    model.eval()
    with torch.no_grad():
        test = torch.from_numpy(data["test_binary"]).reshape(-1, 1, 28, 28)
        # get_nll returns the mean of log p̂(x) (despite its name): S_K is its negative
        surprisal = -float(model.get_nll(test, n_samples=IMPORTANCE_SAMPLES, batch_size=IMPORTANCE_SAMPLES))
        embed = {
            split: model.encoder(
                torch.from_numpy(data[f"{split}_probe"]).reshape(-1, 1, 28, 28)
            ).embedding.numpy()
            for split in ("train", "test")
        }
    return surprisal, embed


def pythae_worker(model_name: str, data_path: Path, out_path: Path, seed: int) -> None:
    """In .venv-peers: train one pythae model on the npz's images, score and embed."""
    import torch

    torch.manual_seed(seed)
    data = np.load(data_path)
    grey = torch.from_numpy(data["train"]).reshape(-1, 1, 28, 28)
    model = _pythae_model(model_name)
    seconds = _train_pythae(model, model_name, grey, out_path)
    surprisal, embed = _score_and_embed(model, data)
    np.savez(
        out_path,
        train=embed["train"],
        test=embed["test"],
        meta=json.dumps({"S_1000": surprisal, "seconds_per_epoch": seconds / BUDGET["epochs"]}),
    )


def shared_data(work: Path, test_examples: int, seed: int = 0) -> tuple[Path, dict]:
    """Fashion-MNIST prepared once by the pipeline (binarize: dynamic keeps grey levels on
    disk); the scored test images binarized once, seeded, and the probes' rows."""
    from benchmarks.run_pipeline import overridden_params
    from pipeline.data.prepare import prepare
    from pipeline.data.prepared import load_split

    params = overridden_params(_ours_overrides({}))
    prepare(params.data, seed=params.seed, out_dir=work / "prepared")
    rng = np.random.default_rng(seed)
    train, test = load_split(work / "prepared", "train"), load_split(work / "prepared", "test")
    x_train, x_test = train.inputs(slice(None)), test.inputs(slice(None))
    scored = rng.choice(len(x_test), min(test_examples, len(x_test)), replace=False)
    probe_rows = rng.choice(len(x_train), min(20_000, len(x_train)), replace=False)
    arrays = {
        "train": x_train.reshape(len(x_train), -1).astype(np.float32),
        "test_binary": rng.binomial(1, x_test[scored]).astype(np.float32).reshape(len(scored), -1),
        "train_probe": rng.binomial(1, x_train[probe_rows]).astype(np.float32).reshape(len(probe_rows), -1),
        "test_probe": rng.binomial(1, x_test).astype(np.float32).reshape(len(x_test), -1),
    }
    np.savez(work / "data.npz", **arrays)
    return work / "data.npz", {"y_train": train.y[probe_rows], "y_test": test.y, "params": params}


def _ours_overrides(variant: dict) -> dict:
    return {
        "data.source": "fashion_mnist",
        "data.binarize": "dynamic",
        "model.architecture": "conv",
        "model.latent_dim": BUDGET["latent_dim"],
        "model.hidden": [],
        "train.epochs": BUDGET["epochs"],
        "train.batch_size": BUDGET["batch_size"],
        "train.learning_rate": BUDGET["learning_rate"],
        "train.early_stopping_patience": BUDGET["epochs"],
        **variant,
    }


def run_ours(name: str, work: Path, data: dict, seed: int) -> tuple[dict, dict]:
    from benchmarks.run_pipeline import overridden_params
    from pipeline.model.bundle import load_bundle
    from pipeline.model.diagnostics import subo_estimates
    from pipeline.runner import train

    params = overridden_params({**_ours_overrides(OURS[name]), "seed": seed})
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"ours-{name}-"))
    start = time.perf_counter()
    train(params, prepared_dir=work / "prepared", model_dir=out)
    seconds = time.perf_counter() - start
    vae = load_bundle(out / "model.keras").vae
    arrays = np.load(data["npz"])
    test = arrays["test_binary"].reshape(-1, 28, 28, 1)
    figures = subo_estimates(vae, test, IMPORTANCE_SAMPLES, seed=0)

    def embed_split(images):
        return np.concatenate(
            [
                vae.predict_posterior(images[i : i + 2048].reshape(-1, 28, 28, 1))[0]
                for i in range(0, len(images), 2048)
            ]
        )

    embed = {split: embed_split(arrays[f"{split}_probe"]) for split in ("train", "test")}
    return {
        "S_1000": figures["S_K"][str(IMPORTANCE_SAMPLES)],
        "U": figures["U"],
        "seconds_per_epoch": seconds / BUDGET["epochs"],
    }, embed


def run_pythae(name: str, work: Path, data: dict, seed: int) -> tuple[dict, dict]:
    out = work / f"pythae-{name}.npz"
    subprocess.run(
        [
            *module_command(__spec__, PEERS_PYTHON),
            "--pythae-worker",
            name,
            str(data["npz"]),
            str(out),
            str(seed),
        ],
        check=True,
    )
    result = np.load(out)
    return json.loads(str(result["meta"])), {"train": result["train"], "test": result["test"]}


def probes(embed: dict, data: dict) -> dict:
    from pipeline.evaluation.probes import ProbeProtocol, probe_suite

    cfg = data["params"].evaluate
    protocol = ProbeProtocol.of(cfg.probe, knn_k=cfg.knn_k, seed=0)
    scores, _ = probe_suite({"z": (embed["train"], embed["test"])}, data["y_train"], data["y_test"], protocol)
    return {"linear": scores["z"]["linear"]["accuracy"], "knn": scores["z"]["knn"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--pythae-worker":
        return pythae_worker(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one interleaved round per training seed"
    )
    parser.add_argument("--only", choices=("ours", "pythae"), default=None)
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.only != "ours" and not PEERS_PYTHON.exists():
        sys.exit(f"{PEERS_PYTHON} not found: run `make peers-env` first (or --only ours)")
    work = args.work or Path(tempfile.mkdtemp(prefix="peers-"))
    work.mkdir(parents=True, exist_ok=True)
    npz, data = shared_data(work, args.test_examples)
    data["npz"] = npz
    contenders = ([("pythae", n) for n in PYTHAE] if args.only != "ours" else []) + (
        [("ours", n) for n in OURS] if args.only != "pythae" else []
    )
    rows = {c: [] for c in contenders}
    for seed in args.seeds:
        for side, name in contenders:  # interleaved
            figures, embed = (run_ours if side == "ours" else run_pythae)(name, work, data, seed)
            row = {"contender": f"{side}:{name}", "seed": seed, **figures, **probes(embed, data)}
            rows[(side, name)].append(row)
            print(json.dumps(row), flush=True)
    medians = {}
    for (side, name), runs in rows.items():
        med = {
            k: statistics.median(r[k] for r in runs) for k in ("S_1000", "seconds_per_epoch", "linear", "knn")
        }
        medians[f"{side}:{name}"] = med
        print(
            f"{side}:{name}: median of {len(runs)}: test S_1000 {med['S_1000']:.2f} nats, "
            f"{med['seconds_per_epoch']:.1f} s/epoch, probes {med['linear']:.3f} / {med['knn']:.3f}"
        )
    runs = [row for runs in rows.values() for row in runs]
    write_results("peers", command_line(__spec__), {"runs": runs, "medians": medians})


if __name__ == "__main__":
    main()
