"""The explorer page: one Bokeh document per browser session over a shared :class:`RunData`.

- the UMAP or PCA map (WebGL scatter) of the run, datasets and splits as toggles, points
  coloured by dataset, split or any FIELD (posterior columns and the OOD score included);
- hover: the image's RGB thumbnail (served on demand by :mod:`scripts.explore.server`'s
  ``/thumb/<position>.png`` route, never precomputed), id, dataset and a few FIELDS;
- tap a point: its nearest images in every other dataset as a thumbnail strip with
  distances; lasso or box-select a region: its FIELD distribution against all points;
- realism tab: the observed images with no simulated counterpart (OOD score > 1);
- new image tab: upload a FITS file (or give a path on the server's disk); it is read as
  extract does and embedded by the run's encoder, appears on the map as a star with its
  neighbours, or the page shows the extract stage's skip reason.

URL arguments (for links and headless checks): ``?select=<dataset>:<row>`` opens the
neighbours of one image, ``?colour=<FIELD>`` colours the map, ``?fits=<path>`` adds a FITS
file from the server's disk.
"""
from __future__ import annotations

import base64
import html
import logging
import math

import numpy as np
import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import (BooleanFilter, Button, CDSView, CheckboxGroup, ColorBar, ColumnDataSource,
                          Div, FileInput, HoverTool, LinearColorMapper, LogColorMapper,
                          RadioButtonGroup, Select, TabPanel, Tabs, TextInput)
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure
from jinja2 import Template

from scripts.analysis.plots import PALETTE
from scripts.explore.data import OOD, RunData, png_bytes

logger = logging.getLogger(__name__)

#: Hover tooltip: the thumbnail comes from the server only when a point is hovered.
TOOLTIP = """
<div style="width:{width}px">
  <img src="{prefix}thumb/@pos.png" width="{px}" height="{px}" style="image-rendering:pixelated">
  <div><b>@dataset</b> #@object_id (@split)</div>
  {fields}
</div>
"""
#: Fields shown in the hover box besides the colour value.
N_HOVER_FIELDS = 4
#: Observed images listed in the realism tab.
N_UNMATCHED = 48
GREY = "#bbbbbb"
#: Marks ``<body data-explorer="…">`` once the document rendered (headless checks and
#: screenshots wait for it): points in the source, canvases drawn, neighbour list.
PROBE = Template("""{% extends base %}
{% block postamble %}{{ super() }}
<script>
(function probe() {
  var docs = window.Bokeh && Bokeh.documents;
  if (!docs || !docs.length || !docs[0].get_model_by_name("points")) { setTimeout(probe, 200); return; }
  var doc = docs[0];
  function canvases(root) {
    var out = Array.prototype.slice.call(root.querySelectorAll("canvas"));
    root.querySelectorAll("*").forEach(function (e) { if (e.shadowRoot) out = out.concat(canvases(e.shadowRoot)); });
    return out;
  }
  var found = canvases(document), coloured = 0;
  found.forEach(function (c) {
    try {
      var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (var i = 0; i < px.length; i += 4) { if (px[i + 3] > 0 && !(px[i] > 240 && px[i + 1] > 240 && px[i + 2] > 240)) coloured++; }
    } catch (err) {}
  });
  var source = doc.get_model_by_name("points");
  var report = {points: source.data.pos.length, canvases: found.length, coloured_pixels: coloured,
                neighbours: doc.get_model_by_name("neighbours").text.match(/data-neighbours="([^"]*)"/),
                fits: doc.get_model_by_name("fits_status").text};
  report.neighbours = report.neighbours ? report.neighbours[1] : "";
  if (report.coloured_pixels === 0) { setTimeout(probe, 300); return; }
  document.body.setAttribute("data-explorer", JSON.stringify(report));
})();
</script>
{% endblock %}
""")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "–" if not math.isfinite(v) else f"{v:.3g}"


def dataset_colours(names) -> dict:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def colour_values(data: RunData, key: str, shown: np.ndarray) -> tuple[list[str], dict]:
    """Hex colour of every drawn point by ``key`` (dataset, split or a numeric column) and
    the colour-bar settings (empty for categories)."""
    t = data.table
    if key in ("dataset", "split"):
        names = data.datasets if key == "dataset" else data.splits
        lut = dataset_colours(names)
        return [lut[v] for v in t[key].to_numpy()[shown]], {}
    values = t[key].to_numpy(dtype=np.float64)[shown]
    finite = values[np.isfinite(values)]
    if key == OOD:        # diverging around 1 (in domain below, no counterpart above)
        lo, hi, palette, log = 0.1, 10.0, list(RdBu11), True     # blue (low) to red
        scaled = (np.log10(np.clip(values, lo, hi)) + 1.0) / 2.0
    else:
        lo, hi = (np.percentile(finite, [2, 98]) if len(finite) else (0.0, 1.0))
        hi = hi if hi > lo else lo + 1.0
        palette, log = list(Viridis256), False
        scaled = np.clip((values - lo) / (hi - lo), 0, 1)
    idx = np.nan_to_num(scaled * (len(palette) - 1), nan=0).astype(int)
    out = np.where(np.isfinite(values), np.asarray(palette, dtype=object)[idx], GREY)
    return out.tolist(), {"low": float(lo), "high": float(hi), "palette": palette, "log": log}


def strip_html(data: RunData, query_label: str, query_image, table: pd.DataFrame) -> str:
    """Thumbnail strip: the query, then the nearest images of each other dataset with their
    distances, all with ONE display stretch (as the report's analogue panels)."""
    from scripts.analysis import plots

    if table is None or not len(table):
        return "<p>No neighbours.</p>"
    shown_raw = [query_image] + [data.images.read(d, [r])[0]
                                 for d, r in zip(table["dataset"], table["row"])]
    bands = ([data.images.band_index(data.observed[0] if data.observed else data.datasets[0])] +
             [data.images.band_index(d) for d in table["dataset"]])
    shown = plots.display_common(shown_raw, bands)
    ids = ",".join(f"{d}:{o}" for d, o in zip(table["dataset"], table["object_id"]))
    out = [f'<div class="strip" data-neighbours="{html.escape(ids)}">',
           f'<div style="display:inline-block;margin:2px;text-align:center;font-size:11px">'
           f'<img src="{_data_uri(png_bytes(shown[0], 72))}" width="72" height="72"><br>'
           f'<b>{html.escape(query_label)}</b></div>']
    for i, (_, hit) in enumerate(table.iterrows(), start=1):
        if hit["rank"] == 1:
            out.append('<div style="font-size:12px;margin-top:4px">'
                       f'<b>{html.escape(hit["dataset"])}</b></div>')
        out.append(f'<div style="display:inline-block;margin:2px;text-align:center;font-size:11px">'
                   f'<img src="{_data_uri(png_bytes(shown[i], 72))}" width="72" height="72"><br>'
                   f'#{hit["object_id"]} d={hit["distance"]:.2f}</div>')
    out.append("</div>")
    return "".join(out)


def realism_html(data: RunData, prefix: str) -> str:
    """The observed images without simulated counterpart (OOD score > 1), thumbnails first."""
    obs = data.table[data.table["dataset"].isin(data.observed)]
    scored = int(np.isfinite(obs[OOD]).sum())
    if not data.observed or not scored:
        return ("<p>No OOD scores: the run needs observed and simulated sets "
                "(analyse.OBSERVED_SETS, analyse.SIMULATED_SETS) with enough objects.</p>")
    unmatched = data.unmatched_observed()
    head = unmatched.head(N_UNMATCHED)
    cells = "".join(
        f'<div style="display:inline-block;margin:2px;text-align:center;font-size:11px">'
        f'<img src="{prefix}thumb/{p}.png" width="64" height="64" loading="lazy"><br>'
        f'{html.escape(d)} #{o}<br>s={s:.2f}</div>'
        for p, d, o, s in zip(head["position"], head["dataset"], head["object_id"], head[OOD]))
    return (f"<p>{len(unmatched)} of {scored} scored observed images have no simulated counterpart "
            "(OOD score &gt; 1: farther from every simulated image than 95 % of observed images "
            "are from their own kind; Eisert et al. 2024). All embedded splits are scored; the "
            "report's numbers use only analyse.EVALUATION_SPLITS. Colour the map by "
            f"<code>{OOD}</code> to see where they lie. Highest first:</p>{cells}")


def build_document(doc, data: RunData, prefix: str = "/", arguments: dict | None = None) -> None:
    """Fill ``doc`` (a Bokeh document of one session) with the explorer."""
    t, shown = data.table, data.shown
    map_names = sorted({c.rsplit("_", 1)[0] for c in data.map_columns},
                       key=lambda n: (n != "umap", n))
    hover_fields = data.hover_fields(N_HOVER_FIELDS)
    columns = {"pos": shown, "dataset": t["dataset"].to_numpy()[shown],
               "split": t["split"].to_numpy()[shown],
               "object_id": t["object_id"].astype(str).to_numpy()[shown],     # int64 > 2**53
               "value": np.full(len(shown), np.nan)}
    columns.update({c: t[c].to_numpy()[shown] for c in data.map_columns})
    columns.update({f: t[f].to_numpy(dtype=np.float64)[shown] for f in hover_fields})
    colours, _ = colour_values(data, "dataset", shown)
    columns["colour"] = colours
    source = ColumnDataSource(columns, name="points")
    view = CDSView(filter=BooleanFilter([True] * len(shown)))

    plot = figure(width=760, height=640, output_backend="webgl", title=f"run {data.run_name}: UMAP",
                  tools="pan,wheel_zoom,box_zoom,lasso_select,box_select,tap,reset,save",
                  active_scroll="wheel_zoom", name="map")
    size = float(np.clip(12 - 2 * np.log10(max(len(shown), 1)), 2, 8))
    points = plot.scatter("umap_1", "umap_2", source=source, view=view, size=size, fill_color="colour",
                          line_color=None, fill_alpha=0.8, nonselection_fill_alpha=0.3,
                          selection_line_color="black")
    field_rows = "".join(f"<div>{html.escape(f)}: @{{{f}}}{{0.[00]}}</div>" for f in hover_fields)
    plot.add_tools(HoverTool(renderers=[points], limit=1, tooltips=TOOLTIP.format(
        px=96, width=200, prefix=prefix, fields='<div>colour value: @value{0.[000]}</div>' + field_rows)))
    new_source = ColumnDataSource({**{c: [] for c in data.map_columns}, "name": [], "index": []},
                                  name="new_points")
    new_points = plot.scatter("umap_1", "umap_2", source=new_source, marker="star", size=20,
                              fill_color="gold", line_color="black")
    plot.add_tools(HoverTool(renderers=[new_points], limit=1, tooltips=(
        f'<div><img src="{prefix}new/@index.png" width="96" height="96"><div>@name (new)</div></div>')))
    mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
    colour_bar = ColorBar(color_mapper=mapper, visible=False, width=10)
    plot.add_layout(colour_bar, "right")

    # ---------------------------------------------------------------- controls
    projection = RadioButtonGroup(labels=[n.upper() for n in map_names], active=0)
    colour_by = Select(title="Colour by", value="dataset",
                       options=["dataset", "split"] + list(data.fields), name="colour_by")
    legend = Div()
    datasets = CheckboxGroup(labels=data.datasets, active=list(range(len(data.datasets))))
    splits = CheckboxGroup(labels=data.splits, active=list(range(len(data.splits))))
    upload = FileInput(accept=".fits,.fit,.fits.gz,.fz", name="fits_upload")
    path_input = TextInput(title="…or a FITS path on the server", placeholder="/path/to/image.fits")
    path_button = Button(label="Add FITS", button_type="primary")
    fits_status = Div(text="", name="fits_status", width=300)
    neighbours = Div(text="<p>Tap a point to see its nearest images in every other dataset; "
                          "lasso a region to compare its FIELD distribution with all points.</p>",
                     name="neighbours", width=560)
    region_field = Select(title="Region FIELD", value=data.fields[0] if data.fields else "",
                          options=list(data.fields), name="region_field")
    hist = figure(width=540, height=240, title="selection vs all drawn points (density)",
                  tools="", toolbar_location=None)
    hist_source = ColumnDataSource({"left": [], "right": [], "all": [], "sel": []}, name="region_hist")
    hist.quad(left="left", right="right", bottom=0, top="all", source=hist_source, fill_color=GREY,
              line_color=None, fill_alpha=0.6, legend_label="all")
    hist.quad(left="left", right="right", bottom=0, top="sel", source=hist_source, fill_color=None,
              line_color="crimson", line_width=2, legend_label="selection")
    region_text = Div(text="", name="region_text")
    realism = Div(text=realism_html(data, prefix), width=560, name="realism")
    new_strip = Div(text="", width=560, name="new_neighbours")

    def draw_legend(key):
        if key in ("dataset", "split"):
            lut = dataset_colours(data.datasets if key == "dataset" else data.splits)
            legend.text = "".join(f'<span style="color:{c}">●</span> {html.escape(str(n))}<br>'
                                  for n, c in lut.items())
        else:
            legend.text = ""

    def recolour(attr, old, new):
        colours, bar = colour_values(data, new, shown)
        patch = {"colour": colours}
        patch["value"] = (t[new].to_numpy(dtype=np.float64)[shown] if new not in ("dataset", "split")
                          else np.full(len(shown), np.nan))
        source.data.update(patch)
        colour_bar.visible = bool(bar)
        if bar:
            colour_bar.color_mapper = (LogColorMapper if bar["log"] else LinearColorMapper)(
                palette=bar["palette"], low=bar["low"], high=bar["high"])
            colour_bar.title = new
            if new in data.fields:
                region_field.value = new
        draw_legend(new)

    def reproject(attr, old, new):
        name = map_names[new]
        for glyph_renderer in (points, new_points):
            glyph_renderer.glyph.x, glyph_renderer.glyph.y = f"{name}_1", f"{name}_2"
        plot.title.text = f"run {data.run_name}: {name.upper()}"

    def refilter(attr, old, new):
        keep_ds = [data.datasets[i] for i in datasets.active]
        keep_sp = [data.splits[i] for i in splits.active]
        mask = np.isin(source.data["dataset"], keep_ds) & np.isin(source.data["split"], keep_sp)
        view.filter = BooleanFilter(mask.tolist())

    def show_neighbours(position: int):
        label = f"{t.at[position, 'dataset']} #{t.at[position, 'object_id']}"
        table = data.neighbours(position)
        query = data.images.read(t.at[position, "dataset"], [int(t.at[position, "row"])])[0]
        neighbours.text = (f"<p>Nearest images of <b>{html.escape(label)}</b> in every other "
                           "dataset (L2, representation standardised with the observed set):</p>"
                           + strip_html(data, label, query, table))

    def show_region(positions):
        f = region_field.value
        if not f:
            return
        result = data.region_histogram(f, positions)
        if result is None:
            region_text.text = f"<p>No finite value of {html.escape(f)}.</p>"
            hist_source.data = {"left": [], "right": [], "all": [], "sel": []}
            return
        edges, sel, every = result
        hist_source.data = {"left": edges[:-1], "right": edges[1:], "all": every, "sel": sel}
        hist.title.text = f"{f}: selection ({len(positions)}) vs all drawn points (density)"
        counts = t.iloc[positions]["dataset"].value_counts()
        region_text.text = "<p>Selection: " + ", ".join(
            f"{html.escape(str(k))} {v}" for k, v in counts.items()) + "</p>"

    def selected(attr, old, new):
        if not new:
            return
        positions = shown[np.asarray(new, dtype=np.int64)]
        if len(positions) == 1:
            show_neighbours(int(positions[0]))
        else:
            show_region(positions)
            tabs.active = 0

    def add_new(result):
        fits_status.text = (f'<p style="color:{"green" if result.ok else "crimson"}">'
                            f"{html.escape(result.message())}</p>")
        if not result.ok:
            return
        index = len(data.new_images) - 1
        new_source.stream({**{c: [result.position[c]] for c in data.map_columns},
                           "name": [result.name], "index": [index]})
        new_strip.text = (f"<p><b>{html.escape(result.name)}</b>, placed at the mean map position "
                          "of its nearest images (the run's UMAP model is not stored):</p>"
                          + strip_html(data, result.name, result.image, result.neighbours))
        tabs.active = 2

    def uploaded(attr, old, new):
        def process():
            try:
                content = base64.b64decode(upload.value or "")
            except ValueError:
                content = b""
            filename = upload.filename if isinstance(upload.filename, str) else "upload.fits"
            add_new(data.add_fits_bytes(content, filename))
        doc.add_next_tick_callback(process)     # filename arrives in the same patch as value

    def from_path():
        if path_input.value.strip():
            add_new(data.add_fits(path_input.value.strip()))

    colour_by.on_change("value", recolour)
    projection.on_change("active", reproject)
    datasets.on_change("active", refilter)
    splits.on_change("active", refilter)
    source.selected.on_change("indices", selected)
    region_field.on_change("value", lambda a, o, n: show_region(
        shown[np.asarray(source.selected.indices, dtype=np.int64)]) if source.selected.indices else None)
    upload.on_change("value", uploaded)
    path_button.on_click(from_path)
    draw_legend("dataset")

    tabs = Tabs(tabs=[
        TabPanel(child=column(neighbours, region_field, hist, region_text), title="Selection"),
        TabPanel(child=realism, title="Realism"),
        TabPanel(child=new_strip, title="New image")], width=580)
    header = Div(text=f"<h2 style='margin:4px 0'>galaxy-clr explorer — run "
                      f"{html.escape(data.run_name)}</h2><div>{html.escape(data.message)}</div>",
                 name="header")
    controls = column(Div(text="<b>Map</b>"), projection, colour_by, legend,
                      Div(text="<b>Datasets</b>"), datasets, Div(text="<b>Splits</b>"), splits,
                      Div(text="<b>New image (FITS)</b>"), upload, path_input, path_button,
                      fits_status, width=220)
    doc.add_root(column(header, row(controls, plot, tabs)))
    doc.title = f"explorer: {data.run_name}"
    doc.template = PROBE

    arguments = arguments or {}
    if arguments.get("colour") in colour_by.options:
        colour_by.value = arguments["colour"]
    if "select" in arguments:
        dataset, _, row_id = arguments["select"].rpartition(":")
        hit = np.flatnonzero((t["dataset"] == dataset).to_numpy() & (t["row"].to_numpy() == int(row_id)))
        if len(hit):
            show_neighbours(int(hit[0]))
    if "fits" in arguments:
        add_new(data.add_fits(arguments["fits"]))


def session_arguments(doc) -> dict:
    """URL arguments of the session (first value of each, decoded)."""
    ctx = getattr(doc, "session_context", None)
    request = getattr(ctx, "request", None) if ctx else None
    args = getattr(request, "arguments", {}) or {}
    return {k: (v[0].decode() if isinstance(v[0], bytes) else str(v[0])) for k, v in args.items() if v}
