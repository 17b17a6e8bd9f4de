"""What the reference pages are drawn from, read and parsed (pipeline.reference renders them).

params.yaml's comments (`params_comments`), the config dataclasses' fields (`config_fields`),
dvc.yaml's stage graph (`downstream`) and the `auto` rules as the modules that apply them state
them in their docstrings (`auto_rule`). Nothing here writes a page or decides what one says.
"""

import ast
import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

from pipeline.platform.params.config import Params

KEY_LINE = re.compile(r"(\s*)([A-Za-z_]\w*):([^#]*)(?:#(.*))?$")


def params_comments(text: str) -> dict[str, str]:
    """{dotted key: its description} from params.yaml: the comment lines just above a key at
    its indentation, its end-of-line comment and the comment lines below it that continue
    that comment (their # in its column)."""
    found, stack, above, current = {}, [], [], None
    for line in text.splitlines():
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if current and indent == current[1]:
                found[current[0]].append(stripped[1:].strip())
            else:
                current = None
                above.append((indent, stripped[1:].strip()))
            continue
        match = KEY_LINE.match(line)
        if not match:
            above, current = [], None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [match[2]])
        found[key] = [c for i, c in above if i == indent] + ([match[4].strip()] if match[4] else [])
        above, current = [], (key, match.start(4) - 1) if match[4] else None
        if not match[3].strip():
            stack.append((indent, match[2]))
    return {key: " ".join(lines) for key, lines in found.items()}


def downstream(stages: dict) -> dict[str, list[str]]:
    """{stage: the stages after it}: those whose deps lie in (or hold) its outputs, transitively."""
    outs = {
        name: [
            next(iter(o)) if isinstance(o, dict) else o
            for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind, [])
        ]
        for name, stage in stages.items()
    }

    def reads(stage, out):
        return any(
            d == out or d.startswith(out + "/") or out.startswith(d + "/") for d in stages[stage]["deps"]
        )

    after = {
        name: {s for s in stages if s != name and any(reads(s, o) for o in outs[name])} for name in stages
    }
    for _ in stages:  # close transitively
        after = {name: set().union(after[name], *(after[s] for s in after[name])) for name in stages}
    order = list(stages)
    return {name: sorted(after[name], key=order.index) for name in stages}


def config_fields(cls=Params, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (type hint, field metadata)} for every knob."""
    out, hints = {}, get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            out |= config_fields(type(f.default), f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = (hints[f.name], f.metadata)
    return out


def lookup_raw(raw: dict, key: str):
    """The value of a dotted key in params.yaml as read (the shipped value)."""
    for part in key.split("."):
        raw = raw[part]
    return raw


def auto_rule(root: Path, path: str) -> tuple[str, dict]:
    """(the rules, {name: value} of the module's constants they name) of the module at root/path:
    its docstring from "The rules, and why:" on, and its own arithmetic constants (2 ** 16,
    1 << 30), evaluated without names."""
    tree = ast.parse((root / path).read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    rules = doc[doc.index("The rules, and why:") :].removeprefix("The rules, and why:").strip()
    constants = {
        t.id: eval(compile(ast.Expression(node.value), path, "eval"), {"__builtins__": {}})
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.BinOp)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id.isupper() and t.id in rules
    }
    return rules, constants
