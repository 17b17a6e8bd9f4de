"""manifest.json, the description of the prepared data: one frozen type, read and written here.

prepare writes it beside the arrays; train copies it into the model bundle (so new data is
encoded as the training data was); every other stage reads it through `Manifest.read`.
The JSON keeps the field order below, so the same data gives the same bytes.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.errors import DataError
from pipeline.io import write_json

FILE = "manifest.json"
# The prepared format's version: 2 stores raw values and applies the preprocessing per batch.
LAYOUT = 2


@dataclass(frozen=True)
class Manifest:
    layout: int
    source: str
    path: str | None
    example_shape: list[int]
    # Tables: the feature columns by name, so new data is matched by name, not position.
    feature_names: list[str] | None
    dtypes: dict[str, str]  # x, y, id as stored, and source_x: the source's own dtype of x
    counts: dict[str, int]  # examples per split
    counts_per_class: dict[str, list[int]] | None  # None without labels
    label_names: list[str]
    value_range: list[float]  # of the prepared (scaled) values
    pixel_levels: float | None  # the top of the pixel scale; None for real-valued data
    choices: dict[str, dict]  # auto choices made at prepare, with the rule (pipeline.auto)
    preprocessing: dict  # scaling, binarize, binarize_threshold, max_examples, test_split, seed
    sha256: dict[str, str]  # of every prepared array, by "split/name.npy"
    fingerprint: str  # sha256 of those digests: what the latents and the model's resume check

    @property
    def scaling(self) -> str:
        return self.preprocessing["scaling"]

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict, where: str | Path = FILE) -> "Manifest":
        names = [f.name for f in fields(cls)]
        if not isinstance(raw, dict) or raw.get("layout") != LAYOUT or set(raw) != set(names):
            layout = raw.get("layout") if isinstance(raw, dict) else None
            raise DataError(f"{where}: not a manifest of prepared data layout {LAYOUT} (layout {layout}); "
                            "re-run the prepare stage (dvc repro prepare)")
        return cls(**{name: raw[name] for name in names})

    @classmethod
    def read(cls, prepared_dir: str | Path) -> "Manifest":
        """The manifest of a prepared-data directory (or of a model bundle, given its file path)."""
        path = Path(prepared_dir)
        path = path if path.suffix == ".json" else path / FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run the prepare stage first (dvc repro prepare)") from None
        except ValueError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(raw, path)
