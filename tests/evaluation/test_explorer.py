"""The explorer page in a real browser (Debian's headless Chromium, driven by its chromedriver:
`make test` installs both), and the TensorBoard projector files read back by TensorBoard's own
config parser."""

import csv
import html.parser
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# The plot's view: Bokeh keeps views by root; walk down to the one of the figure named "umap".
PLOT_VIEW_JS = """
const doc = Bokeh.documents[0], plot = doc.get_model_by_name("umap");
const points = doc.get_model_by_name("points");
const find = (v) => {
  if (v.model === plot) return v;
  for (const c of (v.child_views ?? [])) { const f = find(c); if (f) return f; }
  return null;
};
const view = [...Bokeh.index.roots].map(find).find(v => v), data = points.data_source.data;
"""
SHADOW_TEXT_JS = """
const texts = [], walk = (root) => { for (const el of root.querySelectorAll("*")) {
    if (el.shadowRoot) { texts.push(el.shadowRoot.textContent); walk(el.shadowRoot); } } };
walk(document);
return texts.join(" ");
"""


def _when(browser, script: str, seconds: float = 10):
    """The script's value once it is not null (polled), or None after `seconds`."""
    start = time.perf_counter()
    while (value := browser.execute_script(script)) is None and time.perf_counter() - start < seconds:
        time.sleep(0.1)
    return value


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _Resources(html.parser.HTMLParser):
    """Every resource the markup loads: script src, link href, img src, style url(...)."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self._in_style = [], 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in_style, self.scripts = tag == "style", self.scripts + (tag == "script")
        for key in ("src", "href"):
            if tag in ("script", "link", "img", "iframe") and attrs.get(key):
                self.urls.append(attrs[key])

    def handle_data(self, data):
        if self._in_style:
            self.urls += [part.split(")")[0] for part in data.split("url(")[1:]]


# Headless, and quiet: without the last four, Chromium keeps calling Google's hosts, which this
# closed network refuses (a page test must see only the page's own requests).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1200,1000",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not CHROMEDRIVER.exists():
        pytest.fail(
            "Debian's chromium and chromium-driver are needed: `make test` installs them "
            "(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    for argument in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_the_page_is_drawn_offline_hovered_searched_and_clicked(pipeline_run, browser):
    from PIL import Image

    page = pipeline_run["paths"]["evaluation"] / "explorer.html"
    points = _rows(pipeline_run["paths"]["evaluation"] / "umap.csv")
    resources = _Resources()
    resources.feed(page.read_text())
    assert resources.scripts >= 2 and all(url.startswith("data:") for url in resources.urls)  # all inline
    _open(browser, page, len(points))
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    fetched = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert not [
        url for url in fetched if url.startswith(("http:", "https:", "ws:", "wss:"))
    ]  # none from a network
    time.sleep(0.5)
    left, top, width, height = browser.execute_script(
        PLOT_VIEW_JS
        + """
        const rect = view.el.getBoundingClientRect(), box = view.frame.bbox;
        return [rect.left + box.left, rect.top + box.top, box.width, box.height].map(Math.round);"""
    )
    screenshot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")).astype(
        int
    )
    frame = screenshot[top : top + height, left : left + width]
    coloured = (frame.max(axis=2) - frame.min(axis=2) > 60).sum()  # the dots: saturated, unlike axes and grid
    assert coloured > 5 * len(points)  # drawn on the canvas, not only in the data (a dot covers ~28 pixels)
    first = _hover(browser, 0)
    tooltip = browser.execute_script(SHADOW_TEXT_JS)
    assert f"id {first}" in tooltip and "probe:" in tooltip  # the hover's tooltip, in Bokeh's shadow DOM
    assert re.search(r"surprisal \d+\.\d nats, quantile [01]\.\d{3}", tooltip), tooltip  # the row's scores
    wanted = points[len(points) // 2]["id"]
    browser.execute_script('Bokeh.documents[0].get_model_by_name("find").value = arguments[0]', wanted)
    found, detail = _when(
        browser,
        """  // CustomJS callbacks run asynchronously
        const doc = Bokeh.documents[0], data = doc.get_model_by_name("points").data_source;
        const i = data.selected.indices[0];
        return i === undefined ? null : [Number(data.data.id[i]), doc.get_model_by_name("detail").text];""",
    )
    assert found == int(wanted) and f"id {wanted}" in detail and "reconstruction" in detail
    centre = browser.execute_script(
        PLOT_VIEW_JS
        + """
        const i = points.data_source.selected.indices[0], xr = view.model.x_range;
        return [(xr.start + xr.end) / 2, data.x[i]];"""
    )
    assert centre[0] == pytest.approx(centre[1])  # the view moved to the point found
    time.sleep(0.5)
    assert "reconstruction" in browser.execute_script(SHADOW_TEXT_JS)  # the example beside its reconstruction
    browser.execute_script('Bokeh.documents[0].get_model_by_name("colour_by").value = "novelty"')
    by_novelty = _when(
        browser,
        """const d = Bokeh.documents[0].get_model_by_name("points").data_source.data;
        const top = d.novelty.indexOf(Math.max(...d.novelty));
        const low = d.novelty.indexOf(Math.min(...d.novelty));
        return d.color === d.c_label ? null : [d.color[top], d.color[low]];""",
    )
    assert by_novelty == ["#FDE724", "#440154"]  # Viridis: the most novel yellow, the least dark
    browser.execute_script('Bokeh.documents[0].get_model_by_name("colour_by").value = "z0"')
    gradient = _when(
        browser,
        'const c = Bokeh.documents[0].get_model_by_name("points").data_source.data.color;'
        "return new Set(c).size > 10 ? c.length : null;",
    )
    browser.execute_script('Bokeh.documents[0].get_model_by_name("colour_by").value = "probe error"')
    errors = _when(
        browser,
        'const d = Bokeh.documents[0].get_model_by_name("points").data_source.data;'
        "return d.color.every((c, i) => c === d.c_error[i]) ? d.color.length : null;",
    )
    assert gradient == errors == len(points)  # coloured by a latent dimension, then by the probe's errors
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


HOSTILE_NAMES = ["@label{safe}", "$x", "{safe}", "email@domain", "<script>window.pwned = 1</script>", "plain"]
HOSTILE_LABEL = '<img src=x onerror="window.pwned = 1">'


def test_hostile_column_names_and_labels_run_no_script_and_a_large_page_colours(browser, tmp_path):
    """Column names reach Bokeh's tooltip template (where `@label{safe}` would insert a label
    unescaped) and labels reach the page's HTML: hovered, clicked and coloured in Chromium, no
    script of theirs runs and each shows as its text. 150,000 points: more than a spread
    (Math.min(...z)) takes."""
    from pipeline.evaluation.explorer.examples import _values
    from pipeline.evaluation.explorer.page import SCORES, Points, explorer_html

    n, rng = 150_000, np.random.default_rng(0)
    cells = rng.normal(size=(n, len(HOSTILE_NAMES)))
    labels = [HOSTILE_LABEL if i % 2 else "{safe}@x" for i in range(n)]
    x, y = rng.normal(size=n), rng.normal(size=n)
    x[1] = y[1] = 8.0  # alone: the hover finds it only
    points = Points(
        x=x,
        y=y,
        ids=np.arange(n),
        labels=labels,
        predicted=[""] * n,
        z=rng.normal(size=(n, 2)).astype(np.float32),
        shown=_values(HOSTILE_NAMES, cells, cells, None),
        scores={name: rng.gamma(3.0, size=n) for name in SCORES},
    )
    page = tmp_path / "explorer.html"
    page.write_text(explorer_html(points, HOSTILE_LABEL, "hostile names"), encoding="utf-8")
    _open(browser, page, n)
    assert _hover(browser, 1) == 1  # labelled HOSTILE_LABEL
    tooltip = browser.execute_script(SHADOW_TEXT_JS)
    assert browser.execute_script("return window.pwned === undefined")
    assert "@label{safe} = " in tooltip and "email@domain = " in tooltip and "$x = " in tooltip, tooltip
    assert HOSTILE_LABEL in tooltip  # the label shown as text, in the tooltip and the title
    browser.execute_script('Bokeh.documents[0].get_model_by_name("find").value = "1"')
    assert _when(browser, 'return Bokeh.documents[0].get_model_by_name("detail").text || null')
    browser.execute_script('Bokeh.documents[0].get_model_by_name("colour_by").value = "z1"')
    assert (
        _when(
            browser,
            'const c = Bokeh.documents[0].get_model_by_name("points").data_source.data.color;'
            "return new Set(c).size > 10 ? c.length : null;",
        )
        == n
    )
    time.sleep(0.5)
    assert browser.execute_script("return window.pwned === undefined")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def _open(browser, page: Path, points: int) -> None:
    """Load the page and wait until BokehJS drew its `points` points."""
    start, drawn = time.perf_counter(), None
    browser.get(page.as_uri())
    while drawn is None and time.perf_counter() - start < 30:  # BokehJS builds the views after the page loads
        drawn = browser.execute_script(
            PLOT_VIEW_JS.replace("const view", "var view")
            + "return view === undefined ? null : data.id.length;"
        )
        time.sleep(0.1)
    assert drawn == points


def _hover(browser, i: int) -> int:
    """Move the pointer onto point i; its id."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x, y, point = browser.execute_script(
        PLOT_VIEW_JS
        + """
        const rect = view.el.getBoundingClientRect(), i = arguments[0];
        return [rect.left + view.frame.x_scale.compute(data.x[i]),
                rect.top + view.frame.y_scale.compute(data.y[i]), data.id[i]];""",
        i,
    )
    hover = ActionBuilder(browser)
    hover.pointer_action.move_to_location(int(x), int(y))
    hover.perform()
    time.sleep(0.5)
    return point


def test_tensorboard_serves_the_projector_files(pipeline_run, tmp_path):
    """A real `tensorboard --logdir data/evaluation/projector`: its projector plugin reads the
    config, every row of the tensors and the metadata, and the sprite of the right size."""
    import socket
    import subprocess
    import sys
    import urllib.request

    from PIL import Image

    folder = pipeline_run["paths"]["evaluation"] / "projector"
    points = _rows(pipeline_run["paths"]["evaluation"] / "umap.csv")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tensorboard"),
            "--logdir",
            str(folder),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def get(path: str) -> bytes:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/projector/{path}", timeout=10
        ) as answer:
            return answer.read()

    try:
        start = time.perf_counter()
        while time.perf_counter() - start < 90:
            try:
                runs = json.loads(get("runs"))
                break
            except OSError:
                time.sleep(0.5)
        assert runs == ["."]
        embedding = json.loads(get("info?run=."))["embeddings"][0]
        d = pipeline_run["params"].model.latent_dim
        assert embedding["tensorName"] == "z_mean" and embedding["tensorShape"] == [len(points), d]
        tensor = np.frombuffer(get("tensor?run=.&name=z_mean"), np.float32).reshape(len(points), d)
        np.testing.assert_allclose(tensor, np.loadtxt(folder / "tensors.tsv", delimiter="\t"), rtol=1e-5)
        metadata = get("metadata?run=.&name=z_mean").decode().splitlines()
        assert metadata[0] == "id\tlabel\tpredicted\tprobe" and len(metadata) == len(points) + 1
        assert sorted(int(line.split("\t")[0]) for line in metadata[1:]) == sorted(
            int(p["id"]) for p in points
        )
        sprite = Image.open(io.BytesIO(get("sprite_image?run=.&name=z_mean")))
        per_row = int(np.ceil(np.sqrt(len(points))))
        assert embedding["sprite"]["singleImageDim"] == [8, 8] and sprite.size == (per_row * 8, per_row * 8)
    finally:
        server.terminate()
        server.wait(timeout=30)
