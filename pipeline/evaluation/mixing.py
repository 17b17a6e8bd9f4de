"""Did the correction for a covariate work? Batch mixing and label conservation of an embedding.

For each categorical covariate (data.covariates) and each embedding (the latents, the raw
inputs, their PCA, and a PCA of the inputs standardized within each batch), on a seeded
sample of at most MIXING_ROWS test rows. Definitions as scib-metrics 0.5 (Luecken et al.
2022, "Benchmarking atlas-level data integration"), which benchmarks/covariates.py checks
these figures against:

- ilisi: the inverse Simpson index of the batches among each row's LISI_NEIGHBOURS nearest
  neighbours (Euclidean), weighted by a Gaussian kernel whose width gives perplexity
  PERPLEXITY; the median over rows, scaled to [0, 1]: (median - 1) / (batches - 1).
  1: every neighbourhood holds the batches in their overall proportions; 0: one batch each.
- silhouette_batch: per label, 1 - |silhouette| of the batches among that label's rows
  (labels held by one batch left out), averaged over labels: 1 is mixed, 0 separated.
- covariate_probe: a linear probe's test accuracy at telling the covariate from the
  embedding (the evaluate.probe protocol); near `chance` (the commonest level's share) when
  the embedding holds no trace of it. A figure that cannot be had (one batch among the rows,
  a level with fewer than PROBE_MIN_ROWS train rows) is None.
- clisi, ari, nmi (with labels): conservation of the label. clisi: the same LISI of the
  labels, scaled (labels - median) / (labels - 1), 1 when neighbourhoods hold one label;
  ari, nmi: agreement of a k-means clustering into as many clusters as labels with them.
"""

import numpy as np

from pipeline.data.covariates import stored_codes
from pipeline.data.prepared import seeded_rows
from pipeline.evaluation.probes import ProbeProtocol, linear_probe

LISI_NEIGHBOURS, PERPLEXITY = 90, 30
MIXING_ROWS = 5000  # silhouettes cost rows² per label
PROBE_MIN_ROWS = 5  # the covariate probe needs this many train rows of each level (else it is None)


def neighbourhoods(
    x: np.ndarray, neighbours: int = LISI_NEIGHBOURS, perplexity: float = PERPLEXITY
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest neighbours (Euclidean; itself among them) and their kernel weights
    (`_kernel`): what every LISI of the rows reads, whatever groups it counts."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, len(x))
    distance, index = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return index, _kernel(distance, index != np.arange(len(x))[:, None], min(perplexity, max(k // 3, 1)))


def lisi(x: np.ndarray, groups: np.ndarray, near: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each row's LISI of `groups` (integer codes): 1 / Σ_g (kernel weight of group g)²; near:
    the rows' `neighbourhoods`, when already found."""
    index, weights = near if near is not None else neighbourhoods(x)
    totals = np.zeros((len(x), int(groups.max()) + 1))
    np.add.at(totals, (np.repeat(np.arange(len(x)), index.shape[1]), groups[index].ravel()), weights.ravel())
    return 1.0 / np.sum(totals**2, axis=1)


def _kernel(
    distance: np.ndarray, neighbour: np.ndarray, perplexity: float, tol: float = 1e-5, tries: int = 50
) -> np.ndarray:
    """Row-normalised weights exp(-β d) over each row's neighbours (itself excluded), β found by
    bisection so that the weights' entropy is log(perplexity), as scib-metrics and harmonypy do.
    Computed relative to each row's nearest distance, so no row's weights all underflow."""
    target, n = np.log(perplexity), len(distance)
    beta, low, high = np.ones(n), np.full(n, -np.inf), np.full(n, np.inf)
    shifted = distance - np.where(neighbour, distance, np.inf).min(axis=1, keepdims=True)
    for _ in range(tries):
        p = np.where(neighbour, np.exp(-shifted * beta[:, None]), 0.0)
        p /= p.sum(axis=1, keepdims=True)
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        above = entropy - target
        searching = np.abs(above) >= tol  # each row stops where it meets the target
        if not searching.any():
            break
        wider = searching & (above > 0)  # too spread out: a larger β
        narrower = searching & ~wider
        low, high = np.where(wider, beta, low), np.where(narrower, beta, high)
        beta = np.where(
            wider,
            np.where(np.isinf(high), beta * 2, (beta + high) / 2),
            np.where(narrower, np.where(np.isinf(low), beta / 2, (beta + low) / 2), beta),
        )
    return p


def ilisi(x: np.ndarray, batch: np.ndarray, near=None) -> float | None:
    """None where the rows hold one batch: there is nothing to mix."""
    batches = len(np.unique(batch))
    return float((np.median(lisi(x, batch, near)) - 1) / (batches - 1)) if batches > 1 else None


def clisi(x: np.ndarray, labels: np.ndarray, near=None) -> float | None:
    classes = len(np.unique(labels))
    return float((classes - np.median(lisi(x, labels, near))) / (classes - 1)) if classes > 1 else None


def silhouette_batch(x: np.ndarray, batch: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_samples

    scores = []
    for label in np.unique(labels):
        rows = labels == label
        batches = len(np.unique(batch[rows]))
        if 1 < batches < rows.sum():
            scores.append(float(np.mean(1 - np.abs(silhouette_samples(x[rows], batch[rows])))))
    return float(np.mean(scores)) if scores else None


def cluster_agreement(x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters = KMeans(n_clusters=len(np.unique(labels)), n_init=10, random_state=seed).fit_predict(x)
    return {
        "ari": float(adjusted_rand_score(labels, clusters)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
    }


def mixing(
    embedding: tuple[np.ndarray, np.ndarray],
    batch: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray | None,
    protocol: ProbeProtocol,
) -> dict:
    """One embedding's figures for one covariate. embedding, batch: (train rows, test rows)
    (the probe is fitted on train); labels: of the test rows, or None."""
    (train, test), (train_batch, test_batch) = embedding, batch
    counts = np.bincount(train_batch)
    probed = (counts > 0).sum() > 1 and counts[counts > 0].min() >= PROBE_MIN_ROWS
    near = neighbourhoods(test)  # one kNN search and kernel for iLISI and cLISI
    figures = {
        "ilisi": ilisi(test, test_batch, near),
        "covariate_probe": linear_probe(train, train_batch, test, test_batch, protocol)[0]["accuracy"]
        if probed
        else None,
    }
    if labels is not None:
        figures |= {
            "silhouette_batch": silhouette_batch(test, test_batch, labels),
            "clisi": clisi(test, labels, near),
            **cluster_agreement(test, labels, protocol.seed),
        }
    return figures


def per_batch_standardized(
    train: np.ndarray, test: np.ndarray, train_batch: np.ndarray, test_batch: np.ndarray
):
    """Each feature standardized within each batch (on that batch's train rows): the simplest
    correction, for a PCA baseline."""
    out = [train.astype(np.float64), test.astype(np.float64)]
    for level in np.unique(train_batch):
        fit = train[train_batch == level]
        mean, sd = fit.mean(axis=0), fit.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        for part, batch in zip(out, (train_batch, test_batch)):
            part[batch == level] = (part[batch == level] - mean) / sd
    return tuple(out)


def mixing_rows(data: dict, seed: int) -> dict[str, np.ndarray]:
    """The rows every embedding is scored on: a seeded sample of at most MIXING_ROWS of each split."""
    return {split: seeded_rows(len(data[split]), MIXING_ROWS, seed) for split in ("train", "test")}


def covariate_codes(data: dict, rows: dict, covariates) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{covariate: (train codes, test codes)} of the categorical covariates, on `rows`."""
    codes = {split: stored_codes(data[split].x, rows[split], covariates) for split in ("train", "test")}
    return {name: (codes["train"][name], codes["test"][name]) for name in codes["test"]}


def covariate_figures(embeddings_of, codes: dict, labels: np.ndarray | None, protocol: ProbeProtocol) -> dict:
    """{covariate: {levels (in the test rows), chance, embeddings: {name: figures}}} (`mixing`);
    embeddings_of(the covariate's (train, test) codes) gives {name: (train rows, test rows)}."""
    out = {}
    for name, batch in codes.items():
        figures = {
            key: mixing(embedding, batch, labels, protocol) for key, embedding in embeddings_of(batch).items()
        }
        out[name] = {
            "levels": len(np.unique(batch[1])),
            "chance": float(np.bincount(batch[1]).max() / len(batch[1])),
            "embeddings": figures,
        }
    return out
