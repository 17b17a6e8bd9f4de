"""`auto` and the record of what it became: one `Choice` per knob, made once per stage.

An explicit value in params.yaml always wins and is recorded as GIVEN; an `auto` one is
resolved from the data or the hardware and recorded with the rule that chose it. Stages
write the records (`records`) to choices.json, the manifest, the latents' metadata and the
report.
"""

from dataclasses import dataclass
from typing import Any, Literal

# The value of a knob resolved from the data (pipeline.data.resolve_data, at prepare) or from
# the data and the hardware (pipeline.model.resolve_model, pipeline.training.resolve_run).
AUTO = "auto"
Auto = Literal["auto"]
# The rule recorded for a value that params.yaml sets explicitly.
GIVEN = "set in params.yaml"


@dataclass(frozen=True)
class Choice:
    """What one knob became (`value`) and the rule that chose it (`why`)."""

    value: Any
    why: str

    @classmethod
    def of(cls, given: Any, value: Any, why: str) -> "Choice":
        """`given` when params.yaml sets it, else the resolved `value` and its rule."""
        return cls(given, GIVEN) if given != AUTO else cls(value, why)

    @property
    def is_auto(self) -> bool:
        return self.why != GIVEN

    def record(self) -> dict:
        """{"value", "why"} as JSON writes it (tuples as lists)."""
        return {"value": list(self.value) if isinstance(self.value, tuple) else self.value, "why": self.why}


def records(choices: dict[str, Choice]) -> dict[str, dict]:
    """{key: {"value", "why"}} for choices.json, the manifest and the latents' metadata."""
    return {key: choice.record() for key, choice in choices.items()}


def from_records(records_: dict[str, dict]) -> dict[str, Choice]:
    """The inverse of `records` (choices read back from a manifest or a bundle)."""
    return {key: Choice(item["value"], item["why"]) for key, item in records_.items()}


def summary(choices: dict[str, Choice]) -> str:
    """One log line: key=value for every choice, auto ones marked."""
    return ", ".join(
        f"{key}={choice.record()['value']}" + (" (auto)" if choice.is_auto else "")
        for key, choice in choices.items()
    )
