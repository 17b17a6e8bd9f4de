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

from pipeline.evaluation.explorer.page_script import COLOUR_JS, DETAIL_JS, FIND_JS

SHOWN_VALUES = 6  # a table's or vector's first values in the hover (the click shows the rest)
SCORES = ("surprisal", "surprisal_quantile", "novelty")  # the latents' score columns the page holds
COLOURED_SCORES = ("surprisal", "novelty")
RIGHT, WRONG, UNPROBED = "#9e9e9e", "#d62728", "#e0e0e0"


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
    # each categorical covariate's level, as text
    covariates: dict[str, list[str]] = field(default_factory=dict)


def explorer_html(points: Points, title: str, summary: str) -> str:
    """The standalone page: its title and summary, the controls ("Colour by", "Find id"), the
    legend, the plot, and the detail of the selected point."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import Div
    from bokeh.resources import INLINE

    label_colour, c_label = _categorical(points.labels)
    covariates = {name: _categorical(values) for name, values in points.covariates.items()}
    dims = [f"z{j}" for j in range(points.z.shape[1])]
    examples, hover, names = _examples(points.shown)
    source = _source(points, c_label, covariates, examples, dims)
    plot = _plot(points, source, hover)
    key, status = Div(text=_legend(label_colour)), Div(text="")
    detail = Div(text="", styles={"font-family": "sans-serif"}, name="detail")
    colour_by = _colour_by(source, key, label_colour, covariates, dims)
    find = _find(source, status, plot)
    _show_selected(source, detail, names, points.shown.size)
    page = column(
        Div(text=f"<h2>{html.escape(title)}</h2><p>{summary}</p>"),
        row(colour_by, find, status),
        key,
        plot,
        detail,
        sizing_mode="stretch_width",
    )
    return file_html(page, INLINE, title=title)


def _source(points: Points, c_label: list[str], covariates: dict, examples: dict, dims: list[str]):
    """The page's one ColumnDataSource: per point its coordinates, id, label, the probe's
    prediction and verdict, a colour column per categorical colouring, the example, the
    SCORES and z_mean by dimension."""
    from bokeh.models import ColumnDataSource

    c_error = [
        UNPROBED if not p else RIGHT if p == t else WRONG for p, t in zip(points.predicted, points.labels)
    ]
    return ColumnDataSource(
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


def _plot(points: Points, source, hover: str):
    """The UMAP's points, drawn by WebGL; hovering one shows its example (`hover`), id, label,
    the probe's verdict and its surprisal; a tap selects it."""
    from bokeh.models import HoverTool, TapTool
    from bokeh.plotting import figure

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
    return plot


def _find(source, status, plot):
    """The "Find id" box: selects the point of that id and centres the plot on it, or says in
    `status` that no point has it (FIND_JS)."""
    from bokeh.models import CustomJS, TextInput

    find = TextInput(title="Find id", placeholder="a row id, then Enter", width=160, name="find")
    find.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "status": status, "xr": plot.x_range, "yr": plot.y_range}, code=FIND_JS
        ),
    )
    return find


def _show_selected(source, detail, names: list[str], size: tuple[int, int]) -> None:
    """A selected point (a tap or a find) shown in `detail` beside its reconstruction, its
    pictures twice the hover's size (DETAIL_JS)."""
    from bokeh.models import CustomJS

    source.selected.js_on_change(
        "indices",
        CustomJS(
            args={
                "source": source,
                "detail": detail,
                "names": names,
                "side": [2 * v for v in size],
            },
            code=DETAIL_JS,
        ),
    )


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
