"""A table's columns, typed from what one pass over them saw: the rule behind every
`data.table.column_types.<name>` choice. A type in params.yaml wins, checked against the data;
`data.table.drop_columns` leaves columns out before any rule looks at them.

The rule, and why (AutoGluon's feature generators do much the same):

- left out, recorded with its reason, when a column cannot inform a model of the example:
  no value at all, or one value in every row that has one (nothing to learn); an index,
  whole numbers that grow with every row (an R or pandas row number 1..N, a filtered
  frame's index: the row order, not a property of the row); strings with more than
  AUTO_MAX_LEVELS distinct values whose AUTO_MAX_LEVELS most frequent cover less than
  TOP_LEVELS_MIN_SHARE of the cells (an identifier or free text: levels seen a few times each).
- binary: two distinct values, of any kind (Bernoulli).
- categorical: strings and booleans (softmax over the levels). Over AUTO_MAX_LEVELS levels
  whose most frequent AUTO_MAX_LEVELS cover at least TOP_LEVELS_MIN_SHARE of the cells (a
  long tail behind common values: cities, products), those levels and one OTHER level for
  the rest, which also takes a level new data brings.
- count: integers, all non-negative, with a zero among them (negative binomial; the encoder
  reads log1p): counts start at zero, while integers such as years do not.
- real: other numbers (Gaussian with a learned, floored σ, standardized).
- timestamps and dates arrive as their parts (pipeline.data.readers.table_cells): time in
  days since 1970 (real), day of the year (real), day of the week (categorical), hour of the
  day (real; left out as constant when every value is a date at midnight).

A column that holds something else (lists, bytes), infinite values, or contradicts its
declared type is a problem; the reader names every such column in one error.
"""

import math
from dataclasses import dataclass, field

from pipeline.platform.choices import GIVEN

# A string or boolean column with at most this many distinct values is categorical by default.
AUTO_MAX_LEVELS = 100
# ...and beyond it keeps its AUTO_MAX_LEVELS most frequent levels when they cover this share.
TOP_LEVELS_MIN_SHARE = 0.5
# No categorical column, explicit or not, has more levels: its one-hot would dwarf the rest.
MAX_LEVELS = 1000
# Frequencies of a string column are kept in a Misra-Gries summary of this many values:
# memory stays flat in rows, and a count is under by at most cells / (COUNTED + 1).
COUNTED = 4 * MAX_LEVELS
LEFT_OUT = "left out"
# The level that stands for every value beyond a column's most frequent ones.
OTHER = "(other)"


@dataclass
class ColumnProfile:
    """What one pass over a table column saw (pipeline.data.readers.tables): enough for the rule.

    kind: string, boolean, integer or float (timestamps arrive as their numeric parts);
    levels: the distinct observed values, kept up to MAX_LEVELS + 1; counts: a Misra-Gries
    summary of a string or boolean column's value frequencies; low/high: of numeric values;
    integral: every numeric value whole; increasing: every value above the row before it (so
    far: first and last); infinite: some value is ±inf.
    """

    name: str
    kind: str
    rows: int = 0
    missing: int = 0
    levels: set = field(default_factory=set)
    counts: dict = field(default_factory=dict)
    low: float = math.inf
    high: float = -math.inf
    integral: bool = True
    increasing: bool = True
    first: float | None = None
    last: float | None = None
    infinite: bool = False

    @property
    def observed(self) -> int:
        return self.rows - self.missing

    def add_levels(self, levels, counts: dict | None = None) -> None:
        """Distinct values (and, for strings and booleans, their frequencies) of more rows."""
        if len(self.levels) <= MAX_LEVELS:
            self.levels.update(list(levels)[: MAX_LEVELS + 1 - len(self.levels)])
        if counts:
            self.counts = misra_gries(self.counts, counts, COUNTED)

    def merge(self, other: "ColumnProfile") -> None:
        """Add what the next part of the same column saw (parts profiled apart, in row order)."""
        self.increasing = (
            self.increasing
            and other.increasing
            and (self.last is None or other.first is None or other.first > self.last)
        )
        self.first = self.first if self.first is not None else other.first
        self.last = other.last if other.last is not None else self.last
        self.rows += other.rows
        self.missing += other.missing
        self.add_levels(other.levels, other.counts)
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.integral = self.integral and other.integral
        self.infinite = self.infinite or other.infinite


def misra_gries(summary: dict, more: dict, capacity: int) -> dict:
    """The merged Misra-Gries summary of two (value -> count) summaries: every count drops
    by the (capacity + 1)-th largest, and what reaches zero goes; deterministic, and each
    kept count is under the true one by at most (total - sum of counts) / (capacity + 1)."""
    merged = dict(summary)
    for value, count in more.items():
        merged[value] = merged.get(value, 0) + count
    if len(merged) <= capacity:
        return merged
    cut = sorted(merged.values(), reverse=True)[capacity]
    return {value: count - cut for value, count in merged.items() if count > cut}


def column_type(profile: ColumnProfile, given: str | None) -> tuple[str, str]:
    """(type, why) of a table column: the rule in the module's docstring, or the type params.yaml
    gives, checked. type is LEFT_OUT for a column the model does not read. ValueError names
    what makes the column unusable (the reader gathers them into one error)."""
    name, distinct = profile.name, len(profile.levels)
    if profile.infinite:
        raise ValueError(f"column {name!r} holds infinite values")
    if profile.observed == 0:
        return LEFT_OUT, "no value in any row"
    if given is not None:
        return _check_given(profile, given), GIVEN
    numeric = profile.kind in ("integer", "float")
    if distinct == 1:
        return (
            LEFT_OUT,
            f"one value ({next(iter(profile.levels))!r}) in every row that has one: nothing to learn",
        )
    if profile.kind == "integer" and profile.increasing and not profile.missing and profile.rows > 2:
        return LEFT_OUT, (
            f"an index: whole numbers from {profile.low:g} to {profile.high:g}, each above the row "
            "before's (the row order, not a property of the row)"
        )
    if distinct == 2:
        return "binary", f"two values: {', '.join(map(str, sorted(profile.levels, key=str)))}"
    if numeric:
        if profile.kind == "integer" and profile.low == 0:
            return "count", f"non-negative integers from 0 to {profile.high:g}"
        return "real", f"numbers from {profile.low:.4g} to {profile.high:.4g}"
    if distinct <= AUTO_MAX_LEVELS:
        return "categorical", f"{distinct} {profile.kind} levels"
    return _many_levels(profile)


def _many_levels(profile: ColumnProfile) -> tuple[str, str]:
    """(type, why) of a string or boolean column of over AUTO_MAX_LEVELS levels: categorical, its
    most frequent levels and OTHER, when those cover TOP_LEVELS_MIN_SHARE of the cells; else left
    out as an identifier or free text."""
    distinct, share = len(profile.levels), top_share(profile)
    many = f"{'over ' if distinct > MAX_LEVELS else ''}{min(distinct, MAX_LEVELS):,} distinct {profile.kind}s"
    if share < TOP_LEVELS_MIN_SHARE:
        return LEFT_OUT, (
            f"{many} in {profile.observed:,} cells, the {AUTO_MAX_LEVELS} most frequent covering "
            f"{share:.0%}: an identifier or free text (declare it categorical to keep "
            f"its most frequent levels)"
        )
    return "categorical", (
        f"{many}: the {AUTO_MAX_LEVELS} most frequent (covering {share:.0%} of the cells), "
        f"the rest as {OTHER!r}"
    )


def top_share(profile: ColumnProfile, levels: int = AUTO_MAX_LEVELS) -> float:
    """The share of the observed cells that the `levels` most frequent values cover (a lower bound)."""
    return sum(sorted(profile.counts.values(), reverse=True)[:levels]) / max(profile.observed, 1)


def column_levels(profile: ColumnProfile, kind: str, given: bool) -> tuple[list | None, bool]:
    """(levels in code order, whether the last is OTHER) of a binary or categorical column;
    (None, False) for a column whose values go to the model as they are. A categorical
    column keeps its most frequent AUTO_MAX_LEVELS levels by the rule, MAX_LEVELS when declared."""
    if kind not in ("binary", "categorical"):
        return None, False
    order = lambda v: (isinstance(v, str), v)  # noqa: E731 - booleans and numbers before strings
    keep = MAX_LEVELS if given else AUTO_MAX_LEVELS
    if kind == "binary" or len(profile.levels) <= keep:
        return sorted(profile.levels, key=order), False
    top = sorted(profile.counts.items(), key=lambda item: (-item[1], order(item[0])))[:keep]
    return [*sorted((value for value, _ in top), key=order), OTHER], True


def _check_given(profile: ColumnProfile, given: str) -> str:
    name, distinct, numeric = profile.name, len(profile.levels), profile.kind in ("integer", "float")
    problem = None
    if given == "binary" and distinct > 2:
        problem = (
            "binary needs at most two distinct values; it has "
            f"{'more than ' if distinct > MAX_LEVELS else ''}{distinct}"
        )
    elif given == "categorical" and distinct > MAX_LEVELS and not profile.counts:
        problem = f"categorical allows at most {MAX_LEVELS} levels; it has more"
    elif given == "count" and not (numeric and profile.integral and profile.low >= 0):
        problem = f"count needs non-negative whole numbers; it holds {profile.kind} values" + (
            f" from {profile.low:.4g} to {profile.high:.4g}" if numeric else ""
        )
    elif given == "real" and not numeric:
        problem = f"real needs numbers; it holds {profile.kind} values"
    if problem:
        raise ValueError(f"data.table.column_types.{name} is {given!r}, but {problem}")
    return given
