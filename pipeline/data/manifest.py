"""manifest.json, the description of the prepared data: one frozen type, read and written here.

prepare writes it beside the arrays; train copies it into the model bundle (so new data is
encoded as the training data was); every other stage reads it through `Manifest.read`.
The JSON keeps the field order below, so the same data gives the same bytes.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.platform.errors import DataError
from pipeline.platform.io import write_json

FILE = "manifest.json"
# The prepared format's version: 2 stored raw values and applied the preprocessing per batch;
LAYOUT = 3  # 3: tables store typed column codes (NaN where missing); input_shape, value_type


@dataclass(frozen=True)
class Column:
    """One feature column of a table, typed at prepare (pipeline.data.resolve_data.column_type).

    type: real (Gaussian), binary (Bernoulli), categorical (softmax over `levels`) or
    count (negative binomial or Poisson). levels: the values of a binary or categorical
    column in code order (the stored code of a cell is its level's index); with `other`, the
    last is OTHER, the code of every value beyond the others. missing: the fraction of rows
    without a value. source and part: the file's column a timestamp's part comes from, and
    which part (pipeline.data.readers.table_cells.PARTS); None for a column read as it is.
    """

    name: str
    type: str
    why: str
    levels: list | None
    missing: float
    source: str | None = None
    part: str | None = None
    other: bool = False

    @property
    def read_from(self) -> str:
        """The file's column this one's cells come from."""
        return self.source or self.name

    @property
    def width(self) -> int:
        """Model features: one per level of a categorical (its one-hot), else one."""
        return len(self.levels) if self.type == "categorical" else 1

    def value(self, code: float):
        """A stored cell as read: None where missing, a binary or categorical column's level, or
        the number (a float32's 7 digits, not its binary expansion)."""
        if code != code:  # NaN: missing
            return None
        return self.levels[int(code)] if self.levels is not None else float(f"{code:.7g}")


@dataclass(frozen=True)
class Covariate:
    """One covariate (data.covariates): a nuisance the model conditions on, not a feature of x.

    type: categorical (its one-hot goes to the model; `levels` in code order, the stored
    code of a value is its level's index) or real ((value - offset) / scale, fitted on the
    train split). why: the typing rule's reason (pipeline.data.covariates).
    """

    name: str
    type: str
    why: str
    levels: list | None
    offset: float = 0.0
    scale: float = 1.0

    @property
    def width(self) -> int:
        """Model inputs: one per level of a categorical covariate, else one."""
        return len(self.levels) if self.type == "categorical" else 1


def plain_table(columns) -> bool:
    """Every column real and complete: the table is modelled as an array of real values."""
    return all(c.type == "real" and not c.missing for c in columns or ())


@dataclass(frozen=True)
class Manifest:
    layout: int
    source: str
    path: str | None
    example_shape: list[int]  # as stored: a table's codes have one value per column
    input_shape: list[int]  # as the model reads it: a categorical column (or covariate) takes one per level
    # How the values are modelled: pixels, real, count (arrays), or columns (a table; see `columns`)
    value_type: str
    # Tables: the feature columns by name, so new data is matched by name, not position.
    feature_names: list[str] | None
    columns: list[Column] | None  # tables: every feature column's type, levels and missing fraction
    dtypes: dict[str, str]  # x, y, id as stored, and source_x: the source's own dtype of x
    counts: dict[str, int]  # examples per split
    counts_per_class: dict[str, list[int]] | None  # None without labels
    label_names: list[str]
    value_range: list[float]  # of the prepared (scaled) values
    pixel_levels: float | None  # the top of the pixel scale; None for real-valued data
    choices: dict[str, dict]  # auto choices made at prepare, with the rule (pipeline.data.resolve_data)
    preprocessing: dict  # scaling, binarize, binarize_threshold, max_examples, test_split, seed
    sha256: dict[str, str]  # of every prepared array, by "split/name.npy"
    fingerprint: str  # sha256 of those digests: what the latents and the model's resume check
    # data.covariates: the last len(covariates) stored values of each example are their codes
    # (x's stored shape is (features + covariates,)); None without covariates (and not written)
    covariates: list[Covariate] | None = None

    @property
    def scaling(self) -> str:
        return self.preprocessing["scaling"]

    @property
    def pictured(self) -> bool:
        """Whether the examples are pictures (grey or colour): the evaluation draws them."""
        shape = self.example_shape
        return len(shape) == 3 and shape[-1] in (1, 3)

    @property
    def missing(self) -> bool:
        """Whether any feature cell of the data is missing."""
        return any(column.missing > 0 for column in self.columns or ())

    @property
    def covariate_width(self) -> int:
        """The model's inputs that are covariates (after x's features): their one-hots and values."""
        return sum(c.width for c in self.covariates or ())

    @property
    def feature_shape(self) -> list[int]:
        """One example of x as the model reads it, less the covariates: what p(x|z, c) is of."""
        if not self.covariates:
            return list(self.input_shape)
        return [self.input_shape[0] - self.covariate_width]

    def to_dict(self) -> dict:
        raw = asdict(self)
        if raw["covariates"] is None:  # data without covariates keeps its manifest's bytes
            del raw["covariates"]
        return raw

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict, where: str | Path = FILE) -> "Manifest":
        names = [f.name for f in fields(cls)]
        if isinstance(raw, dict) and "covariates" not in raw:
            raw = {**raw, "covariates": None}
        if not isinstance(raw, dict) or raw.get("layout") != LAYOUT or set(raw) != set(names):
            layout = raw.get("layout") if isinstance(raw, dict) else None
            raise DataError(
                f"{where}: not a manifest of prepared data layout {LAYOUT} (layout {layout}); "
                "re-run the prepare stage (dvc repro prepare)"
            )
        values = {name: raw[name] for name in names}
        if values["columns"] is not None:
            values["columns"] = [Column(**column) for column in values["columns"]]
        if values["covariates"] is not None:
            values["covariates"] = [Covariate(**covariate) for covariate in values["covariates"]]
        return cls(**values)

    @classmethod
    def read(cls, prepared_dir: str | Path) -> "Manifest":
        """The manifest of a prepared-data directory (or of a model bundle, given its file path)."""
        path = Path(prepared_dir)
        path = path if path.suffix == ".json" else path / FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run the prepare stage first (dvc repro prepare)") from None
        except ValueError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(raw, path)
