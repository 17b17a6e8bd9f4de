"""The stages in one process, for tests, benchmarks and notebooks.

The same calls with the same params that the scripts in stages/ make, one process each,
under DVC.
"""

from pipeline.config import Params, as_dict


def prepare(params: Params, *, out_dir) -> dict:
    from pipeline.data import prepare as prepare_data

    return prepare_data(params.data, seed=params.seed, out_dir=out_dir, likelihood=params.model.likelihood)


def train(params: Params, *, prepared_dir, model_dir, callbacks: tuple = ()) -> dict:
    from pipeline.train import train as fit

    return fit(prepared_dir=prepared_dir, model_dir=model_dir, model=params.model, loss=params.loss,
               training=params.train, validation_fraction=params.data.validation_fraction,
               binarize=params.data.binarize, seed=params.seed, callbacks=callbacks)


def encode(params: Params, *, prepared_dir, model_path, out_dir) -> int:
    from pipeline.encode import encode as encode_all

    return encode_all(prepared_dir=prepared_dir, model_path=model_path, out_dir=out_dir,
                      batch_size=params.encode.batch_size, run_params=as_dict(params), workers=params.encode.workers)


def evaluate_all(params: Params, *, prepared_dir, model_path, latents_dir, out_dir) -> dict:
    """Every evaluation stage, then the report; returns the combined metrics."""
    from pipeline.baselines import baselines
    from pipeline.evaluate import evaluate
    from pipeline.probes import ProbeProtocol
    from pipeline.report import write_report
    from pipeline.umap_view import umap_view

    cfg, seed = params.evaluate, params.seed
    protocol = ProbeProtocol.of(cfg.probe, knn_k=cfg.knn_k, seed=seed)
    baselines(prepared_dir=prepared_dir, out_dir=out_dir, dim=params.model.latent_dim, protocol=protocol)
    evaluate(prepared_dir=prepared_dir, model_path=model_path, latents_dir=latents_dir, out_dir=out_dir,
             protocol=protocol, importance_samples=cfg.importance_samples, surprisal_examples=cfg.surprisal_examples,
             gradient_variance=cfg.gradient_variance, validation_fraction=params.data.validation_fraction,
             binarize=params.data.binarize, seed=seed)
    umap_view(prepared_dir=prepared_dir, latents_dir=latents_dir, out_dir=out_dir, umap=cfg.umap, seed=seed)
    return write_report(out_dir)[0]
