"""The rows benchmarks/novelty.py scores: each dataset's train rows (the seen classes, or the
benign tumours) and its sets of odd rows (held-out classes, noise, occlusion, flips, shuffled
columns) beside inliers.
"""

import numpy as np

HELD_OUT = (8, 9)  # Fashion-MNIST's bag and ankle boot


def fashion_mnist(rng: np.random.Generator, rows: int) -> dict:
    """Seen classes' training images; the test sets of module doc, uint8 (n, 28, 28)."""
    from pipeline.data.readers.idx import read_idx_release

    data = read_idx_release("fashion_mnist", None)
    seen = ~np.isin(data.y, HELD_OUT)
    inliers = _some(rng, data.x[data.is_test & seen], rows)
    noisy = np.clip(inliers + rng.normal(0, 25.5, inliers.shape), 0, 255).round().astype(np.uint8)
    occluded = inliers.copy()
    for image, (top, left) in zip(occluded, rng.integers(0, 28 - 10, (len(occluded), 2))):
        image[top : top + 10, left : left + 10] = 255
    train = data.x[~data.is_test & seen]
    sets = {
        "inliers": inliers,
        "held_out": _some(rng, data.x[data.is_test & ~seen], rows),
        "noise": noisy,
        "occlusion": occluded,
        "flip": inliers[:, ::-1],
    }
    return {"train": train, "labels": data.y[~data.is_test & seen], "sets": sets, "columns": None}


def breast_cancer(rng: np.random.Generator, rows: int) -> dict:
    """The benign rows' 70% to train on; benign test rows, malignant rows and corrupted copies."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    benign, malignant = data.data[data.target == 1], data.data[data.target == 0]
    order = rng.permutation(len(benign))
    train, inliers = benign[order[: int(0.7 * len(benign))]], benign[order[int(0.7 * len(benign)) :]]
    inliers = _some(rng, inliers, rows)
    shuffled = np.stack([rng.permutation(column) for column in inliers.T], axis=1)
    sets = {
        "inliers": inliers,
        "held_out": _some(rng, malignant, rows),
        "noise": inliers + rng.normal(0, 1, inliers.shape) * train.std(axis=0),
        "shuffled_columns": shuffled,
    }
    return {
        "train": train,
        "labels": None,
        "sets": sets,
        "columns": [name.replace(" ", "_") for name in data.feature_names],
    }


def _some(rng, x: np.ndarray, rows: int) -> np.ndarray:
    return x[np.sort(rng.permutation(len(x))[:rows])] if len(x) > rows else x
