"""explorer.html: the UMAP of the latents as one self-contained page (Bokeh, its JavaScript
inlined: no script, style or font from the network), every point hoverable.

Hover: the example (its picture, or its first values), its label, the linear probe's
prediction and whether it was right, its surprisal and quantile among the training rows.
Colour by label, by the probe's error, by surprisal or novelty, or by any latent dimension.
Find a point by id. A click (or a find) shows the example beside its reconstruction (the
decoder's mean at z = μ_φ(x)). WebGL draws the points, so 10,000 stay responsive.
"""

import html
from dataclasses import dataclass, field

import numpy as np

SHOWN_VALUES = 6  # a table's or vector's first values in the hover (the click shows the rest)
SCORES = ("surprisal", "surprisal_quantile", "novelty")  # the latents' score columns the page holds
COLOURED_SCORES = ("surprisal", "novelty")
RIGHT, WRONG, UNPROBED = "#9e9e9e", "#d62728", "#e0e0e0"

COLOUR_JS = """
const d = source.data, by = cb_obj.value;
if (by in categorical) {  // label, probe error, each covariate: [its colour column, its legend]
    d.color = d[categorical[by][0]];
    key.text = categorical[by][1];
} else {
    const z = d[by], k = palette.length - 1;
    let lo = Infinity, hi = -Infinity;  // a loop: Math.min(...z) overflows the call stack past ~125k points
    for (const v of z) { if (v < lo) lo = v; if (v > hi) hi = v; }
    d.color = Array.from(z, v => palette[Math.round(k * (v - lo) / ((hi - lo) || 1))]);
    key.text = `${by}: dark low, yellow high`;
}
source.change.emit();
"""

# Labels are the user's data: escaped before they go into the page's HTML (a table's cells are, in Python).
ESCAPE_JS = """
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
"""

DETAIL_JS = (
    ESCAPE_JS
    + """
const i = source.selected.indices[0], d = source.data;
if (i === undefined) { detail.text = ""; return; }
const figure = (src, caption) => `<figure><img src="${src}" width="${side[1]}" height="${side[0]}" `
    + `style="image-rendering:pixelated"><figcaption>${caption}</figcaption></figure>`;
const body = names.length
    ? "<table><tr><th>column</th><th>example</th><th>reconstruction</th></tr>"
      + names.map((name, j) => `<tr><td>${name}</td><td>${d["v" + j][i]}</td>`
        + `<td>${d["r" + j][i]}</td></tr>`).join("")
      + "</table>"
    : `<div style="display:flex;gap:16px">${figure(d.thumb[i], "example")}`
      + `${figure(d.recon[i], "reconstruction (the decoder's mean at z = &mu;)")}</div>`;
detail.text = `<b>id ${d.id[i]}</b>, label ${esc(d.label[i])}, probe: ${esc(d.predicted[i])}<br>${body}`;
"""
)

FIND_JS = (
    ESCAPE_JS
    + """
const wanted = cb_obj.value.trim(), i = source.data.id.findIndex(v => String(v) === wanted);
if (i < 0) { status.text = wanted ? `no point with id ${esc(wanted)} among these` : ""; return; }
status.text = "";
source.selected.indices = [i];
const x = source.data.x[i], y = source.data.y[i], w = (xr.end - xr.start) / 4, h = (yr.end - yr.start) / 4;
xr.start = x - w; xr.end = x + w; yr.start = y - h; yr.end = y + h;
"""
)


@dataclass(frozen=True)
class Shown:
    """The points' examples as the page shows them: pictures (PNG data URIs of each example and
    of its reconstruction, and their size), or values (escaped text of each example's and
    reconstruction's cells, by escaped column name, the first SHOWN_VALUES of them in the hover)."""

    pictures: tuple[list[str], list[str]] | None = None
    size: tuple[int, int] = (0, 0)  # (height, width) of a picture
    values: dict[str, tuple[list[str], list[str]]] | None = None


@dataclass(frozen=True)
class Points:
    """What the page shows, one entry per point: UMAP coordinates, ids, labels, the probe's
    prediction ("" where the probe did not see the row), z_mean (n, d), the examples and
    their SCORES ({column: (n,)}, NaN where null)."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    labels: list[str]
    predicted: list[str]
    z: np.ndarray
    shown: Shown
    scores: dict[str, np.ndarray]
    covariates: dict[str, list[str]] = field(
        default_factory=dict
    )  # each categorical covariate's level, as text


def explorer_html(points: Points, title: str, summary: str) -> str:
    """The standalone page."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, TapTool, TextInput
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    label_colour, c_label = _categorical(points.labels)
    covariates = {name: _categorical(values) for name, values in points.covariates.items()}
    c_error = [
        UNPROBED if not p else RIGHT if p == t else WRONG for p, t in zip(points.predicted, points.labels)
    ]
    dims = [f"z{j}" for j in range(points.z.shape[1])]
    examples, hover, names = _examples(points.shown)
    source = ColumnDataSource(
        {
            "x": points.x,
            "y": points.y,
            "id": points.ids,
            "label": points.labels,
            "predicted": [p or "not probed" for p in points.predicted],
            "right": [
                "" if not p else "right" if p == t else "wrong"
                for p, t in zip(points.predicted, points.labels)
            ],
            "color": c_label,
            "c_label": c_label,
            "c_error": c_error,
            **examples,
            **{f"c_covariate_{j}": colours for j, (_, colours) in enumerate(covariates.values())},
            **{name: points.scores[name] for name in SCORES},
            **{name: points.z[:, j] for j, name in enumerate(dims)},
        }
    )
    plot = figure(
        title="UMAP of the latents (z_mean)",
        output_backend="webgl",
        sizing_mode="stretch_width",
        x_range=_padded(points.x),
        y_range=_padded(points.y),  # fixed ranges, which "find id" moves
        height=620,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
        name="umap",
    )
    dots = plot.scatter(
        "x", "y", source=source, size=6, fill_color="color", line_color=None, fill_alpha=0.8, name="points"
    )
    plot.add_tools(
        HoverTool(
            renderers=[dots],
            tooltips=f"""
        <div>{hover}</div>
        <div><b>id @id</b> &middot; label @label</div>
        <div>probe: @predicted @right</div>
        <div>surprisal @surprisal{{0.0}} nats, quantile @surprisal_quantile{{0.000}}</div>""",
        ),
        TapTool(renderers=[dots]),
    )
    key, status = Div(text=_legend(label_colour)), Div(text="")
    detail = Div(text="", styles={"font-family": "sans-serif"}, name="detail")
    colour_by = _colour_by(source, key, label_colour, covariates, dims)
    find = TextInput(title="Find id", placeholder="a row id, then Enter", width=160, name="find")
    find.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "status": status, "xr": plot.x_range, "yr": plot.y_range}, code=FIND_JS
        ),
    )
    source.selected.js_on_change(
        "indices",
        CustomJS(
            args={
                "source": source,
                "detail": detail,
                "names": names,
                "side": [2 * v for v in points.shown.size],
            },
            code=DETAIL_JS,
        ),
    )
    page = column(
        Div(text=f"<h2>{html.escape(title)}</h2><p>{summary}</p>"),
        row(colour_by, find, status),
        key,
        plot,
        detail,
        sizing_mode="stretch_width",
    )
    return file_html(page, INLINE, title=title)


def _colour_by(source, key, label_colour: dict, covariates: dict, dims: list[str]):
    """The "Colour by" menu: label, probe error and each covariate by their legends; scores and
    latent dimensions on a scale."""
    from bokeh.models import CustomJS, Select
    from bokeh.palettes import Viridis256

    label_key, error_key = _legends(label_colour)
    categorical = {
        "label": ["c_label", label_key],
        "probe error": ["c_error", error_key],
        **{
            f"{name} (covariate)": [f"c_covariate_{j}", _legend(colour)]
            for j, (name, (colour, _)) in enumerate(covariates.items())
        },
    }
    colour_by = Select(
        title="Colour by",
        value="label",
        options=[*categorical, *COLOURED_SCORES, *dims],
        width=160,
        name="colour_by",
    )
    colour_by.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "palette": list(Viridis256), "key": key, "categorical": categorical},
            code=COLOUR_JS,
        ),
    )
    return colour_by


def _categorical(values: list[str]) -> tuple[dict[str, str], list[str]]:
    """({value: colour}, each point's colour) of a categorical column (labels, a covariate)."""
    from bokeh.palettes import Category10_10, Category20_20

    levels = sorted(set(values))
    palette = list(Category10_10 if len(levels) <= 10 else Category20_20)
    colour = {name: palette[i % len(palette)] for i, name in enumerate(levels)}
    return colour, [colour[value] for value in values]


def _dot(colour: str, what: str) -> str:
    return f'<span style="color:{colour}">&#9679;</span>&nbsp;{what}'


def _legend(colour: dict[str, str]) -> str:
    """The HTML legend of a categorical colouring (names escaped: they are the user's data)."""
    return " ".join(_dot(c, html.escape(name)) for name, c in colour.items())


def _legends(label_colour: dict[str, str]) -> tuple[str, str]:
    """The HTML legends of the colourings by label and by the probe's error."""
    return (
        _legend(label_colour),
        " &nbsp;".join(
            _dot(colour, what)
            for colour, what in ((WRONG, "wrong"), (RIGHT, "right"), (UNPROBED, "not probed"))
        ),
    )


def _examples(shown: Shown) -> tuple[dict, str, list[str]]:
    """(the source's example columns, the hover's example HTML, the detail's column names)."""
    if shown.pictures is not None:
        height, width = shown.size
        return (
            {"thumb": shown.pictures[0], "recon": shown.pictures[1]},
            f'<img src="@thumb{{safe}}" width="{width}" height="{height}" style="image-rendering:pixelated">',
            [],
        )
    names = list(shown.values or {})
    columns = {}
    for j, (example, reconstruction) in enumerate((shown.values or {}).values()):
        columns[f"v{j}"], columns[f"r{j}"] = example, reconstruction
    hover = "".join(
        f"<div>{for_template(name)} = @{{v{j}}}{{safe}}</div>" for j, name in enumerate(names[:SHOWN_VALUES])
    )
    return columns, hover, names


def for_template(escaped: str) -> str:
    """HTML-escaped text made literal in a Bokeh tooltip template too: there `@name`, `$name` and
    `{format}` are fields (`@label{safe}` in a column name would insert a label unescaped), so
    those characters go in as character references, which Bokeh leaves alone and the browser shows."""
    return escaped.translate({ord(c): f"&#{ord(c)};" for c in "@${}"})


def _padded(values: np.ndarray):
    """A Range1d over the values, with 5% to spare on each side."""
    from bokeh.models import Range1d

    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = 0.05 * (high - low) or 1.0
    return Range1d(low - pad, high + pad)
