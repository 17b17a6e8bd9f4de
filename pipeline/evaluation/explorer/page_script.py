"""The explorer page's JavaScript: Bokeh CustomJS callbacks, run in the browser on the page's
own models (the names in each are the `args` pipeline.evaluation.explorer.page passes).

    COLOUR_JS   "Colour by": a categorical column's colours and legend, or a score or a latent
                dimension on the palette
    DETAIL_JS   a selected point: the example beside its reconstruction, or its cells
    FIND_JS     "Find id": select the point and centre the view on it
"""

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
