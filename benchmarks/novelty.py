"""Which rows are odd: the latents' scores against outlier detectors, on the same rows.

    make peers-env      # once: .venv-peers (torch CPU, pythae, PyOD), benchmark-only
    .venv/bin/python -m benchmarks.novelty [--seeds 0 1 2] [--only fashion_mnist breast_cancer] [--no-peers]
    .venv/bin/python -m benchmarks.novelty --only breast_cancer --set train.epochs=1000 --save-scores /tmp/s

Two datasets: Fashion-MNIST with classes 8 (bag) and 9 (ankle boot) held out, and scikit-learn's
breast-cancer table trained on its benign rows alone (the malignant ones held out). For each
seed, the default model (params.yaml with the data keys only) is trained by the stages on the
seen classes' training rows, and each set below is scored by `vae-pipeline encode`'s function
with the stage's latents as the reference, as a user scores new data:

    inliers     test rows of the seen classes (at most --rows)
    held_out    test rows of the held-out classes (at most --rows)
    noise, occlusion, flip        corrupted copies of the inliers (images)
    noise, shuffled_columns       corrupted copies of the inliers (table)

Scores, higher = odder: the latents' `surprisal` and `novelty`; reconstruction error (squared
error of E[x | z = μ_φ(x)] on the model's inputs); for images the surprisal minus a lossless
compressor's code length of the pixels (Serrà et al. 2020) with lossless WebP (the fit part
of novelty), PNG and zlib; novelty's error and neighbours parts on their own (its fit part is
S for a table, S - webp code length for images); PCA reconstruction error
(d = latent_dim); and PyOD's IForest, KNN, AutoEncoder and VAE (.venv-peers, never in `make
test`), on the same inputs (pixels / 255; the table standardized on its training rows). Prints
AUROC and AP of each score on each set against the inliers: the median over seeds, the spread.
"""

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, module_command, write_results
from benchmarks._novelty_data import breast_cancer, fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


def peer_worker(data_path: Path, out_path: Path, seed: int) -> None:
    """In .venv-peers: fit PyOD's detectors on the npz's train rows and score every set."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.vae import VAE

    data = np.load(data_path)
    detectors = {
        "IForest": IForest(random_state=seed, n_jobs=2),
        "KNN": KNN(n_jobs=2),
        "AutoEncoder": AutoEncoder(epoch_num=10, batch_size=64, random_state=seed, verbose=0),
        "VAE": VAE(
            epoch_num=10, batch_size=64, latent_dim=int(data["latent_dim"]), random_state=seed, verbose=0
        ),
    }
    scores = {}
    for name, detector in detectors.items():
        detector.fit(data["train"])
        for key in data.files:
            if key.startswith("set_"):
                scores[f"{name}/{key[4:]}"] = detector.decision_function(data[key])
    np.savez(out_path, **scores)


def write_rows(
    path: Path, x: np.ndarray, columns: list[str] | None, labels: np.ndarray | None = None
) -> Path:
    """Rows as the pipeline reads them: an npz of images, or a CSV table."""
    if columns is None:
        np.savez(path.with_suffix(".npz"), x=x, **({"y": labels} if labels is not None else {}))
        return path.with_suffix(".npz")
    import pandas as pd

    frame = pd.DataFrame(x, columns=columns)
    if labels is not None:
        frame["label"] = labels
    frame.to_csv(path.with_suffix(".csv"), index=False)
    return path.with_suffix(".csv")


def our_scores(data: dict, seed: int, work: Path, knobs: dict) -> tuple[dict, int]:
    """Train the default model (with knobs set) on the train rows (the stages), score every set
    with the encode command; {score name/set: values} and the latent size."""
    from benchmarks.run_pipeline import overridden_params
    from pipeline import runner
    from pipeline.model.bundle import load_bundle

    table = data["columns"] is not None
    train = write_rows(work / "train", data["train"], data["columns"], data["labels"])
    overrides = {
        "seed": seed,
        "data.path": str(train),
        "data.test_fraction": 0.05,
        "data.source": "table" if table else "npz",
        **({"data.table.label_column": None} if table else {"data.npz.y_key": "y"}),
        **knobs,
    }
    paths = runner.run_paths(work / "run")
    params = overridden_params(overrides)
    runner.prepare(params, out_dir=paths["prepared"])
    runner.train(params, prepared_dir=paths["prepared"], model_dir=paths["model_dir"])
    runner.encode(params, prepared_dir=paths["prepared"], model_path=paths["model"], out_dir=paths["latents"])
    bundle = load_bundle(paths["model"])
    scores = {}
    for name, x in data["sets"].items():
        scores |= set_scores(name, x, data["columns"], bundle, paths, work)
    return scores, bundle.vae.latent_dim


def set_scores(name: str, x: np.ndarray, columns: list[str] | None, bundle, paths: dict, work: Path) -> dict:
    """One set scored by the encode command beside the trained run: its surprisal, novelty and
    reconstruction error, and for images S less a compressor's code length."""
    import pandas as pd

    from pipeline.data.readers.sources import load_source
    from pipeline.latents.complexity import NATS_PER_BYTE, code_nats
    from pipeline.latents.encode_command import encode_new_data, find_reference
    from pipeline.latents.imputation import decoded_means
    from pipeline.latents.new_data import input_config
    from pipeline.latents.scores import parts

    table = columns is not None
    path = write_rows(work / name, x, columns)
    options = {"label_column": None} if table else {"x_key": "x", "y_key": None}
    encode_new_data(paths["model"], path, work / "scored", split=name, reference=paths["latents"], **options)
    rows = pd.read_parquet(work / "scored" / f"split={name}").sort_values("id")
    stored = load_source(
        input_config(path, bundle.manifest.example_shape, bundle.manifest.columns, **options)
    ).x
    inputs, z = bundle.preprocess(stored), np.stack(rows["z_mean"].to_numpy())
    s, reference = rows["surprisal"].to_numpy(), find_reference(bundle, paths["latents"])
    means = decoded_means(bundle.vae, z).reshape(len(rows), -1)
    _, error, neighbours = parts(bundle.vae, reference, s, inputs, stored, z).T
    scores = {
        f"surprisal/{name}": s,
        f"novelty/{name}": rows["novelty"].to_numpy(),
        f"reconstruction error/{name}": ((inputs.reshape(len(rows), -1) - means) ** 2).sum(axis=1),
        f"novelty's error part/{name}": error,  # its fit part is S (tables) or S - webp code length
        f"novelty's neighbours part/{name}": neighbours,
    }
    if not table:
        scores[f"S - webp code length/{name}"] = s - code_nats(x)
        for compressor, length in (("png", png_bytes), ("zlib", zlib_bytes)):
            code = np.array([length(image) for image in x]) * NATS_PER_BYTE
            scores[f"S - {compressor} code length/{name}"] = s - code
    return scores


def png_bytes(image: np.ndarray) -> int:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format="PNG", optimize=True)
    return len(out.getvalue())


def zlib_bytes(image: np.ndarray) -> int:
    return len(zlib.compress(np.ascontiguousarray(image).tobytes(), 9))


def baseline_inputs(data: dict) -> dict:
    """The peers' inputs: pixels / 255, or the table standardized on its training rows."""
    flat = {
        name: np.asarray(x, np.float32).reshape(len(x), -1)
        for name, x in {"train": data["train"], **data["sets"]}.items()
    }
    if data["columns"] is None:
        return {name: x / 255 for name, x in flat.items()}
    mean, std = flat["train"].mean(axis=0), flat["train"].std(axis=0) + 1e-12
    return {name: (x - mean) / std for name, x in flat.items()}


def pca_scores(inputs: dict, latent_dim: int, seed: int) -> dict:
    from sklearn.decomposition import PCA

    pca = PCA(latent_dim, random_state=seed).fit(inputs["train"])
    return {
        f"PCA error/{name}": ((x - pca.inverse_transform(pca.transform(x))) ** 2).sum(axis=1)
        for name, x in inputs.items()
        if name != "train"
    }


def peer_scores(inputs: dict, latent_dim: int, seed: int, work: Path) -> dict:
    data, out = work / "peers-in.npz", work / "peers-out.npz"
    np.savez(
        data,
        latent_dim=latent_dim,
        train=inputs["train"],
        **{f"set_{name}": x for name, x in inputs.items() if name != "train"},
    )
    subprocess.run(
        [*module_command(__spec__, PEERS_PYTHON), "--peer-worker", str(data), str(out), str(seed)], check=True
    )
    with np.load(out) as scores:
        return {key: scores[key] for key in scores.files}


def figures(scores: dict, sets: list[str]) -> dict:
    """{score: {set: (AUROC, AP)}} of each set's rows against the inliers (positives: the set)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = {}
    for key in scores:
        score, name = key.rsplit("/", 1)
        if name == "inliers" or name not in sets:
            continue
        inliers, odd = scores[f"{score}/inliers"], scores[key]
        truth, values = np.r_[np.zeros(len(inliers)), np.ones(len(odd))], np.r_[inliers, odd]
        out.setdefault(score, {})[name] = (
            roc_auc_score(truth, values),
            average_precision_score(truth, values),
        )
    return out


def print_table(dataset: str, runs: list[dict]) -> None:
    sets = list(next(iter(runs[0].values())))
    for index, metric in enumerate(("AUROC", "AP")):
        print(f"\n{dataset}: {metric}, median over {len(runs)} seed(s) (min-max)")
        print(f"| score | {' | '.join(sets)} |\n|---|{'---|' * len(sets)}")
        for score in runs[0]:
            cells = []
            for name in sets:
                values = [run[score][name][index] for run in runs]
                spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
                cells.append(f"{statistics.median(values):.3f}{spread}")
            print(f"| {score} | {' | '.join(cells)} |", flush=True)


def every_score(data: dict, seed: int, peers: bool, knobs: dict) -> dict:
    """Ours, PCA's and (with peers) PyOD's scores of every set, for one seed."""
    with tempfile.TemporaryDirectory() as tmp:
        scores, latent_dim = our_scores(data, seed, Path(tmp), knobs)
        inputs = baseline_inputs(data)
        scores |= pca_scores(inputs, latent_dim, seed)
        if peers:
            scores |= peer_scores(inputs, latent_dim, seed, Path(tmp))
    return scores


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", default=["fashion_mnist", "breast_cancer"])
    parser.add_argument("--rows", type=int, default=2000, help="rows per scored set, at most")
    parser.add_argument("--no-peers", action="store_true", help="skip PyOD (no .venv-peers)")
    parser.add_argument("--json", type=Path, default=None, help="write every seed's figures here")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other knobs to set")
    parser.add_argument(
        "--save-scores", type=Path, default=None, help="write each seed's scores here (<dataset>-<seed>.npz)"
    )
    return parser.parse_args()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--peer-worker":
        return peer_worker(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    from benchmarks.run_pipeline import parse_overrides  # here: the peer worker's venv has no yaml

    args = arguments()
    loaders = {"fashion_mnist": fashion_mnist, "breast_cancer": breast_cancer}
    results = {}
    for dataset in args.only:
        runs = []
        for seed in args.seeds:
            data = loaders[dataset](np.random.default_rng(seed), args.rows)
            scores = every_score(data, seed, not args.no_peers, parse_overrides(args.set))
            if args.save_scores:
                args.save_scores.mkdir(parents=True, exist_ok=True)
                np.savez(args.save_scores / f"{dataset}-{seed}.npz", **scores)
            runs.append(figures(scores, list(data["sets"])))
            print(
                f"{dataset} seed {seed}: "
                + ", ".join(
                    f"{score} {run[0]:.3f}"
                    for score, run in ((s, v["held_out"]) for s, v in runs[-1].items())
                ),
                flush=True,
            )
        results[dataset] = runs
        print_table(dataset, runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    write_results("novelty", command_line(__spec__), results)


if __name__ == "__main__":
    main()
