"""The `vae-pipeline` command: subcommands, one-line errors."""

import subprocess
import sys
from pathlib import Path

COMMAND = str(Path(sys.executable).parent / "vae-pipeline")


def test_plots_template_inlines_the_three_scripts(tmp_path):
    for script in (
        "vega/build/vega.min.js",
        "vega-lite/build/vega-lite.min.js",
        "vega-embed/build/vega-embed.min.js",
    ):
        (tmp_path / "nm" / script).parent.mkdir(parents=True)
        (tmp_path / "nm" / script).write_text(f"/* {script} */")
    result = subprocess.run(
        [COMMAND, "plots-template", str(tmp_path / "nm"), str(tmp_path / "page.html")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "page.html").read_text()
    assert page.count("<script>") == 3 and "/* vega-embed/build/vega-embed.min.js */" in page
    assert "{plot_divs}" in page  # what dvc plots show --html-template fills in


def test_missing_scripts_and_bad_arguments_end_in_one_line(tmp_path):
    missing = subprocess.run(
        [COMMAND, "plots-template", str(tmp_path), str(tmp_path / "page.html")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: {tmp_path / 'vega'}")
    assert "Traceback" not in missing.stderr and not (tmp_path / "page.html").exists()
    bad = subprocess.run(
        [COMMAND, "encode", "--model", "m.keras", "--input", "x.npz", "--output", "o", "--batch-size", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--batch-size: must be an integer >= 1. Got '0' instead." in bad.stderr
