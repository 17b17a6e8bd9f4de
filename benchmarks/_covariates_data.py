"""The two simulated datasets of benchmarks/covariates.py, each with a strong nuisance (counts in
batches, a table measured at sites), and their inputs as the encoder sees them.
"""

from pathlib import Path

import numpy as np


def simulate_counts(path: Path, seed: int, n: int = 3000, genes: int = 400, types: int = 5, batches: int = 4):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(types, 0.8), size=batches)  # each batch holds the types unevenly
    batch = rng.integers(0, batches, n)
    kind = np.array([rng.choice(types, p=shares[b]) for b in batch])
    profile = rng.gamma(0.6, 1.5, size=(types, genes))
    for t in range(types):
        profile[t, t * 20 : (t + 1) * 20] *= 3.0  # marker genes
    scale = np.exp(rng.normal(0, 0.8, size=(batches, genes)))  # the batch effect, gene by gene
    size = np.exp(rng.normal(0, 0.3, n) + rng.normal(0, 0.5, batches)[batch])[:, None]
    mean = profile[kind] * scale[batch] * size
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in kind]),
            "batch": pd.Categorical([f"batch{b}" for b in batch]),
        },
        index=[f"c{i}" for i in range(n)],
    )
    ad.AnnData(X=counts, obs=obs).write_h5ad(path)
    return {"source": "anndata", "data.anndata.label_key": "cell_type", "covariate": "batch"}


def simulate_table(path: Path, seed: int, n: int = 3000, features: int = 20, labels: int = 3, sites: int = 5):
    import pandas as pd

    rng = np.random.default_rng(seed)
    label, site = rng.integers(0, labels, n), rng.integers(0, sites, n)
    x = rng.normal(0, 1.5, (labels, features))[label] + rng.normal(0, 1.5, (sites, features))[site]
    frame = pd.DataFrame(x + rng.normal(size=(n, features)), columns=[f"f{j}" for j in range(features)])
    frame["label"], frame["site"] = [f"class{k}" for k in label], [f"site{s}" for s in site]
    frame.to_csv(path, index=False)
    return {"source": "table", "data.table.label_column": "label", "covariate": "site"}


def inputs_of(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(the inputs as the encoder sees them, the covariate's codes) of every row, by id."""
    import pandas as pd

    if spec["source"] == "anndata":
        import anndata as ad

        adata = ad.read_h5ad(path)
        return np.log1p(np.asarray(adata.X, np.float64)), adata.obs[spec["covariate"]].cat.codes.to_numpy()
    frame = pd.read_csv(path)
    x = frame.filter(like="f").to_numpy(np.float64)
    return x, pd.Categorical(frame[spec["covariate"]]).codes
