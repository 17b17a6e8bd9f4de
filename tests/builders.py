"""Builders shared by the tests: data files in every format the readers take (IDX, CSV and
Parquet tables, image folders, AnnData, latent batches), the code blocks of the docs, and the
exact models the math is checked against.

They live here, not in a test file, so that no test file imports another.
"""

import re
from pathlib import Path

import numpy as np
from keras import ops
from scipy import stats

from pipeline.latents.parquet import LatentBatch, RowScores
from pipeline.model import subo
from pipeline.model.likelihoods import Gaussian
from pipeline.platform.params.load import parse_params
from tests.conftest import ROOT

# --- data files ------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, code=0x08) -> None:
    import gzip

    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1" if code == 0x08 else array.dtype).tobytes())


def data_config(**data):
    return parse_params({"data": data}).data


def make_table(path, n=60, label="label", extra=None):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    columns = {"a": rng.normal(size=n), "b": rng.uniform(5, 10, size=n), "c": rng.integers(0, 4, size=n)}
    if label:
        columns[label] = np.array(["cat", "dog", "eel"])[np.arange(n) % 3]
    columns.update(extra or {})
    table = pa.table(columns)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return table


def make_image_folder(root, sizes=((10, 12),), per_class=6, mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("circle", "square")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            shape = (h, w) if mode == "L" else (h, w, 3)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8) // (c + 1)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_mixed_table(path, n=300, seed=0):
    """Strings, booleans, a year, counts and real values, with missing cells, all driven by a
    2-d latent (so a model can learn them) and a 3-class label; CSV or Parquet by suffix."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    species = np.array(["Adelie", "Chinstrap", "Gentoo"])[np.digitize(z[:, 0], [-0.5, 0.5])]
    island = np.array(["Biscoe", "Dream", "Torgersen"])[
        np.digitize(z[:, 1] + 0.3 * rng.normal(size=n), [-0.4, 0.4])
    ]
    island = np.where(rng.uniform(size=n) < 0.05, "", island)  # empty strings: missing
    sex = np.where(z[:, 1] + rng.normal(size=n) > 0, "male", "female").astype(object)
    sex[rng.uniform(size=n) < 0.05] = None
    bill = 40 + 5 * z[:, 0] + rng.normal(size=n)
    bill[rng.uniform(size=n) < 0.1] = np.nan
    eggs = rng.poisson(np.exp(0.5 + 0.6 * z[:, 1])).astype(object)
    eggs[rng.uniform(size=n) < 0.05] = None
    table = pa.table(
        {
            "species": species,
            "island": island,
            "sex": pa.array(list(sex), pa.string()),
            "bill": bill,
            "mass": 4000 + 300 * z[:, 0] - 200 * z[:, 1] + 50 * rng.normal(size=n),
            "year": rng.integers(2007, 2010, size=n),
            "eggs": pa.array(list(eggs), pa.int64()),
            "alive": z[:, 0] + rng.normal(size=n) > -1,
        }
    )
    (pq.write_table if path.suffix == ".parquet" else pacsv.write_csv)(table, path)
    return table


def table_config(path, **table):
    return parse_params(
        {"data": {"source": "table", "path": str(path), "table": {"label_column": "species", **table}}}
    ).data


TYPES = np.array(["B", "NK", "T"])


def make_cells(path, n=300, genes=60, seed=0):
    """Negative-binomial counts of three cell types, each with its own marker genes; X CSR
    sparse, the same counts as a dense and a CSC layer; obs: cell_type and a batch column."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    kind = np.arange(n) % 3
    rate = np.full((3, genes), 0.3)
    for k in range(3):
        rate[k, k * 15 : (k + 1) * 15] = 6.0
    counts = rng.negative_binomial(2, 2 / (2 + rate[kind])).astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(TYPES[kind]), "batch": rng.integers(0, 2, n)},
            index=[f"cell{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(genes)]),
    )
    adata.layers["dense"] = counts
    adata.layers["by_column"] = sp.csc_matrix(counts)
    adata.write_h5ad(path)
    return counts, kind


def latent_batch(split, n, d, start=0):
    rng = np.random.default_rng(start)
    labels = np.arange(n) % 3
    labels[0] = -1  # no label
    surprisal = rng.gamma(5.0, size=n)
    return LatentBatch(
        split,
        np.arange(start, start + n),
        labels,
        rng.normal(size=(n, d)),
        rng.normal(size=(n, d)),
        RowScores(surprisal, None, None, surprisal),
    )


# --- the docs --------------------------------------------------------------------------

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?:<!-- illustrative: (?P<why>.+?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.M | re.S
)
RUN = {"python", "bash"}


def blocks(page: Path) -> list[dict]:
    text = page.read_text()
    return [
        {"lang": m["lang"], "code": m["code"], "why": m["why"], "line": text[: m.start()].count("\n") + 1}
        for m in FENCE.finditer(text)
    ]


# --- exact models ----------------------------------------------------------------------


def np_(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def gaussian_kl(m0, c0, m1, c1):
    """KL(N(m0, c0) ‖ N(m1, c1)) for full covariances, in float64."""
    c1_inv = np.linalg.inv(c1)
    diff = m1 - m0
    return 0.5 * (
        np.trace(c1_inv @ c0)
        + diff @ c1_inv @ diff
        - len(m0)
        + np.linalg.slogdet(c1)[1]
        - np.linalg.slogdet(c0)[1]
    )


class LinearGaussian:
    """p(z) = N(0, I_d), p(x|z) = N(Wz + b, diag σ²), σ one number or one per feature.

    W = diag(σ/σ_min) Q Λ with orthonormal Q keeps the exact posterior diagonal (its
    precision is I + WᵀΣ⁻¹W = I + Λ²/σ_min²), so a diagonal q can equal it.
    """

    def __init__(self, n=5, d=2, sigma=0.5, seed=1):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(n, d)))
        self.sigma = sigma  # as the likelihood takes it
        self.sigmas = np.broadcast_to(np.asarray(sigma, float), (n,)).copy()  # σ_i per feature
        self.W = (self.sigmas / self.sigmas.min())[:, None] * q * np.array([2.0, 0.7])[:d]  # (n, d)
        self.b = rng.normal(size=n)
        self.x = self.b + self.W @ rng.normal(size=d) + self.sigmas * rng.normal(size=n)  # (n,)

    def likelihood(self) -> Gaussian:
        return Gaussian(self.sigma) if np.isscalar(self.sigma) else Gaussian(lambda: self.sigmas)

    def surprisal(self):
        """S = log 1/p(x), exact."""
        cov = self.W @ self.W.T + np.diag(self.sigmas**2)
        return -stats.multivariate_normal(self.b, cov).logpdf(self.x)

    def posterior(self):
        """Mean and (diagonal) covariance of p(z|x)."""
        noise_precision = np.diag(self.sigmas**-2.0)
        cov = np.linalg.inv(np.eye(self.W.shape[1]) + self.W.T @ noise_precision @ self.W)
        return cov @ self.W.T @ noise_precision @ (self.x - self.b), cov

    def subo_exact(self, q_mean, q_var):
        """U = D + E_q[log 1/p(x|z)] in closed form for q = N(q_mean, diag q_var)."""
        residual = self.x - self.W @ q_mean - self.b
        spread = np.diag(self.W @ np.diag(q_var) @ self.W.T)
        expected = np.sum((residual**2 + spread) / (2 * self.sigmas**2))
        kl = float(np_(subo.kl_to_prior(q_mean[None], np.log(q_var)[None]))[0])
        return kl + expected + np.sum(np.log(self.sigmas * np.sqrt(2 * np.pi)))

    def sample_terms(self, q_mean, q_var, samples, rng):
        """The pipeline's reconstruction (m, 1) and log-weights (m, 1) for z_k ~ q."""
        z_mean, z_log_var = q_mean[None], np.log(q_var)[None]  # (1, d)
        eps = rng.normal(size=(samples, 1, len(q_mean)))
        z = np_(subo.reparameterize(z_mean, z_log_var, eps))  # (m, 1, d)
        decoded = z @ self.W.T + self.b  # (m, 1, n)
        reconstruction = np_(self.likelihood().surprisal(self.x[None], decoded))  # (m, 1)
        log_w = np_(
            subo.log_importance_weights(
                reconstruction,
                subo.standard_normal_log_density(z),
                subo.gaussian_log_density(z, z_mean, z_log_var),
            )
        )
        return reconstruction, log_w, z_mean, z_log_var


def fit_one_epoch(vae, x, batch_size=None):
    """One epoch of Adam on x by the pipeline's trainer (weight β on D, joint steps)."""
    import keras

    from pipeline.training.trainer import Trainer

    trainer = Trainer(vae)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(x, batch_size=batch_size, epochs=1, verbose=0)


def tree_bytes(root) -> dict:
    """Every file under root with its bytes: "byte-identical" made checkable."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
