"""An offline page for `dvc plots show`: Vega, Vega-Lite and Vega-Embed inlined.

DVC's own page loads those scripts from a CDN, so it renders blank without a network.
`make plots` installs the three npm packages into .dvc/tmp and runs

    vae-pipeline plots-template .dvc/tmp/vega/node_modules .dvc/tmp/plots-offline.html

to build a template for `dvc plots show --html-template`.
"""

from pathlib import Path

from pipeline.platform.errors import DataError
from pipeline.platform.io import atomic_path

SCRIPTS = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>VAE pipeline: DVC plots</title>
{inline}
<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def offline_template(node_modules: Path) -> str:
    """The page with each script's text inside its own <script> element."""
    parts = []
    for script in SCRIPTS:
        try:
            text = (node_modules / script).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(
                f"{node_modules / script}: not found; `make plots` installs vega, vega-lite "
                "and vega-embed there with npm"
            ) from None
        if "</script" in text:  # would end the element early
            raise DataError(f"{node_modules / script}: contains '</script' and cannot be inlined")
        parts.append(f"<script>\n{text}\n</script>")
    return PAGE.format(inline="\n".join(parts))


def write_offline_template(node_modules: Path, out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(offline_template(Path(node_modules)), encoding="utf-8")
