"""The stages in one process, for tests, benchmarks and notebooks.

Each stage's recipe (which params it reads) is written once, as `from_params` in its module; the
scripts in stages/ call the same functions, one process each, under DVC.
"""

from pathlib import Path

from pipeline.platform.params.config import Params


def prepare(params: Params, *, out_dir):
    from pipeline.data import prepare as stage

    return stage.from_params(params, out_dir=out_dir)


def train(params: Params, *, prepared_dir, model_dir, callbacks: tuple = ()) -> dict:
    from pipeline.training import train as stage

    return stage.from_params(params, prepared_dir=prepared_dir, model_dir=model_dir, callbacks=callbacks)


def encode(params: Params, *, prepared_dir, model_path, out_dir) -> int:
    from pipeline.latents import encode as stage

    return stage.from_params(params, prepared_dir=prepared_dir, model_path=model_path, out_dir=out_dir)


def evaluate_all(params: Params, *, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """Every evaluation stage (the explorer's page after the UMAP), then the report; returns the
    combined metrics.

    Args:
        params: the run's params.
        prepared_dir, model_path, latents_dir: the stages' inputs.
        out_dir: data/evaluation.
    """
    from pipeline.evaluation import baselines, evaluate, umap_view
    from pipeline.evaluation.explorer import explore
    from pipeline.evaluation.report import write_report

    baselines.from_params(params, prepared_dir=prepared_dir, out_dir=out_dir)
    evaluate.from_params(
        params, prepared_dir=prepared_dir, model_path=model_path, latents_dir=latents_dir, out_dir=out_dir
    )
    umap_view.from_params(params, prepared_dir=prepared_dir, latents_dir=latents_dir, out_dir=out_dir)
    explore.from_params(
        params, prepared_dir=prepared_dir, model_path=model_path, latents_dir=latents_dir, out_dir=out_dir
    )
    return write_report(out_dir)[0]


def run_paths(root) -> dict:
    """The stages' inputs and outputs under `root`, laid out as dvc.yaml lays out data/."""
    root = Path(root)
    return {
        "prepared": root / "prepared",
        "model_dir": root / "model",
        "model": root / "model" / "model.keras",
        "latents": root / "latents",
        "evaluation": root / "evaluation",
    }


def run_all(params: Params, root) -> dict:
    """prepare -> train -> encode -> every evaluation stage, in this process, into `root` laid out
    as dvc.yaml lays out data/ (prepared/, model/, latents/, evaluation/).

    Returns:
        paths (prepared, model_dir, model, latents, evaluation), and what the stages returned:
        manifest, history (train's final epoch), rows (encoded), metrics (the report's).
    """
    paths = run_paths(root)
    manifest = prepare(params, out_dir=paths["prepared"])
    history = train(params, prepared_dir=paths["prepared"], model_dir=paths["model_dir"])
    rows = encode(params, prepared_dir=paths["prepared"], model_path=paths["model"], out_dir=paths["latents"])
    metrics = evaluate_all(
        params,
        prepared_dir=paths["prepared"],
        model_path=paths["model"],
        latents_dir=paths["latents"],
        out_dir=paths["evaluation"],
    )
    return {"paths": paths, "manifest": manifest, "history": history, "rows": rows, "metrics": metrics}
