"""64×64 colour photos with only the data keys set: time to a first result, and the latents'
probes against PCA's.

    make peers-env                      # the benchmark-only environment, with scikit-image
    .venv/bin/python -m benchmarks.photos --seeds 0 1 2
    .venv/bin/python -m benchmarks.photos --seeds 0 --set train.epochs=200 --same-time
        # a variant, interleaved,
                                        # its training stopped after the defaults' training time

The photos: six colour photographs that ship inside scikit-image and scikit-learn
(astronaut, chelsea the cat, coffee, rocket, the Chinese temple, the flower; 300 to 640
pixels a side), 400 random square crops of each (a side of 25% to 60% of the photo's
shorter side, anywhere in it, mirrored half the time), resized to 64×64 and written as PNG
in one folder per photo: 2,400 images, six classes. Classifying a crop means recognising its
photo from a part of it: colours, textures and shapes.

Each seed runs the whole pipeline (prepare, train, encode, baselines, evaluate, umap, report)
in this process with params.yaml as shipped plus data.source / data.path, then the same
with each --set variant, interleaved. Prints each run's probes (latents, PCA of the same
size, raw pixels), the epochs, the stage times, and the medians over seeds.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._common import command_line, write_results
from benchmarks.run_pipeline import overridden_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "china", "flower")
GENERATE = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
import skimage.data
from sklearn.datasets import load_sample_image

out, per_class, side = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
for name in sys.argv[4:]:
    photo = load_sample_image(name + ".jpg") if name in ("china", "flower") else getattr(skimage.data, name)()
    (out / name).mkdir(parents=True)
    h, w = photo.shape[:2]
    for i in range(per_class):
        crop = int(rng.uniform(0.25, 0.6) * min(h, w))
        top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        image = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.LANCZOS)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        image.save(out / name / f"{i:04d}.png")
"""


def generate(folder: Path, python: str, per_class: int, side: int) -> None:
    """The crops, written by `python` (scikit-image is no dependency of the pipeline)."""
    subprocess.run([python, "-c", GENERATE, str(folder), str(per_class), str(side), *PHOTOS], check=True)


def stop_after(seconds: float):
    """A Keras callback ending training at the first epoch end after `seconds` of training."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training |= time.perf_counter() - self.start >= seconds

    return StopAfter()


def _stages(params, out: Path, train_seconds: float | None) -> dict:
    """The pipeline's stages in the order they run, each a call writing under `out`; training
    stops after `train_seconds` when given."""
    from pipeline.evaluation import baselines, evaluate, umap_view
    from pipeline.evaluation.report import write_report
    from pipeline.runner import encode, prepare, train

    model = out / "model" / "model.keras"
    return {
        "prepare": lambda: prepare(params, out_dir=out / "prepared"),
        "train": lambda: train(
            params,
            prepared_dir=out / "prepared",
            model_dir=out / "model",
            callbacks=(stop_after(train_seconds),) if train_seconds else (),
        ),
        "encode": lambda: encode(
            params, prepared_dir=out / "prepared", model_path=model, out_dir=out / "latents"
        ),
        "baselines": lambda: baselines.from_params(
            params, prepared_dir=out / "prepared", out_dir=out / "evaluation"
        ),
        "evaluate": lambda: evaluate.from_params(
            params,
            prepared_dir=out / "prepared",
            model_path=model,
            latents_dir=out / "latents",
            out_dir=out / "evaluation",
        ),
        "umap": lambda: umap_view.from_params(
            params, prepared_dir=out / "prepared", latents_dir=out / "latents", out_dir=out / "evaluation"
        ),
        "report": lambda: write_report(out / "evaluation"),
    }


def _summary(out: Path, seed: int, overrides: dict, seconds: dict) -> dict:
    """One run's row: the probes of the latents, PCA and raw pixels, the epochs, the choices
    that matter here and the stage seconds."""
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    choices = json.loads((out / "model" / "choices.json").read_text())
    base = metrics["baselines"]
    return {
        "seed": seed,
        "set": overrides,
        "linear": metrics["probe"]["accuracy"],
        "knn": metrics["knn"]["accuracy"],
        "pca_linear": base["pca"]["linear"]["accuracy"],
        "pca_knn": base["pca"]["knn"],
        "raw_linear": base["raw"]["linear"]["accuracy"],
        "raw_knn": base["raw"]["knn"],
        "bits_per_dim_S_100": metrics["subo"]["test"]["bits_per_dim"]["S_K"].get("100"),
        "epochs": json.loads((out / "model" / "live" / "metrics.json").read_text())["step"] + 1,
        "filters": choices["model.filters"]["value"],
        "likelihood": choices["model.likelihood"]["value"],
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
    }


def run(folder: Path, seed: int, overrides: dict, out: Path, train_seconds: float | None = None) -> dict:
    """The whole pipeline on the photos in `folder`, each stage timed; returns the run's row."""
    params = overridden_params(
        {"data.source": "image_folder", "data.path": str(folder), "seed": seed, **overrides}
    )
    seconds = {}
    for name, stage in _stages(params, out, train_seconds).items():
        start = time.perf_counter()
        stage()
        seconds[name] = round(time.perf_counter() - start)
    return _summary(out, seed, overrides, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help="a variant to run beside the shipped defaults (repeatable)",
    )
    parser.add_argument(
        "--same-time",
        action="store_true",
        help="stop each variant's training after the defaults' training time of the same seed",
    )
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument(
        "--python",
        default=str(ROOT / ".venv-peers" / "bin" / "python"),
        help="a python with scikit-image, Pillow and scikit-learn (make peers-env)",
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="crops written by an earlier run (skips making them)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vae-photos-"))
    folder = args.folder or work / "photos"
    if args.folder is None:
        generate(folder, args.python, args.per_class, args.side)
    variants = [{}] + [parse_overrides(v.split(";")) for v in args.set]
    rows = []
    for seed in args.seeds:
        for i, overrides in enumerate(variants):
            limit = rows[-i]["seconds"]["train"] if i and args.same_time else None
            rows.append(run(folder, seed, overrides, work / f"run-{seed}-{i}", limit))
            print(json.dumps(rows[-1]), flush=True)
    print_medians(rows, variants, args.seeds)


def print_medians(rows: list[dict], variants: list[dict], seeds: list[int]) -> None:
    """Each variant's medians over the seeds, printed and written to results/ with every run."""
    summaries = []
    for overrides in variants:
        mine = [r for r in rows if r["set"] == overrides]
        medians = {
            key: round(statistics.median(r[key] for r in mine), 3)
            for key in ("linear", "knn", "pca_linear", "pca_knn", "raw_linear", "raw_knn", "total_seconds")
        }
        print(f"median over seeds {seeds}, {overrides or 'defaults'}: {json.dumps(medians)}")
        summaries.append({"set": overrides, "seeds": seeds, **medians})
    write_results("photos", command_line(__spec__), {"runs": rows, "medians": summaries})


if __name__ == "__main__":
    main()
