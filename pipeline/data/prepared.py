"""The reader of prepared data (written by `pipeline.data.prepare`): splits, preprocessing, fixed rows.

`.npy` files are memory-mapped on read, and the one `Preprocessor` of the pipeline scales
them per batch (`Split.inputs`), so pixels take a byte each on disk and in the page cache,
and new data is encoded exactly as the training data was. Reading needs nothing of the
source readers or of the `auto` rules: a change to those re-runs prepare only.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Manifest
from pipeline.data.splits import HoldOut
from pipeline.platform.errors import DataError

SPLITS = ("train", "test")
ARRAYS = ("x", "y", "id")
# The preprocessing's file name, in data/prepared and in the model bundle alike.
PREPROCESSING_FILE = "preprocessing.npz"


@dataclass(frozen=True)
class Preprocessor:
    """x' = (x - offset) / scale, then clipping to [0, 1] (unit) and thresholding (static).

    offset and scale broadcast against one example; prepare fits them on the train split only
    (`pipeline.data.scaling.fit_preprocessor`).

    Tables (`source` set): x holds one code per column (pipeline.data.readers.tables) and x' one value
    per model feature: feature i reads column source[i]; a categorical column's features
    are its one-hot (feature i is 1 where the code is level[i]); offset and scale are
    those of the real columns (0 and 1 elsewhere), and only real features (`real`) are
    clipped. A missing cell (NaN) stays NaN in every feature of its column.

    Covariates (`covariate_widths` set, one entry per covariate): the last k stored values
    of a row are their codes, and the model's inputs end with them: a categorical one's
    one-hot (width its levels), a real one's (value - covariate_offset) / covariate_scale
    (width 0 marks it real).
    """

    scaling: str
    offset: np.ndarray
    scale: np.ndarray
    threshold: float | None = None  # set for static binarization
    source: np.ndarray | None = None  # (F,) int: the column of each feature
    level: np.ndarray | None = None  # (F,) float: the level a one-hot feature stands for, -1 elsewhere
    real: np.ndarray | None = None  # (F,) bool: the features of real columns
    covariate_widths: np.ndarray | None = None  # (k,) int: levels of each covariate, 0 for a real one
    covariate_offset: np.ndarray | None = None  # (k,) float
    covariate_scale: np.ndarray | None = None  # (k,) float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.covariate_widths is None:
            return self._features(x)
        x, k = np.asarray(x), len(self.covariate_widths)
        return np.concatenate([self._features(x[:, :-k]), self.covariate_inputs(x[:, -k:])], axis=1)

    def covariate_inputs(self, codes: np.ndarray) -> np.ndarray:
        """(n, covariate inputs): each categorical covariate's one-hot, each real one standardized."""
        parts = []
        for j, width in enumerate(self.covariate_widths):
            column = np.asarray(codes[:, j], np.float32)
            parts.append(
                (column[:, None] == np.arange(width, dtype=np.float32)).astype(np.float32)
                if width
                else ((column - self.covariate_offset[j]) / self.covariate_scale[j])[:, None]
            )
        return np.concatenate(parts, axis=1)

    def _features(self, x: np.ndarray) -> np.ndarray:
        if self.source is None:
            out = np.array(x, np.float32)  # a copy; the rest works in place: one float32 array per call
        else:
            out = np.asarray(x, np.float32)[:, self.source]  # (n, F), a new array
            hot = self.level >= 0
            codes = out[:, hot]
            out[:, hot] = np.where(np.isnan(codes), np.nan, codes == self.level[hot])
        out -= self.offset
        out /= self.scale
        if self.scaling == "unit":  # test values outside the train range
            clipped = out if self.real is None else out[:, self.real]
            np.clip(clipped, 0.0, 1.0, out=clipped)
            if self.real is not None:
                out[:, self.real] = clipped
        if self.threshold is not None:
            np.greater(out, self.threshold, out=out)
        return out

    @property
    def covariate_width(self) -> int:
        """How many of the model's inputs (the last ones) are covariates."""
        return 0 if self.covariate_widths is None else int(np.maximum(self.covariate_widths, 1).sum())

    def output_shape(self, stored_shape) -> list[int]:
        """The shape of one preprocessed example, given the stored one."""
        if self.covariate_widths is not None:
            features = self._feature_shape([stored_shape[0] - len(self.covariate_widths)])
            return [features[0] + self.covariate_width]
        return self._feature_shape(stored_shape)

    def _feature_shape(self, stored_shape) -> list[int]:
        return list(stored_shape) if self.source is None else [len(self.source)]

    def save(self, path: Path) -> None:
        table = {} if self.source is None else {"source": self.source, "level": self.level, "real": self.real}
        if self.covariate_widths is not None:
            table |= {
                "covariate_widths": self.covariate_widths,
                "covariate_offset": self.covariate_offset,
                "covariate_scale": self.covariate_scale,
            }
        np.savez(
            path,
            offset=self.offset,
            scale=self.scale,
            scaling=self.scaling,
            threshold=np.nan if self.threshold is None else self.threshold,
            **table,
        )

    @classmethod
    def load(cls, path: Path) -> "Preprocessor":
        try:
            f = np.load(path)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read the preprocessing ({error})") from None
        with f:
            threshold = float(f["threshold"])
            table = {
                name: f[name]
                for name in (
                    "source",
                    "level",
                    "real",
                    "covariate_widths",
                    "covariate_offset",
                    "covariate_scale",
                )
                if name in f.files
            }
            return cls(
                str(f["scaling"]),
                f["offset"],
                f["scale"],
                None if np.isnan(threshold) else threshold,
                **table,
            )


@dataclass(frozen=True)
class Split:
    """One prepared split: arrays are memory-mapped, rows aligned; x holds the stored values."""

    x: np.ndarray
    y: np.ndarray
    id: np.ndarray
    preprocess: Preprocessor

    def __len__(self) -> int:
        return len(self.id)

    def inputs(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The model's inputs for those rows: the stored values, preprocessed (float32)."""
        return self.preprocess(self.x[rows])


def load_split(prepared_dir: str | Path, split: str, manifest: Manifest | None = None) -> Split:
    """Memory-map one prepared split, checking it against the manifest."""
    manifest = manifest or Manifest.read(prepared_dir)
    arrays = {}
    for name in ARRAYS:
        path = Path(prepared_dir) / split / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read prepared array ({error})") from None
    expected = (manifest.counts[split], *manifest.example_shape)
    if (
        arrays["x"].shape != expected
        or str(arrays["x"].dtype) != manifest.dtypes["x"]
        or not len(arrays["y"]) == len(arrays["id"]) == expected[0]
    ):
        raise DataError(
            f"{Path(prepared_dir) / split}: arrays do not match manifest.json (expected x of shape "
            f"{expected} {manifest.dtypes['x']}, got {arrays['x'].shape} {arrays['x'].dtype}); "
            "re-run the prepare stage (dvc repro prepare)"
        )
    return Split(**arrays, preprocess=Preprocessor.load(Path(prepared_dir) / PREPROCESSING_FILE))


def load_splits(prepared_dir: str | Path) -> tuple[Manifest, dict[str, Split]]:
    """The manifest and every split, read once."""
    manifest = Manifest.read(prepared_dir)
    return manifest, {split: load_split(prepared_dir, split, manifest) for split in SPLITS}


def is_labelled(manifest: Manifest, splits: dict[str, Split]) -> bool:
    """Two classes or more and a label on every example: what the probes need."""
    return len(manifest.label_names) > 1 and all(int(np.min(s.y)) >= 0 for s in splits.values() if len(s))


def seeded_rows(length: int, n: int, seed: int) -> np.ndarray:
    """At most n distinct row indices out of `length`, chosen with a seed, sorted."""
    return np.sort(np.random.default_rng(seed).choice(length, size=min(n, length), replace=False))


def validation_rows(
    y: np.ndarray, fraction: float, seed: int, scratch: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) row indices of the prepared train split, the same in every stage;
    memory-mapped in `scratch` when given."""
    if fraction == 0:
        return np.arange(len(y)), np.arange(0)
    return HoldOut.fit(y, fraction, seed, "validation").indices(y, scratch)


def binarization_draw(x: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    """The fixed draw x_b ~ Bernoulli(x) of split rows `rows` under dynamic binarization.

    Training resamples x_b every batch; validation and every score use this one draw, a
    function of (seed, row, feature) alone: the same row gets the same draw whatever the
    batch it is read in, in training's validation and in evaluate alike.
    """
    width = int(np.prod(x.shape[1:], dtype=np.int64))
    uniform = _counter_uniform(seed, np.asarray(rows, np.int64), width).reshape(x.shape)
    return (uniform < x).astype(np.float32)


def _counter_uniform(seed: int, rows: np.ndarray, width: int) -> np.ndarray:
    """Uniforms in [0, 1), (len(rows), width), from SplitMix64 of the counter (row, feature) and seed."""
    with np.errstate(over="ignore"):
        counter = rows.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
        z = counter + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def fixed_inputs(split: Split, rows: np.ndarray, binarize: str, seed: int) -> np.ndarray:
    """The inputs of split rows `rows` as every score sees them (a few thousand at most):
    preprocessed, and under dynamic binarization the fixed `binarization_draw`."""
    subset = split.inputs(rows)
    return binarization_draw(subset, rows, seed) if binarize == "dynamic" else subset
