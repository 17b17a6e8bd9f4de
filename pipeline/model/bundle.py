"""The trained model directory: the one place that knows its files.

    data/model/model.keras          the whole VAE, optimizer state included
    data/model/encoder.keras        built-in Keras layers only: loads with plain Keras
    data/model/preprocessing.npz    how the training inputs were scaled (data.Preprocessor)
    data/model/data_manifest.json   the training data's manifest: shape, labels, feature names
    data/model/choices.json         the value of every `auto` knob and the rule that chose it
    data/model/run.json             the run's resolved params (model, loss, train, seed...)

train saves it (into a staging directory it then publishes whole: pipeline.platform.io); encode,
evaluate and the encode command load it, so no stage module needs another for a file name
or a loader. A bundle is read, and its model hashed, under the directory's shared lock
(pipeline.platform.locks): a train stage publishing a new one waits, so a reader never
mixes two.

A model file is code-adjacent: Keras rebuilds its layers from the file's config. Only the
`.keras` format is loaded, always with Keras' safe_mode (no Python lambdas deserialized),
and only layers Keras ships or this package registers are built; weights are data. That is
where safe loading ends: a model from someone you do not trust can still make the encoder
compute anything its architecture allows, so treat its outputs as that person's.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.manifest import Manifest
from pipeline.data.prepared import PREPROCESSING_FILE, Preprocessor
from pipeline.platform.errors import DataError
from pipeline.platform.faults import fault_point
from pipeline.platform.io import sha256_file, write_json
from pipeline.platform.locks import directory_lock

MODEL_FILE = "model.keras"
ENCODER_FILE = "encoder.keras"
DATA_MANIFEST_FILE = "data_manifest.json"
CHOICES_FILE = "choices.json"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class Bundle:
    """A loaded model directory. manifest, preprocess, choices and run are None for a bare model.keras."""

    vae: object  # pipeline.model.vae.VAE
    model_path: Path
    manifest: Manifest | None
    preprocess: Preprocessor | None
    choices: dict | None = None
    run: dict | None = None  # pipeline.training.resolve_run.Run.as_params()
    model_sha256: str | None = None  # of the model file read, hashed under the same lock

    @property
    def input_shape(self) -> list[int]:
        """One preprocessed example as the model reads it: x's features, then its covariates."""
        return list(self.vae.input_example_shape)

    def check_shape(self, shape, where) -> None:
        """Raise DataError unless preprocessed examples of `shape` (from `where`) fit the model."""
        if self.input_shape != list(shape):
            raise DataError(
                f"{self.model_path}: model takes examples of shape {self.input_shape}, but {where} "
                f"holds {list(shape)}; retrain the model or resize the input"
            )


def save_bundle(
    vae, directory: str | Path, preprocessing: Path, manifest: Manifest, choices: dict, run: dict
) -> None:
    """Write the model, its encoder, and the data description new data is encoded with into
    `directory`, an empty one: the caller publishes it (train stages it, pipeline.platform.io).

    Args:
        vae: the trained model.
        directory: an empty directory.
        preprocessing: the prepared data's preprocessing file.
        manifest: the prepared data's manifest.
        choices: every choice's record (choices.json).
        run: the run's resolved params (run.json).
    """
    directory = Path(directory)
    vae.encoder.save(directory / ENCODER_FILE)
    # inside the model save: the encoder written, the model not yet
    fault_point("bundle", directory / MODEL_FILE)
    shutil.copyfile(preprocessing, directory / PREPROCESSING_FILE)
    manifest.write(directory / DATA_MANIFEST_FILE)
    write_json(directory / CHOICES_FILE, choices)
    write_json(directory / RUN_FILE, run)
    vae.save(directory / MODEL_FILE)


def load_vae(model_path: str | Path):
    """Load model.keras, naming the file when it is missing or not a VAE of this package."""
    import keras

    import pipeline.model.vae  # registers the custom layers

    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"{model_path}: model file not found; run the train stage first")
    if model_path.suffix != ".keras":
        raise DataError(
            f"{model_path}: only Keras' .keras format is loaded (it is loaded in safe_mode); "
            f"got a {model_path.suffix or 'suffix-less'} file"
        )
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except (OSError, ValueError, TypeError) as error:
        raise DataError(f"{model_path}: cannot load Keras model ({' '.join(str(error).split())})") from None
    if not isinstance(model, pipeline.model.vae.VAE):
        raise DataError(f"{model_path}: expected a saved VAE, got {type(model).__name__}")
    return model


def load_bundle(model_path: str | Path) -> Bundle:
    """model.keras and, when they are beside it, its preprocessing, data manifest, choices and run."""
    model_path = Path(model_path)
    with directory_lock(model_path.parent, shared=True):
        vae = load_vae(model_path)
        preprocessing_path = model_path.parent / PREPROCESSING_FILE
        preprocess = Preprocessor.load(preprocessing_path) if preprocessing_path.is_file() else None
        manifest_path = model_path.parent / DATA_MANIFEST_FILE
        manifest = Manifest.read(manifest_path) if manifest_path.is_file() else None
        return Bundle(
            vae,
            model_path,
            manifest,
            preprocess,
            _json_beside(model_path, CHOICES_FILE),
            _json_beside(model_path, RUN_FILE),
            sha256_file(model_path),
        )


def require_complete(bundle: Bundle) -> None:
    """Raise DataError unless the model's preprocessing and data manifest are beside it: without
    them new data would go in unscaled and a table's columns be matched by position."""
    missing = [
        name
        for name, part in ((PREPROCESSING_FILE, bundle.preprocess), (DATA_MANIFEST_FILE, bundle.manifest))
        if part is None
    ]
    if missing:
        raise DataError(
            f"{bundle.model_path}: {' and '.join(missing)} not found beside it; a model is used with "
            "the files train writes beside it (copy the whole model directory)"
        )


def _json_beside(model_path: Path, name: str) -> dict | None:
    path = model_path.parent / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
