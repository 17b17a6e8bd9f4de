"""Probes: how much label information do features carry, measured the same way for all.

Every feature set (latents, raw inputs, PCA of the inputs) goes through the same protocol:
a seeded, stratified subsample of train (at most `max_train` rows), a held-out part of it
to choose the logistic regression's C over a log grid, a refit on the whole subsample,
and one score on a seeded, stratified subsample of test (at most `max_test` rows). The kNN
probe uses the same rows. Callers gather features for `probe_rows` only, so no probe
reads a whole split.
"""

from dataclasses import dataclass

import numpy as np

from pipeline.data.splits import HoldOut
from pipeline.platform.errors import ConfigError
from pipeline.platform.params.config import ProbeConfig


@dataclass(frozen=True)
class ProbeProtocol:
    c_grid: tuple[float, ...]
    validation_fraction: float
    max_train: int
    max_test: int
    knn_k: int
    seed: int

    @classmethod
    def of(cls, probe: ProbeConfig, knn_k: int, seed: int) -> "ProbeProtocol":
        """The protocol that evaluate.probe, evaluate.knn_k and the seed describe."""
        return cls(
            c_grid=probe.c_grid,
            validation_fraction=probe.validation_fraction,
            max_train=probe.max_train_examples,
            max_test=probe.max_test_examples,
            knn_k=knn_k,
            seed=seed,
        )


def check_knn_k(protocol: ProbeProtocol, train_rows: int) -> None:
    """k neighbours out of the probe's training rows: k >= rows votes the majority class for every point."""
    rows = min(train_rows, protocol.max_train)
    if protocol.knn_k >= rows:
        raise ConfigError(
            f"params.yaml: evaluate.knn_k must be smaller than the kNN probe's training rows "
            f"({rows} here). Got {protocol.knn_k} instead."
        )


class RowSpace:
    """Coordinates in the span of the fitted rows, when there are more features than rows.

    An L2-penalised logistic regression's weights lie in that span (the loss reads X·w, and
    any part of w off the span only adds to the penalty; the intercept is not penalised), so
    the regression fitted on these coordinates is the same model as on all the features, at
    rows/features of the cost per iteration: 12,288 raw values of 64×64×3 photos become at
    most as many coordinates as the probe has rows. Feature sets with fewer features than
    rows pass through unchanged.
    """

    def fit(self, x, y=None):
        if x.shape[1] <= x.shape[0]:
            self.basis = None
            return self
        # The right singular vectors from the rows' Gram matrix (rows² × features: an SVD of
        # the wide matrix costs several times more); λ = s², directions of λ ≈ 0 carry nothing.
        values, vectors = np.linalg.eigh(x @ x.T)
        keep = values > values[-1] * max(x.shape) * np.finfo(x.dtype).eps
        self.basis = (x.T @ vectors[:, keep]) / np.sqrt(values[keep])
        return self

    def transform(self, x):
        return x if self.basis is None else x @ self.basis

    def fit_transform(self, x, y=None):
        return self.fit(x).transform(x)


def _logistic(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), RowSpace(), LogisticRegression(C=c, max_iter=1000, random_state=seed)
    )


def linear_probe(train_x, train_y, test_x, test_y, protocol: ProbeProtocol) -> tuple[dict, np.ndarray]:
    """StandardScaler + LogisticRegression, C chosen on a held-out part of train.

    Returns the scores (test accuracy and macro-F1, the chosen C and its validation
    accuracy) and the test predictions.

    Args:
        train_x, train_y: the probe's train features and labels.
        test_x, test_y: its test features and labels.
        protocol: the C grid, validation fraction and seed.
    """
    from sklearn.metrics import f1_score

    fit, held = HoldOut.fit(train_y, protocol.validation_fraction, protocol.seed, "probe validation").indices(
        train_y
    )
    validation = {
        c: _logistic(c, protocol.seed).fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held])
        for c in protocol.c_grid
    }
    best = max(protocol.c_grid, key=lambda c: (validation[c], -c))  # ties: the stronger regularisation
    predicted = _logistic(best, protocol.seed).fit(train_x, train_y).predict(test_x)
    scores = {
        "accuracy": float(np.mean(predicted == test_y)),
        "macro_f1": float(f1_score(test_y, predicted, average="macro")),
        "C": best,
        "validation_accuracy": float(validation[best]),
    }
    return scores, predicted


def knn_probe(train_x, train_y, test_x, test_y, k: int) -> float:
    """Test accuracy of k-nearest-neighbour voting on standardised features.

    Args:
        train_x, train_y: the train features and labels.
        test_x, test_y: the test features and labels.
        k: neighbours per vote.
    """
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    return float(model.fit(train_x, train_y).score(test_x, test_y))


def probe_rows(
    train_y: np.ndarray, test_y: np.ndarray, protocol: ProbeProtocol
) -> tuple[np.ndarray, np.ndarray]:
    """The train and test rows every probe uses: seeded, stratified subsamples (as data.max_examples)."""

    def capped(y, cap, what):
        if cap >= len(y):
            return np.arange(len(y))
        return HoldOut.fit(y, len(y) - cap, protocol.seed, what).indices(y, held=False)[
            0
        ]  # only the cap rows

    return (
        capped(train_y, protocol.max_train, "probe subsample"),
        capped(test_y, protocol.max_test, "probe test subsample"),
    )


def probe_suite(features: dict, train_y, test_y, protocol: ProbeProtocol) -> tuple[dict, np.ndarray]:
    """Linear and kNN probes on each feature set {name: (train_x, test_x)} with one protocol.

    The features and labels are those of `probe_rows`. Returns {name: {"linear": {...},
    "knn": accuracy, "dim": d}} and the test predictions of the first feature set's linear probe.
    """
    results, first_predictions = {}, None
    for name, (train_x, test_x) in features.items():
        linear, predicted = linear_probe(train_x, train_y, test_x, test_y, protocol)
        results[name] = {
            "linear": linear,
            "knn": knn_probe(train_x, train_y, test_x, test_y, protocol.knn_k),
            "dim": int(train_x.shape[1]),
        }
        first_predictions = predicted if first_predictions is None else first_predictions
    return {
        "train_examples": int(len(train_y)),
        "test_examples": int(len(test_y)),
        **results,
    }, first_predictions
