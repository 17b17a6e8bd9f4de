"""Typed values from plain YAML: the generic checker behind `pipeline.platform.params.load.load_params`.

`build(cls, raw, key, source)` turns a mapping into the frozen dataclass `cls`, checking
every field against its type hint (int, float, bool, str, Literal, X | None, tuples,
nested dataclasses) and the bounds in its field metadata (`bounded`). A problem raises
ConfigError naming the dotted key, what was expected and what was given.
"""

import dataclasses
import difflib
import math
import re
import types
from dataclasses import field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.platform.errors import ConfigError

# The largest integer any knob takes: counts and seeds go to TensorFlow and numpy as int32.
INT_MAX = 2**31 - 1


def bounded(default, *, lo=None, hi=None, lo_open=False, hi_open=False):
    """A dataclass field whose numeric value must lie in [lo, hi] (or the open ends)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open})


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last) and
    reads numbers as YAML 1.2 does: PyYAML follows YAML 1.1, where a float needs a dot, so
    `1e-3` and `5e4`, as people write a learning rate or a count, would be strings."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                    f"(first on line {seen[key] + 1}); keep one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core-schema float, added after YAML 1.1's: what 1.1 reads as a float it still does.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def build(cls, raw: Any, key: str, source: str):
    if not isinstance(raw, dict):
        raise _error(source, key or "the top level", "a mapping of keys to values", raw)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" (did you mean '{_dotted(key, close[0])}'?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key '{_dotted(key, name)}'{hint}; valid keys here: {', '.join(fields)}"
            )
    hints = get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _check(hints[name], raw[name], spec.metadata, _dotted(key, name), source)
    return cls(**values)


def _check(hint, value, bounds, key: str, source: str):
    """Return `value` converted to `hint`, or raise ConfigError."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, source)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f" (did you mean '{close[0]}'?)" if close else ""
            raise _error(source, key, "one of " + ", ".join(map(repr, choices)), value, hint_text)
        return value
    if origin in (Union, types.UnionType):
        return _check_union(get_args(hint), value, bounds, key, source)
    if origin is tuple:
        return _check_tuple(get_args(hint)[0], value, bounds, key, source)
    if origin is dict:
        return _check_mapping(get_args(hint)[1], value, bounds, key, source)
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise _error(source, key, "true or false" if hint is bool else "a string", value)
        return value
    return _check_number(hint, value, bounds, key, source)


def _check_union(args, value, bounds, key: str, source: str):
    """X | None, X | Literal["auto"], X | Literal["learned"]: the words, else X."""
    words = tuple(v for a in args if get_origin(a) is Literal for v in get_args(a))
    if (value is None and type(None) in args) or (isinstance(value, str) and value in words):
        return value
    inner = next(a for a in args if a is not type(None) and get_origin(a) is not Literal)
    try:
        return _check(inner, value, bounds, key, source)
    except ConfigError as error:  # name the words too, when the message is about this key
        if not words:
            raise
        own = f"{source}: {key} must be "
        raise ConfigError(str(error).replace(own, own + " or ".join(map(repr, words)) + " or ", 1)) from None


def _check_tuple(item, value, bounds, key: str, source: str) -> tuple:
    length, min_length = bounds.get("length"), bounds.get("min_length", 0)
    if (
        not isinstance(value, (list, tuple))
        or (length is not None and len(value) != length)
        or len(value) < min_length
    ):
        count = f"{length} " if length else ""
        size = "a non-empty list" if min_length else "a list"
        raise _error(source, key, f"{size} of {count}{_describe(item, bounds, plural=True)}", value)
    return tuple(_check(item, v, bounds, f"{key}[{i}]", source) for i, v in enumerate(value))


def _check_mapping(item, value, bounds, key: str, source: str) -> dict:
    """{name: value} with string names (e.g. data.table.column_types)."""
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        raise _error(source, key, "a mapping of names to values", value)
    return {name: _check(item, v, bounds, f"{key}.{name}", source) for name, v in value.items()}


def _check_number(hint, value, bounds, key: str, source: str):
    if hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # 5e4 (a YAML 1.2 float) for a count
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:  # pragma: no cover - a new field type needs a branch above
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    if not ok or not _in_bounds(value, bounds):
        raise _error(source, key, _describe(hint, bounds), value)
    if hint is int and abs(value) > INT_MAX:
        raise _error(source, key, f"{_describe(hint, bounds)} and at most {INT_MAX}", value)
    return hint(value)


def _in_bounds(value, bounds) -> bool:
    lo, hi = bounds.get("lo"), bounds.get("hi")
    if lo is not None and (value <= lo if bounds.get("lo_open") else value < lo):
        return False
    if hi is not None and (value >= hi if bounds.get("hi_open") else value > hi):
        return False
    return True


def _describe(hint, bounds, plural: bool = False) -> str:
    if hint is str:
        return bounds.get("noun", "strings" if plural else "a string")
    noun = ("integers" if plural else "an integer") if hint is int else ("numbers" if plural else "a number")
    lo, hi = bounds.get("lo"), bounds.get("hi")
    lo_open, hi_open = bounds.get("lo_open", False), bounds.get("hi_open", False)
    if lo is not None and hi is not None:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return f"{noun} in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{noun} {'<' if hi_open else '<='} {hi}"
    return noun


def describe_type(hint, bounds) -> str:
    """The values a field takes, in the words its error message uses (for the params reference)."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in get_args(hint))
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        words = [f"`{v}`" for a in args if get_origin(a) is Literal for v in get_args(a)]
        inner = next(a for a in args if a is not type(None) and get_origin(a) is not Literal)
        return " or ".join([*words, describe_type(inner, bounds), *(["null"] if type(None) in args else [])])
    if origin is tuple:
        length, size = bounds.get("length"), "a non-empty list" if bounds.get("min_length") else "a list"
        return (
            f"{size} of {f'{length} ' if length else ''}{_describe(get_args(hint)[0], bounds, plural=True)}"
        )
    if origin is dict:
        return f"a mapping of names to {describe_type(get_args(hint)[1], bounds)}"
    if hint is bool:
        return "true or false"
    return _describe(hint, bounds)


def _error(source: str, key: str, expected: str, value, hint: str = "") -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}. Got {value!r} instead.{hint}")


def _dotted(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set raw["a"]["b"] = value for key "a.b" in a params mapping, creating blocks as needed."""
    *blocks, last = key.split(".")
    for block in blocks:
        raw = raw.setdefault(block, {})
    raw[last] = value


def given_in(raw: dict, key: str) -> bool:
    """Whether raw sets the dotted key (to any value, null included)."""
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True
