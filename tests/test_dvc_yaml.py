"""dvc.yaml cannot drift from the code: deps are each stage's import closure, params its reads."""

import ast
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def pipeline_imports(path: Path) -> set[str]:
    """The pipeline modules a file imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found |= {f"pipeline.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            found.add(node.module)
    return {m for m in found if (ROOT / (m.replace(".", "/") + ".py")).is_file()}


def import_closure(script: Path) -> set[str]:
    """Every file under pipeline/ that running `script` can import, as repository paths."""
    todo, seen = [script], set()
    while todo:
        for module in pipeline_imports(todo.pop()):
            path = module.replace(".", "/") + ".py"
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
    readers = {"pipeline/sources.py", "pipeline/auto.py", "pipeline/dataset.py", "pipeline/idx.py",
               "pipeline/tables.py", "pipeline/images.py"}
    for name, stage in STAGES.items():
        closure = import_closure(ROOT / stage["cmd"].split()[-1])
        if name == "prepare":
            assert readers <= closure
        else:
            assert not closure & readers, f"{name} depends on {sorted(closure & readers)}"


def test_the_closure_follows_lazy_and_package_imports(tmp_path):
    closure = import_closure(ROOT / "stages" / "evaluate.py")
    assert {"pipeline/subo.py", "pipeline/bundle.py", "pipeline/model.py", "pipeline/likelihoods.py"} <= closure


def test_params_are_dotted_leaf_keys_and_the_resume_fingerprint_uses_train_s():
    from pipeline.config import leaf_keys, load_params
    from pipeline.train import TRAIN_PARAMS

    leaves = set(leaf_keys())  # the shipped file lists exactly these (test_config)
    for name, stage in STAGES.items():
        for key in stage.get("params", []):
            assert key in leaves, \
                f"{name}: params entry {key!r} is a whole group; list the keys the stage reads"
    assert list(STAGES["train"]["params"]) == list(TRAIN_PARAMS)
    load_params(ROOT / "params.yaml")



# Layers of pipeline/, top to bottom: a module imports only from layers below its own.
LAYERS = [
    {"cli"},
    {"runner"},
    {"prepare", "train", "encode", "encode_new", "baselines", "evaluate", "umap_view"},
    {"callbacks"},
    {"bundle", "probes", "pictures", "diagnostics", "report", "plots", "feed", "imputation", "scaling"},
    {"figures"},
    {"data"},
    {"model", "sources", "latents", "splits", "hardware"},
    {"networks", "layers", "idx", "tables", "images", "resolve"},
    {"dataset", "auto", "likelihoods", "engine"},
    {"config", "subo", "manifest"},
    {"schema", "console"},
    {"io", "errors"},
]


def test_every_module_has_a_layer_and_imports_only_downwards():
    modules = {p.stem for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__"}
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert modules == set(layer_of), "a new module needs a place in LAYERS (and in the README layout)"
    for module in modules:
        for imported in pipeline_imports(ROOT / "pipeline" / f"{module}.py"):
            name = imported.split(".")[1]
            assert layer_of[name] > layer_of[module], f"pipeline/{module}.py imports {name} (not a lower layer)"


def test_only_the_command_line_module_parses_arguments():
    for path in (ROOT / "pipeline").glob("*.py"):
        text = path.read_text()
        if path.stem != "cli":
            assert "argparse" not in text and "sys.argv" not in text, path.name
