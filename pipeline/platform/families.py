"""The likelihood families of p(x|z) (`model.likelihood`'s values), and what the rest of the
pipeline needs to know of each, written once: the data.scaling an explicit choice of it
needs, whether it is a mass on given pixel levels (it needs L), the decoder's outputs per
value of x, and what S is under it (the report's words). Prepare, resolve_model and evaluate
ask here; the families' math is pipeline.model.likelihoods and pipeline.model.pixel_levels
(tests/model/test_model.py keeps `params_per_value` in step with them).
"""

from collections.abc import Callable
from dataclasses import dataclass

MASS = "a mass on the data's {levels} levels: S is the surprisal of the data"


@dataclass(frozen=True)
class Family:
    name: str
    scaling: str | None  # data.scaling's `auto` when this family is chosen explicitly; None: the data's rule
    scaling_why: str
    on_levels: bool  # a mass on the data's L pixel levels (0..L-1 scaled to [0, 1])
    kind: str  # what S is under it; {levels}: L
    per_value: Callable[[int], int] = lambda levels: 1  # decoder outputs per value of x, given L (0: none)

    def params_per_value(self, levels: int | None) -> int:
        return self.per_value(levels or 0)

    def describe(self, levels: int | None) -> str:
        return self.kind.format(levels=levels or 2)


UNIT = "model.likelihood {name} needs values in [0, 1]"
FAMILIES = {
    family.name: family
    for family in (
        Family("bernoulli", "unit", UNIT, False, MASS),
        # L residual logits + 2
        Family("level_categorical", "unit", UNIT, True, MASS, lambda levels: levels + 2),
        Family("discretized_logistic", "unit", UNIT, True, MASS, lambda levels: 2),  # a location and a scale
        Family(
            "gaussian",
            "standardize",
            "model.likelihood gaussian models standardized features",
            False,
            "a density with a floor on σ: S is bounded below, not a surprisal of discrete values",
        ),
        Family(
            "columns",
            None,
            "",
            False,
            "a mass on the discrete columns times a floored density on the real ones",
        ),
    )
}
LEVEL_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.on_levels)
