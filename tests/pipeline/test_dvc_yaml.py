"""dvc.yaml cannot drift from the code: deps are each stage's import closure, params its reads."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_path(module: str) -> str | None:
    """pipeline.a.b as a repository path: a module's file, or None (a package, or not ours)."""
    path = module.replace(".", "/") + ".py"
    return path if (ROOT / path).is_file() else None


def pipeline_imports(path: Path) -> set[str]:
    """The pipeline modules a file imports anywhere in it (function-level imports included).

    A package's __init__ holds only a docstring (test below), so it is not counted."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pipeline":
            # `from pipeline.model import subo` imports a module; `from pipeline.model.vae import VAE` a name
            found |= {f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}")}
            found.add(node.module)
    return {m for m in found if module_path(m)}


def import_closure(script: Path) -> set[str]:
    """Every file under pipeline/ that running `script` can import, as repository paths."""
    todo, seen = [script], set()
    while todo:
        for module in pipeline_imports(todo.pop()):
            path = module_path(module)
            if path not in seen:
                seen.add(path)
                todo.append(ROOT / path)
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_list_every_module_the_stage_imports(name):
    stage = STAGES[name]
    script = stage["cmd"].split()[-1]
    deps = set(stage["deps"])
    assert script in deps
    missing = import_closure(ROOT / script) - deps
    assert not missing, f"dvc.yaml stage {name} misses deps {sorted(missing)}"
    listed = {d for d in deps if d.startswith("pipeline/")}
    assert listed <= import_closure(ROOT / script), f"{name} lists modules it never imports"


def test_only_prepare_depends_on_the_source_readers_and_the_data_rules():
    """Editing a reader or a prepare-time auto rule re-runs prepare, and nothing downstream."""
    readers = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline" / "data" / "readers").glob("[!_]*.py")}
    readers.add("pipeline/data/resolve_data.py")
    for name, stage in STAGES.items():
        closure = import_closure(ROOT / stage["cmd"].split()[-1])
        if name == "prepare":
            assert readers <= closure
        else:
            assert not closure & readers, f"{name} depends on {sorted(closure & readers)}"


def test_the_closure_follows_lazy_and_package_imports(tmp_path):
    closure = import_closure(ROOT / "stages" / "evaluate.py")
    assert {
        "pipeline/model/subo.py",
        "pipeline/model/bundle.py",
        "pipeline/model/vae.py",
        "pipeline/model/likelihoods.py",
    } <= closure


def test_params_are_dotted_leaf_keys_and_the_resume_fingerprint_uses_train_s():
    from pipeline.platform.params.config import leaf_keys
    from pipeline.platform.params.load import load_params
    from pipeline.training.train import TRAIN_PARAMS

    leaves = set(leaf_keys())  # the shipped file lists exactly these (test_config)
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            whole = name == "train" and key in ("model", "loss", "train")  # train reads every knob of these
            assert key in leaves or whole, (
                f"{name}: params entry {key!r} is a whole group; list the keys the stage reads"
            )
    assert list(STAGES["train"]["params"]) == list(TRAIN_PARAMS)
    load_params(ROOT / "params.yaml")


# The packages of pipeline/, top to bottom: a module imports only from its own package or
# one below it (cli and runner, at the top, may import any).
PACKAGES = ["evaluation", "latents", "training", "model", "data", "platform"]
TOP_MODULES = {"__init__", "cli", "runner", "reference", "reference_sources"}


def package_of(path: Path) -> str:
    """The first-level package a file of pipeline/ belongs to ("" for a top module)."""
    parts = path.relative_to(ROOT / "pipeline").parts
    return parts[0] if len(parts) > 1 else ""


def test_prepare_declares_every_data_key_it_is_given():
    """prepare reads the whole data block (pipeline.data.prepare.from_params passes params.data):
    a data key missing from its params would leave `dvc repro` saying "up to date" on stale
    data. data.validation_fraction is train's (the rows it holds out of the train split)."""
    from pipeline.platform.params.config import DataConfig, leaf_keys

    given = {f"data.{key}" for key in leaf_keys(DataConfig)} - {"data.validation_fraction"}
    assert given - set(STAGES["prepare"]["params"]) == set()
    assert "data.validation_fraction" in STAGES["train"]["params"]


def test_every_package_imports_only_itself_and_the_packages_below():
    rank = {name: i for i, name in enumerate(PACKAGES)}
    assert {p.stem for p in (ROOT / "pipeline").glob("*.py")} <= TOP_MODULES, (
        "a new module belongs in a package (and in docs/ARCHITECTURE.md's layout)"
    )
    for path in (ROOT / "pipeline").rglob("*.py"):
        own = package_of(path)
        if not own:
            continue
        assert own in rank, (
            f"pipeline/{own}/ needs a place in PACKAGES (and in docs/ARCHITECTURE.md's layout)"
        )
        for imported in pipeline_imports(path):
            other = imported.split(".")[1]
            assert other in rank and rank[other] >= rank[own], (
                f"{path.relative_to(ROOT)} imports {imported} (a package above {own})"
            )


def test_package_inits_hold_only_a_docstring():
    for init in (ROOT / "pipeline").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        code = [
            node for node in body[1:] if not (isinstance(node, ast.Assign) and init.parent.name == "pipeline")
        ]
        assert isinstance(body[0], ast.Expr) and not code, f"{init.relative_to(ROOT)}: docstring only"


def test_the_tree_stays_readable():
    """Few modules at the top, packages of at most 12 modules, modules of at most 300 lines,
    functions of at most 40."""
    packages = [p for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()]
    assert len(list((ROOT / "pipeline").glob("*.py"))) <= 6 and len(packages) >= 4
    for package in (ROOT / "pipeline").rglob("__init__.py"):
        modules = [p for p in package.parent.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, f"{package.parent.relative_to(ROOT)} holds {len(modules)} modules"
    over = set()
    for path in [
        *(ROOT / "pipeline").rglob("*.py"),
        *(ROOT / "stages").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
    ]:
        name, text = str(path.relative_to(ROOT)), path.read_text()
        if text.count("\n") > 300:
            over.add(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 40:
                    over.add(f"{name}:{node.name}")
    assert not over, f"over 300 lines a module or 40 a function (split them by what they do): {sorted(over)}"


def test_only_the_command_line_module_parses_arguments():
    for path in (ROOT / "pipeline").rglob("*.py"):
        text = path.read_text()
        if path.stem != "cli":
            assert "argparse" not in text and "sys.argv" not in text, path.name


def test_a_stage_reading_a_param_it_does_not_declare_fails_naming_it(tmp_path):
    """The three keys prepare once read without declaring them (data.table.drop_columns,
    data.anndata.layer, data.anndata.label_key): left out of its list, the read is an error."""
    from pipeline.data.prepare import from_params
    from pipeline.platform.errors import ConfigError
    from pipeline.platform.params.load import parse_params
    from pipeline.platform.params.param_watch import declared_params, unwatch, watch
    from tests.builders import make_cells

    make_cells(tmp_path / "cells.h5ad")
    params = parse_params(
        {
            "data": {
                "source": "anndata",
                "path": str(tmp_path / "cells.h5ad"),
                "anndata": {"label_key": "cell_type"},
            }
        }
    )
    declared = declared_params(ROOT / "dvc.yaml", "prepare")
    try:
        watch("prepare", [key for key in declared if key != "data.anndata.layer"])
        with pytest.raises(
            ConfigError,
            match=r"stage 'prepare' reads the param 'data.anndata.layer', which its "
            r"dvc.yaml entry does not list",
        ):
            from_params(params, out_dir=tmp_path / "p1")
        reads = watch("prepare", declared)
        from_params(params, out_dir=tmp_path / "p2")
    finally:
        unwatch()
    assert {"data.source", "data.path", "data.anndata.layer", "data.anndata.label_key", "seed"} <= reads.read
    assert not (tmp_path / "p1").exists()


def test_the_code_passes_the_linter_and_is_formatted():
    """ruff over pipeline/, stages/, tests/ and benchmarks/ with pyproject.toml's rules, and its
    formatter (`make lint`); a `noqa` says why."""
    import subprocess
    import sys

    ruff = str(Path(sys.executable).parent / "ruff")
    # no cache: ruff's is per file, and whether an import is first-party depends on the others
    for command in (
        ["check", "--no-cache", "--output-format", "concise", "."],
        ["format", "--no-cache", "--check", "."],
    ):
        result = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    for path in {*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("*/*.py")}:
        for line in path.read_text().splitlines():
            rule = re.search(r"#\s*noqa:\s*[A-Z]+[0-9]+(.*)", line)
            assert not rule or " - " in rule[1], f"{path.relative_to(ROOT)}: a noqa without a reason: {line}"


def test_benchmarks_are_a_package_that_edits_no_import_path():
    """benchmarks/ runs as modules (`python -m benchmarks.<name>`): no sys.path edits, and every
    `from benchmarks.x import y` (or `from tests.x import y`) names a module that defines y at its
    top level."""
    folder = ROOT / "benchmarks"
    assert (folder / "__init__.py").is_file()
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                assert (node.value.attr, node.attr) != ("path", "insert"), f"{path.name} edits sys.path"
            # the tests' helpers too: a test file moved without its importers breaks only the benchmark
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("benchmarks.", "tests.")):
                target = ROOT / f"{node.module.replace('.', '/')}.py"
                assert target.is_file(), f"{path.name} imports {node.module}, which is no module here"
                defined = {
                    n.name
                    for n in ast.parse(target.read_text()).body
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                }
                defined |= {
                    t.id
                    for n in ast.parse(target.read_text()).body
                    if isinstance(n, ast.Assign)
                    for t in n.targets
                    if isinstance(t, ast.Name)
                }
                missing = {a.name for a in node.names} - defined
                assert not missing, f"{path.name}: {node.module} defines no {sorted(missing)}"


def test_every_benchmark_writes_its_results_with_the_machine():
    """Each benchmark script records what it prints in benchmarks/results/<its name>.json
    (`_common.write_results`), and every such file says the command, date, commit and machine."""
    folder = ROOT / "benchmarks"
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        runs = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body) or any(
            isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body
        )
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert not runs or "write_results" in calls, f"{path.name} writes no benchmarks/results/ file"
    for path in (folder / "results").glob("*.json"):
        record = json.loads(path.read_text())
        assert {"command", "date", "commit", "machine", "results"} <= set(record), path.name
        assert "flags" in record["machine"], f"{path.name} does not say the CPU's flags"
