"""The docs cannot drift from the code: the generated reference, every code block, every link.

A fenced block in README.md or docs/ is checked by its language: python and bash blocks run
(tests/test_e2e.py, in a copy of the repository it ran `dvc repro` in), yaml blocks must be
valid params, unless the line above the fence says `<!-- illustrative: why -->`; an
illustrative shell block's `-S key=value` settings must still be valid params.
"""

import re

import pytest
import yaml

from pipeline.platform.params.config import leaf_keys
from pipeline.platform.params.config_checker import UniqueKeyLoader, set_dotted
from pipeline.platform.params.load import parse_params
from pipeline.reference import ReferenceError, render_all, render_outputs, render_params
from tests.builders import PAGES, RUN, blocks
from tests.conftest import ROOT


def test_the_committed_reference_is_what_the_code_generates():
    for page, text in render_all().items():
        committed = ROOT / "docs" / "reference" / page
        assert committed.is_file() and committed.read_text() == text, (
            f"docs/reference/{page} is stale: run `make docs` and commit it"
        )


def test_a_key_output_or_flag_without_a_description_stops_the_generator():
    text = (ROOT / "params.yaml").read_text()
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    bare = re.sub(r"(\n  latent_dim: 8) +#[^\n]*", r"\1", text)
    with pytest.raises(ReferenceError, match="params.yaml: model.latent_dim has no comment"):
        render_params(bare, dvc["stages"])
    del dvc["stages"]["encode"]["outs"][0]["data/latents"]["desc"]
    with pytest.raises(ReferenceError, match="encode's output data/latents has no desc"):
        render_outputs(dvc["stages"], [])


def test_every_page_is_reachable_and_every_relative_link_resolves():
    linked = set()
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
            linked.add(path)
    for page in PAGES[1:]:
        assert page in linked, f"{page.relative_to(ROOT)} is linked from no page"


def test_every_code_block_is_run_checked_or_marked_illustrative():
    for page in PAGES:
        for block in blocks(page):
            where = f"{page.relative_to(ROOT)}:{block['line']}"
            if block["lang"] in ("", "text"):
                continue
            assert block["lang"] in RUN | {"yaml"}, (
                f"{where}: a ```{block['lang']} block (python, bash, yaml, text)"
            )
            if block["why"]:
                for command in block["code"].split("\n"):  # one command's settings go together
                    raw = {}
                    for key, value in re.findall(r"-S '?([\w.]+)=([^\s']+)", command):
                        assert key in leaf_keys(), f"{where}: -S {key} is not a params key"
                        set_dotted(raw, key, yaml.load(value, Loader=UniqueKeyLoader))
                    parse_params(raw, source=where)
            elif block["lang"] == "yaml":
                parse_params(yaml.load(block["code"], Loader=UniqueKeyLoader), source=where)
