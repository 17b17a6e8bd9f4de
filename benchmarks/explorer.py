"""The explorer page at the UMAP stage's max_points: its size, the time to write it, and the
time a browser takes to draw it and to show a hover's tooltip.

    .venv/bin/python -m benchmarks.explorer --points 10000 --repeats 3

The points are the 10,000 Fashion-MNIST test images (Debian's dataset-fashion-mnist), each
with a stand-in reconstruction (the image blurred by a 3×3 box: a decoder's mean is about as
smooth), 16-d latents and UMAP-like coordinates (one cluster per class), so the page is
measured without training a model. Each repeat writes the page (explorer.page.explorer_html)
and the projector files, then opens the page in Debian's headless Chromium (as the tests do):
the time until BokehJS reports the document idle, and the median time from a pointer move
onto a point to its tooltip in the DOM, over 20 points. Prints one JSON line per repeat and
the medians.
"""

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import command_line, write_results

ROOT = Path(__file__).resolve().parents[1]

FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion(points: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:points]
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:points]
    return images, labels


def points_of(images: np.ndarray, labels: np.ndarray):
    from pipeline.evaluation.explorer.examples import pictures_shown
    from pipeline.evaluation.explorer.page import SCORES, Points

    rng = np.random.default_rng(0)
    padded = np.pad(images[..., 0].astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)) / 9
    shown = pictures_shown(images, np.round(blurred)[..., None].astype(np.uint8))
    centres = rng.normal(0, 8, (10, 2))
    coords = centres[labels] + rng.normal(0, 1.2, (len(labels), 2))
    names = [str(v) for v in labels]
    predicted = [str(v) if rng.uniform() < 0.85 else str((v + 1) % 10) for v in labels]
    scores = {name: rng.gamma(3.0, size=len(labels)) for name in SCORES}
    return Points(
        coords[:, 0],
        coords[:, 1],
        np.arange(len(labels), dtype=np.int64),
        names,
        predicted,
        rng.normal(size=(len(labels), 16)).astype(np.float32),
        shown,
        scores,
    ), images


def write(points, pictures, folder: Path) -> dict:
    from pipeline.evaluation.explorer.page import explorer_html
    from pipeline.evaluation.explorer.projector import write_projector

    start = time.perf_counter()
    (folder / "explorer.html").write_text(explorer_html(points, "benchmark", "Fashion-MNIST test images"))
    page_s = time.perf_counter() - start
    start = time.perf_counter()
    write_projector(folder / "projector", points, pictures)
    return {
        "page_mib": round((folder / "explorer.html").stat().st_size / 2**20, 2),
        "write_page_s": round(page_s, 2),
        "write_projector_s": round(time.perf_counter() - start, 2),
        "sprite_mib": round((folder / "projector" / "sprite.png").stat().st_size / 2**20, 2),
    }


def _chromium():
    """Debian's headless Chromium under Selenium, with the tests' flags and the browser log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.evaluation.test_explorer import CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    for argument in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='vae-chromium-')}"):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _bokeh_idle_ms(driver, start: float) -> int | None:
    """The ms at which BokehJS logged the document idle; None if not within 120 s of `start`."""
    import re

    idle = None
    while idle is None and time.perf_counter() - start < 120:
        found = [re.search(r"document idle at (\d+) ms", e["message"]) for e in driver.get_log("browser")]
        idle = next((int(m.group(1)) for m in found if m), None)
        time.sleep(0.05)
    return idle


def _hover_seconds(driver, i: int) -> float:
    """Seconds from a pointer move onto point `i` to its tooltip in the DOM (at most 10 s);
    the pointer is then moved off the plot."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    from tests.evaluation.test_explorer import PLOT_VIEW_JS, SHADOW_TEXT_JS

    x, y = driver.execute_script(
        PLOT_VIEW_JS
        + """
                const i = Math.min(arguments[0], data.x.length - 1), rect = view.el.getBoundingClientRect();
                return [rect.left + view.frame.x_scale.compute(data.x[i]),
                        rect.top + view.frame.y_scale.compute(data.y[i])];""",
        i,
    )
    move = ActionBuilder(driver)
    move.pointer_action.move_to_location(int(x), int(y))
    begin = time.perf_counter()
    move.perform()
    while "probe:" not in driver.execute_script(SHADOW_TEXT_JS) and time.perf_counter() - begin < 10:
        pass
    took = time.perf_counter() - begin
    away = ActionBuilder(driver)
    away.pointer_action.move_to_location(5, 5)  # off the plot
    away.perform()
    time.sleep(0.2)
    return took


def render(page: Path) -> dict:
    """The page opened in Chromium: its load time, BokehJS's idle time and the median time
    from a hover to its tooltip over 20 points."""
    driver = _chromium()
    try:
        start = time.perf_counter()
        driver.get(page.as_uri())
        loaded = time.perf_counter() - start
        idle = _bokeh_idle_ms(driver, start)
        hovers = [_hover_seconds(driver, i) for i in range(0, 10_000, 500)[:20]]
        return {
            "load_s": round(loaded, 2),
            "bokeh_idle_ms": idle,
            "hover_to_tooltip_ms": round(1000 * statistics.median(hovers)),
        }
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    points, pictures = points_of(*fashion(args.points))
    rows = []
    for repeat in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="vae-explorer-"))
        rows.append(
            {
                "repeat": repeat,
                "points": args.points,
                **write(points, pictures, folder),
                **render(folder / "explorer.html"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    median = {
        "median": {
            key: statistics.median(r[key] for r in rows) for key in rows[0] if key not in ("repeat", "points")
        },
        "points": args.points,
    }
    print(json.dumps(median))
    write_results("explorer", command_line(__spec__), {"repeats": rows, **median})


if __name__ == "__main__":
    main()
