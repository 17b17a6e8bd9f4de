"""explorer.html: the UMAP of the latents as one self-contained page (Bokeh, its JavaScript
inlined: no script, style or font from the network), every point hoverable.

Hover: the example (its picture, or its first values), its label, the linear probe's
prediction and whether it was right. Colour by label, by the probe's error, or by any latent
dimension. Find a point by id. A click (or a find) shows the example beside its
reconstruction (the decoder's mean at z = μ_φ(x)). WebGL draws the points, so 10,000 stay
responsive.
"""

import html
from dataclasses import dataclass

import numpy as np

# Categorical colours for labels (Bokeh's Category10, then Category20's lighter half).
TOO_MANY_LABELS = 20
RIGHT, WRONG, UNPROBED = "#9e9e9e", "#d62728", "#e0e0e0"

COLOUR_JS = """
const d = source.data, n = d.id.length, by = cb_obj.value;
if (by === "label" || by === "probe error") {
    d.color = by === "label" ? d.c_label : d.c_error;
} else {
    const z = d[by], lo = Math.min(...z), hi = Math.max(...z), k = palette.length - 1;
    d.color = Array.from(z, v => palette[Math.round(k * (v - lo) / ((hi - lo) || 1))]);
}
key.text = by === "label" ? label_key : by === "probe error" ? error_key : `${by}: dark low, yellow high`;
source.change.emit();
"""

DETAIL_JS = """
const i = source.selected.indices[0];
if (i === undefined) { detail.text = ""; return; }
detail.text = `<b>id ${source.data.id[i]}</b>, label ${source.data.label[i]}, `
    + `probe: ${source.data.predicted[i]}<br>` + source.data.detail[i];
"""

FIND_JS = """
const wanted = cb_obj.value.trim(), i = source.data.id.findIndex(v => String(v) === wanted);
if (i < 0) { status.text = wanted ? `no point with id ${wanted} among these` : ""; return; }
status.text = "";
source.selected.indices = [i];
const x = source.data.x[i], y = source.data.y[i], w = (xr.end - xr.start) / 4, h = (yr.end - yr.start) / 4;
xr.setv({start: x - w, end: x + w}); yr.setv({start: y - h, end: y + h});
"""


@dataclass(frozen=True)
class Points:
    """What the page shows, one entry per point: UMAP coordinates, ids, labels, the probe's
    prediction ("" where the probe did not see the row), z_mean (n, d), the hover's example
    (an HTML fragment: an <img> or a few values) and the click's example-and-reconstruction."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    labels: list[str]
    predicted: list[str]
    z: np.ndarray
    hover: list[str]
    detail: list[str]


def explorer_html(points: Points, title: str, summary: str) -> str:
    """The standalone page."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, Select, TapTool, TextInput
    from bokeh.palettes import Category10_10, Category20_20, Viridis256
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    names = sorted(set(points.labels))
    palette = list(Category10_10 if len(names) <= 10 else Category20_20)
    label_colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    c_label = [label_colour[name] for name in points.labels]
    c_error = [UNPROBED if not p else RIGHT if p == t else WRONG for p, t in zip(points.predicted, points.labels)]
    dims = [f"z{j}" for j in range(points.z.shape[1])]
    source = ColumnDataSource({
        "x": points.x, "y": points.y, "id": points.ids, "label": points.labels,
        "predicted": [p or "not probed" for p in points.predicted],
        "right": ["" if not p else "right" if p == t else "wrong" for p, t in zip(points.predicted, points.labels)],
        "hover": points.hover, "detail": points.detail, "color": c_label, "c_label": c_label, "c_error": c_error,
        **{name: points.z[:, j] for j, name in enumerate(dims)}})
    plot = figure(title="UMAP of the latents (z_mean)", output_backend="webgl", sizing_mode="stretch_width",
                  height=620, tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom", name="umap")
    dots = plot.scatter("x", "y", source=source, size=6, fill_color="color", line_color=None, fill_alpha=0.8,
                        name="points")
    plot.add_tools(HoverTool(renderers=[dots], tooltips="""
        <div>@hover{safe}</div>
        <div><b>id @id</b> &middot; label @label</div>
        <div>probe: @predicted @right</div>"""), TapTool(renderers=[dots]))
    label_key = " ".join(f'<span style="color:{c}">&#9679;</span>&nbsp;{html.escape(n)}'
                         for n, c in label_colour.items())
    error_key = (f'<span style="color:{WRONG}">&#9679;</span> wrong &nbsp;<span style="color:{RIGHT}">&#9679;'
                 f'</span> right &nbsp;<span style="color:{UNPROBED}">&#9679;</span> not probed')
    key, status = Div(text=label_key), Div(text="")
    detail = Div(text="", styles={"font-family": "sans-serif"}, name="detail")
    colour_by = Select(title="Colour by", value="label", options=["label", "probe error", *dims], width=160,
                       name="colour_by")
    colour_by.js_on_change("value", CustomJS(args={"source": source, "palette": list(Viridis256), "key": key,
                                                   "label_key": label_key, "error_key": error_key},
                                             code=COLOUR_JS))
    find = TextInput(title="Find id", placeholder="a row id, then Enter", width=160, name="find")
    find.js_on_change("value", CustomJS(args={"source": source, "status": status, "xr": plot.x_range,
                                              "yr": plot.y_range}, code=FIND_JS))
    source.selected.js_on_change("indices", CustomJS(args={"source": source, "detail": detail}, code=DETAIL_JS))
    page = column(Div(text=f"<h2>{html.escape(title)}</h2><p>{summary}</p>"), row(colour_by, find, status), key,
                  plot, detail, sizing_mode="stretch_width")
    return file_html(page, INLINE, title=title)
