"""The cells of a table column, as Arrow gives them: what kind they are, what one batch of
them shows the typing rule (pipeline.data.resolve_columns), and their float32 codes.

A feature is a column of the file, or a part of a timestamp or date column (`PARTS`): its
time, day of the year, day of the week and hour, each a number the model can read. A
missing cell is null, NaN or an empty string; its code is NaN.
"""

from dataclasses import dataclass

import numpy as np

from pipeline.data.manifest import Column
from pipeline.data.readers.source_dataset import FLOAT32_MAX
from pipeline.data.resolve_columns import MAX_LEVELS, ColumnProfile
from pipeline.platform.errors import DataError

SECONDS_PER_DAY = 86_400
# A timestamp's parts: (name, type, why). day_of_week's levels are 0 (Monday) to 6, whatever
# the data hold; hour is left out, as any constant column, for dates at midnight.
PARTS = (
    ("time", "real", "days since 1970-01-01"),
    ("day_of_year", "real", "the day of the year, 1 to 366"),
    ("day_of_week", "categorical", "the day of the week, 0 (Monday) to 6"),
    ("hour", "real", "the hour of the day, with minutes and seconds as its fraction"),
)


@dataclass(frozen=True)
class Feature:
    """What the rule types: a file column (`part` None) or a part of a timestamp column."""

    name: str
    source: str
    kind: str  # string, boolean, integer or float
    part: str | None = None


def features_of(name: str, arrow_type) -> list[Feature]:
    """The features of a column; ValueError when it holds what the model cannot read."""
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return [Feature(f"{name}:{part}", name, "float", part) for part, _, _ in PARTS]
    for kind, test in (
        ("boolean", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("string", is_text),
        ("float", pa.types.is_null),
    ):  # no value in the file: the rule leaves it out
        if test(arrow_type):
            return [Feature(name, name, kind)]
    raise ValueError(
        f"column {name!r} holds {arrow_type} values; the model reads numbers, strings, booleans, "
        "dates and timestamps"
    )


def part_column(feature: Feature, missing: float) -> Column:
    """A timestamp part's Column: its type is the part's, not the rule's."""
    _, kind, why = next(p for p in PARTS if p[0] == feature.part)
    return Column(
        name=feature.name,
        type=kind,
        why=f"{feature.source}: {why}",
        levels=list(range(7)) if feature.part == "day_of_week" else None,
        missing=missing,
        source=feature.source,
        part=feature.part,
    )


def is_text(arrow_type) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or (pa.types.is_dictionary(arrow_type) and pa.types.is_string(arrow_type.value_type))
    )


def cells(array, part: str | None):
    """The cells of a feature: a column's, with dictionaries decoded, or a timestamp's part."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if part is None:
        return array
    if pa.types.is_date(array.type):
        array = array.cast(pa.timestamp("s"))
    if part == "time":
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[array.type.unit]
        return pc.divide(
            pc.cast(pc.cast(array, pa.int64()), pa.float64()), float(per_second * SECONDS_PER_DAY)
        )
    if part == "hour":
        hour, minute, second = (pc.cast(f(array), pa.float64()) for f in (pc.hour, pc.minute, pc.second))
        return pc.add(pc.add(hour, pc.divide(minute, 60.0)), pc.divide(second, 3600.0))
    return pc.cast(getattr(pc, part)(array), pa.float64())


def present(array):
    """The cells with the missing ones (null, NaN, empty string) dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = array.drop_null()
    if pa.types.is_floating(array.type):
        return array.filter(pc.invert(pc.is_nan(array)))
    if is_text(array.type):
        return array.filter(pc.not_equal(array, ""))
    return array


def profile_cells(profile: ColumnProfile, array) -> None:
    """Add the next batch of a feature's cells to its profile."""
    import pyarrow.compute as pc

    observed = present(array)
    profile.rows += len(array)
    profile.missing += len(array) - len(observed)
    if profile.kind in ("string", "boolean"):
        counted = pc.value_counts(observed)
        values = counted.field("values").to_pylist()
        profile.add_levels(values, dict(zip(values, counted.field("counts").to_pylist())))
    else:
        profile.add_levels(pc.unique(observed).to_pylist() if len(profile.levels) <= MAX_LEVELS else ())
    if profile.kind not in ("integer", "float") or not len(observed):
        return
    values = observed.to_numpy(zero_copy_only=False).astype(np.float64)
    finite = values[np.isfinite(values)]
    profile.infinite = profile.infinite or len(finite) < len(values)
    if len(finite):
        profile.low, profile.high = min(profile.low, finite.min()), max(profile.high, finite.max())
    profile.integral = profile.integral and bool((finite == np.round(finite)).all())
    steps = len(observed) == len(array) and bool((np.diff(values) > 0).all())
    profile.increasing = profile.increasing and steps and (profile.last is None or values[0] > profile.last)
    profile.first = values[0] if profile.first is None else profile.first
    profile.last = values[-1]


def codes(column: Column, array) -> tuple[np.ndarray, object]:
    """(float32 codes of one batch of a column's cells, a value the column's levels lack or None):
    values, or level indices (OTHER's for a value beyond its most frequent levels); NaN where missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = cells(array, column.part)
    if is_text(array.type):  # an empty string is a missing cell
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    if column.levels is None:
        return array.to_numpy(zero_copy_only=False).astype(np.float32), None
    known = column.levels[:-1] if column.other else column.levels
    index = pc.index_in(array, value_set=pa.array(known).cast(array.type))
    unseen = pc.and_(pc.is_null(index), pc.invert(pc.is_null(array, nan_is_null=True)))
    if pc.any(unseen).as_py():
        if not column.other:
            return None, array.filter(unseen)[0].as_py()
        index = pc.if_else(unseen, len(known), index)
    return index.to_numpy(zero_copy_only=False).astype(np.float32), None  # null -> NaN


def checked_numbers(path, column: Column, array, start: int) -> np.ndarray:
    """The float32 codes of a real or count column's cells (`codes`' for such a column: NaN where
    missing); DataError unless they are what the model was trained on: numbers (text only
    where it spells one, as in a column a CSV read as text; not dates or booleans, which a
    numeric cast would turn into numbers silently), finite and within float32, and for counts
    whole and ≥ 0. Names the first bad row (`start` is the batch's first) and the column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    array = array.cast(kind)
    if is_text(kind):
        spelled = pc.match_substring_regex(array, NUMBER)
        wrong = pc.and_(pc.invert(pc.fill_null(spelled, True)), pc.not_equal(array, ""))
        _refuse_first(path, column, start, wrong, array, f"is not a number ({kind} cells)")
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, kind), array).cast(pa.float64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
        _refuse_first(
            path, column, start, pc.invert(pc.is_null(array)), array, f"is not a number ({kind} cells)"
        )
    values = array.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.isinf(values) | (np.abs(np.nan_to_num(values)) > FLOAT32_MAX)
    if column.type == "count":
        bad |= ~(np.isnan(values) | ((values >= 0) & (values == np.round(values))))
    rule = "a whole number ≥ 0 (a count)" if column.type == "count" else "finite and within float32"
    _refuse_first(path, column, start, pa.array(bad), pa.array(values), f"is not {rule}")
    return values.astype(np.float32)


# A number as text: what a CSV reader parses as one (no spaces, no thousands separators).
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|NaN|inf|Inf|infinity|Infinity)$"


def _refuse_first(path, column: Column, start: int, wrong, array, what: str) -> None:
    import pyarrow.compute as pc

    if pc.any(wrong).as_py():
        row = pc.index(wrong, True).as_py()
        raise DataError(
            f"{path}: row {start + row}, column {column.name!r}: {array[row].as_py()!r} {what}; the "
            "model was trained on numbers in this column"
        )
