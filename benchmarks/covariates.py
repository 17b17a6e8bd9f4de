"""Covariates: do the latents lose the batch and keep the label? Against scVI, on the same rows.

    make peers-env      # once: .venv-peers (torch CPU, scvi-tools 1.4.2, scib-metrics 0.5.10), benchmark-only
    .venv/bin/python -m benchmarks.covariates [--seeds 0 1 2] [--epochs 100] [--only counts table]
        [--no-peers]

Two simulated datasets, each with a strong nuisance:

    counts  single-cell counts (negative binomial, 400 genes, 5 cell types of 20 marker genes
            each at 3x) from 4 batches that hold the types unevenly, each batch scaling every
            gene by its own log-normal factor (sd 0.8) and its library size: an .h5ad, batch in obs
    table   20 real features of 3 labels measured at 5 sites, each site shifting every
            feature by its own offset (sd 1.5): a CSV with a site column

For each seed the pipeline's stages train on the train split (data keys, data.covariates and
model.latent_dim = 10 set; train.epochs the same for every contender): with the covariate
(the encoder reading x alone, and with model.encode_covariates) and without it. scVI
(scvi-tools' SCVI, batch_key, n_latent 10, the same epochs, trained on the same train rows;
counts only) runs in .venv-peers. Baselines: a PCA of the inputs as the encoder sees them
(log1p counts, the standardized table) of the same size, and one of the inputs standardized
within each batch. Every embedding of the test rows gets pipeline.evaluation.mixing's figures
(iLISI, silhouette batch, the covariate probe, cLISI, ARI, NMI) and the label's linear probe
(train rows -> test rows), and the same iLISI, cLISI and silhouette batch from scib-metrics
on the same neighbours (.venv-peers): their largest difference is printed. Medians over seeds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, module_command, write_results
from benchmarks._covariates_data import inputs_of, simulate_counts, simulate_table

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
LATENT_DIM = 10
FIGURES = ("ilisi", "silhouette_batch", "covariate_probe", "clisi", "ari", "nmi", "label_probe")


def our_embeddings(path: Path, spec: dict, seed: int, epochs: int, work: Path) -> tuple[dict, dict]:
    """{contender: (train z_mean, test z_mean)} of the stages' runs, and the prepared rows' facts."""
    from benchmarks.run_pipeline import overridden_params
    from pipeline import runner
    from pipeline.latents.reader import load_latents

    base = {
        "seed": seed,
        "data.source": spec["source"],
        "data.path": str(path),
        "model.latent_dim": LATENT_DIM,
        "train.epochs": epochs,
        **{k: v for k, v in spec.items() if k.startswith("data.")},
    }
    runs = {
        "ours, covariate": {"data.covariates": [spec["covariate"]]},
        "ours, covariate, encoder too": {
            "data.covariates": [spec["covariate"]],
            "model.encode_covariates": True,
        },
        "ours, no covariate": {},
    }
    out, facts = {}, None
    for name, extra in runs.items():
        paths = runner.run_paths(work / name.replace(" ", "_").replace(",", ""))
        params = overridden_params({**base, **extra})
        runner.prepare(params, out_dir=paths["prepared"])
        runner.train(params, prepared_dir=paths["prepared"], model_dir=paths["model_dir"])
        runner.encode(
            params, prepared_dir=paths["prepared"], model_path=paths["model"], out_dir=paths["latents"]
        )
        frame = load_latents(paths["latents"]).to_pandas()
        z = {
            split: np.stack(frame[frame["split"] == split].sort_values("id")["z_mean"])
            for split in ("train", "test")
        }
        out[name] = (z["train"], z["test"])
        facts = facts or split_facts(paths["prepared"])
    return out, facts


def split_facts(prepared: Path) -> dict:
    """{split: {"id": the rows' ids, sorted; "y": their labels in that order}} of train and test."""
    from pipeline.data.prepared import load_splits

    _, splits = load_splits(prepared)
    facts = {split: {"id": np.sort(np.asarray(splits[split].id)), "y": None} for split in ("train", "test")}
    for split in ("train", "test"):
        order = np.argsort(np.asarray(splits[split].id))
        facts[split]["y"] = np.asarray(splits[split].y)[order]
    return facts


def baseline_embeddings(x: np.ndarray, batch: np.ndarray, facts: dict, seed: int) -> dict:
    from sklearn.decomposition import PCA

    from pipeline.evaluation.mixing import per_batch_standardized

    train, test = (x[facts[s]["id"]] for s in ("train", "test"))
    mean, sd = train.mean(axis=0), np.where(train.std(axis=0) > 0, train.std(axis=0), 1.0)
    out = {}
    for name, (a, b) in {
        "PCA": ((train - mean) / sd, (test - mean) / sd),
        "PCA, per batch": per_batch_standardized(
            train, test, *(batch[facts[s]["id"]] for s in ("train", "test"))
        ),
    }.items():
        pca = PCA(LATENT_DIM, random_state=seed).fit(a)
        out[name] = (pca.transform(a), pca.transform(b))
    return out


def scvi_worker(path: Path, ids: Path, out: Path, seed: int, epochs: int) -> None:
    """In .venv-peers: SCVI on the train rows, the latent of train and test rows."""
    import anndata as ad
    import scvi

    scvi.settings.seed = seed
    adata, split = ad.read_h5ad(path), np.load(ids)
    train, test = adata[split["train"]].copy(), adata[split["test"]].copy()
    scvi.model.SCVI.setup_anndata(train, batch_key="batch")
    model = scvi.model.SCVI(train, n_latent=LATENT_DIM)
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
    np.savez(out, train=model.get_latent_representation(train), test=model.get_latent_representation(test))


def scib_worker(embeddings: Path, out: Path) -> None:
    """In .venv-peers: scib-metrics' iLISI, cLISI and silhouette batch on the neighbours given."""
    from scib_metrics import clisi_knn, ilisi_knn, silhouette_batch
    from scib_metrics.nearest_neighbors import NeighborsResults

    data, results = np.load(embeddings), {}
    for name in {key.split("/")[0] for key in data.files if "/" in key}:
        neighbours = NeighborsResults(indices=data[f"{name}/index"], distances=data[f"{name}/distance"])
        batch, labels = data["batch"], data["labels"]
        results[name] = {
            "ilisi": float(ilisi_knn(neighbours, batch)),
            "clisi": float(clisi_knn(neighbours, labels)),
            "silhouette_batch": float(silhouette_batch(data[f"{name}/x"], labels, batch)),
        }
    out.write_text(json.dumps(results))


def figures(embeddings: dict, batch: tuple, labels: tuple, seed: int) -> dict:
    from pipeline.evaluation.mixing import mixing
    from pipeline.evaluation.probes import ProbeProtocol, linear_probe
    from pipeline.platform.params.config import ProbeConfig

    protocol = ProbeProtocol.of(ProbeConfig(), knn_k=5, seed=seed)
    return {
        name: {
            **mixing(pair, batch, labels[1], protocol),
            "label_probe": linear_probe(pair[0], labels[0], pair[1], labels[1], protocol)[0]["accuracy"],
        }
        for name, pair in embeddings.items()
    }


def scib_agreement(embeddings: dict, batch: np.ndarray, labels: np.ndarray, ours: dict, work: Path) -> float:
    """The largest |ours - scib-metrics| over every embedding's iLISI, cLISI and silhouette batch."""
    from sklearn.neighbors import NearestNeighbors

    arrays = {"batch": batch, "labels": labels}
    for name, (_, test) in embeddings.items():
        distance, index = NearestNeighbors(n_neighbors=90).fit(test).kneighbors(test)
        key = name.replace("/", "_")
        arrays |= {f"{key}/x": test.astype(np.float32), f"{key}/index": index, f"{key}/distance": distance}
    np.savez(work / "scib.npz", **arrays)
    subprocess.run(
        [
            *module_command(__spec__, PEERS_PYTHON),
            "--scib-worker",
            str(work / "scib.npz"),
            str(work / "scib.json"),
        ],
        check=True,
    )
    theirs = json.loads((work / "scib.json").read_text())
    return max(
        abs(ours[name][key] - theirs[name.replace("/", "_")][key])
        for name in embeddings
        for key in ("ilisi", "clisi", "silhouette_batch")
    )


def one_seed(dataset: str, seed: int, epochs: int, peers: bool) -> tuple[dict, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / ("cells.h5ad" if dataset == "counts" else "table.csv")
        spec = (simulate_counts if dataset == "counts" else simulate_table)(path, seed)
        embeddings, facts = our_embeddings(path, spec, seed, epochs, work)
        x, codes = inputs_of(path, spec)
        embeddings |= baseline_embeddings(x, codes, facts, seed)
        if peers and dataset == "counts":
            np.savez(work / "ids.npz", train=facts["train"]["id"], test=facts["test"]["id"])
            subprocess.run(
                [
                    *module_command(__spec__, PEERS_PYTHON),
                    "--scvi-worker",
                    str(path),
                    str(work / "ids.npz"),
                    str(work / "scvi.npz"),
                    str(seed),
                    str(epochs),
                ],
                check=True,
            )
            with np.load(work / "scvi.npz") as latent:
                embeddings["scVI"] = (latent["train"], latent["test"])
        batch = tuple(codes[facts[s]["id"]] for s in ("train", "test"))
        labels = tuple(facts[s]["y"] for s in ("train", "test"))
        found = figures(embeddings, batch, labels, seed)
        agreement = scib_agreement(embeddings, batch[1], labels[1], found, work) if peers else None
    return found, agreement


def print_table(dataset: str, runs: list[dict], agreements: list) -> None:
    print(f"\n{dataset}: median over {len(runs)} seed(s) (min-max), test rows")
    print(f"| embedding | {' | '.join(FIGURES)} |\n|---|{'---|' * len(FIGURES)}")
    for name in runs[0]:
        cells = []
        for key in FIGURES:
            values = [run[name][key] for run in runs if run[name].get(key) is not None]
            spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
            cells.append(f"{statistics.median(values):.3f}{spread}" if values else "-")
        print(f"| {name} | {' | '.join(cells)} |")
    if any(a is not None for a in agreements):
        print(
            f"largest |ours - scib-metrics| (iLISI, cLISI, silhouette batch): "
            f"{max(a for a in agreements if a is not None):.2e}",
            flush=True,
        )


def main() -> None:
    workers = {
        "--scvi-worker": lambda a: scvi_worker(Path(a[0]), Path(a[1]), Path(a[2]), int(a[3]), int(a[4])),
        "--scib-worker": lambda a: scib_worker(Path(a[0]), Path(a[1])),
    }
    if len(sys.argv) > 1 and sys.argv[1] in workers:
        return workers[sys.argv[1]](sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100, help="train.epochs of ours and max_epochs of scVI")
    parser.add_argument("--only", nargs="+", default=["counts", "table"])
    parser.add_argument("--no-peers", action="store_true", help="skip scVI and scib-metrics (no .venv-peers)")
    parser.add_argument("--json", type=Path, default=None, help="write every seed's figures here")
    args = parser.parse_args()
    results = {}
    for dataset in args.only:
        runs, agreements = [], []
        for seed in args.seeds:
            found, agreement = one_seed(dataset, seed, args.epochs, not args.no_peers)
            runs.append(found)
            agreements.append(agreement)
            print(
                f"{dataset} seed {seed}: "
                + ", ".join(
                    f"{name} iLISI {f['ilisi']:.3f} label {f['label_probe']:.3f}" for name, f in found.items()
                ),
                flush=True,
            )
        results[dataset] = {"runs": runs, "scib_agreement": agreements}
        print_table(dataset, runs, agreements)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("written:", write_results("covariates", command_line(__spec__), results))


if __name__ == "__main__":
    main()
