"""Inside the network: the whole network at a glance for one image (one chart, a column per stage), and one neuron
end to end: a click on a map opens it, a click on one of its cells follows that unit from its receptive field
through its per-channel partial sums, ReLU and pooling (or, for a dense unit, its strongest inputs).
"""
from __future__ import annotations

import functools

import numpy as np
import streamlit as st

from cnn.features import maps_grid
from cnn.inside import (Column, boxed_input, contribution_rows, conv_sentence, conv_unit, dense_sentence, dense_unit,
                        enlarged_cells, overview_columns, overview_marks, picked_map, picked_position, pool_sentence,
                        pooled_from, receptive_field, resolved_unit, strip_shape, strongest_rows)
from pages.picking import Looking, choose_unit, chosen_unit
from pages.shared import chart_spec, field

OVERVIEW_CHART = "glance_overview"  # the charts' keys: their selections are read in the callbacks
CELL_CHART = "glance_cell"
WIDTH, HEIGHT = 560, 500  # the overview's own units: at 1024 px with the sidebar open the chart is ~564 px wide


@st.cache_data(max_entries=16, show_spinner=False)
def overview(version: str, image_id: str, _model, _image: np.ndarray, class_names: tuple) -> tuple:
    """(columns, tiles, labels) of one image on one checkpoint version, computed once (the PNGs take the time)."""
    columns = overview_columns(_model, _image)
    return (columns, *overview_marks(columns, class_names, WIDTH, HEIGHT))


def overview_spec(tiles: list[dict], labels: list[dict]) -> dict:
    """The overview as one Vega-Lite chart: image marks placed by x/x2/y/y2 in the layout's own units, a point
    selection "map" on them (a click opens a map), and the texts above, beneath and beside the columns."""
    def position(name: str, size: float, reverse: bool = False) -> dict:
        return field(name, "quantitative", axis=None, scale={"domain": [0, size], "reverse": reverse, "nice": False})

    place = {"x": position("x", WIDTH), "y": position("y", HEIGHT, reverse=True)}
    images = {"data": {"values": tiles}, "mark": {"type": "image", "cursor": "pointer", "aspect": False},
              "params": [{"name": "map", "select": {"type": "point", "fields": ["stage", "channel"]}}],
              "encoding": {**place, "x2": field("x2", "quantitative"), "y2": field("y2", "quantitative"),
                           "url": field("url", "nominal"), "description": field("tip", "nominal"),
                           "tooltip": field("tip", "nominal", title="open")}}  # none faded: the detail shows the pick
    def texts(role: str, **mark) -> dict:  # align and weight are mark properties, not channels: a layer per role
        return {"data": {"values": [label for label in labels if label["role"] == role]},
                "mark": {"type": "text", "fontSize": 11, "baseline": "middle", **mark},
                "encoding": {**place, "text": field("text", "nominal")}}

    layers = [images, texts("title", fontWeight="bold"), texts("shape"), texts("class", align="left")]
    return {"width": "container", "height": HEIGHT, "layer": layers, "view": {"stroke": None}}


def cells_spec(cells: list[dict], chosen: tuple | None, side: int) -> dict:
    """One map (or a dense layer's strip) enlarged as a Vega-Lite heat map in its column's colours, a point selection
    "cell" on (row, col), the chosen cell outlined."""
    rows = max(cell["row"] for cell in cells) + 1
    span = max(rows, side)
    ticks = list(range(0, span, 1 if span <= 10 else 5))  # every row of pool3's 4x4, every fifth of conv1's 28
    place = {"x": field("col", "ordinal", title="column", axis={"values": ticks, "labelAngle": 0}),
             "y": field("row", "ordinal", title="row", axis={"values": ticks})}
    tip = [field("row", "ordinal"), field("col", "ordinal", title="column"),
           field("value", "quantitative", format=".3f")]
    if "unit" in cells[0]:
        tip.insert(0, field("unit", "ordinal"))
    layers = [{"data": {"values": cells}, "mark": {"type": "rect", "cursor": "pointer"},
               "params": [{"name": "cell", "select": {"type": "point", "fields": ["row", "col"]}}],
               "encoding": {**place, "color": field("fill", "nominal", scale=None), "tooltip": tip,
                            "description": field("tip", "nominal")}}]
    if chosen is not None:
        layers.append({"data": {"values": [{"row": chosen[0], "col": chosen[1]}]},
                       "mark": {"type": "rect", "filled": False, "stroke": "#00e0ff", "strokeWidth": 3},
                       "encoding": place})
    return {"width": 300, "height": int(300 * rows / max(side, 1)), "layer": layers}


def _open_map(columns: list[Column]) -> None:
    """The overview's callback: a clicked map (or layer, or output) becomes the chosen unit's map."""
    picked = picked_map(st.session_state[OVERVIEW_CHART].selection.get("map"), columns)
    if picked is None:
        return
    stage, channel = picked
    column = next(column for column in columns if column.stage == stage)
    if column.kind == "vector":  # a dense layer opens on its most active unit
        channel = int(np.argmax(column.values))
    choose_unit(stage, channel)


def _pick_cell(stage: str, channel: int, column: Column) -> None:
    """The enlarged map's callback: a clicked cell becomes the chosen unit (a dense strip's cell: its unit)."""
    if column.kind == "maps":
        picked = picked_position(st.session_state[CELL_CHART].selection.get("cell"), *column.values.shape[1:])
        if picked is not None:
            choose_unit(stage, channel, *picked)
        return
    rows, cols = strip_shape(column.values.size)
    picked = picked_position(st.session_state[CELL_CHART].selection.get("cell"), rows, cols)
    if picked is not None and picked[0] * cols + picked[1] < column.values.size:
        choose_unit(stage, picked[0] * cols + picked[1])


def show(seen: Looking) -> None:
    spec, image = seen.spec, seen.x[0, 0].numpy()
    columns, tiles, labels = overview(seen.version, seen.image_id, seen.model, image, tuple(spec.class_names))
    st.subheader("The network at a glance")
    st.caption(f"{seen.label}: every stage's output, in the order the data flows. Convolutions before ReLU (blue "
               "below 0, orange above), pooled maps and dense layers from 0 (dark) up, one colour scale per column "
               "so its maps compare. Click a map to open it.")
    st.vega_lite_chart(overview_spec(tiles, labels), key=OVERVIEW_CHART, width="stretch", selection_mode="map",
                       on_select=functools.partial(_open_map, columns))
    unit = resolved_unit(seen.model, columns, chosen_unit())
    if unit is not None:
        show_unit(seen, image, columns, unit)


def show_unit(seen: Looking, image: np.ndarray, columns: list[Column], unit: dict) -> None:
    """The chosen map enlarged (its cells clickable) beside the unit's receptive field, then its arithmetic."""
    stage, channel, at = unit["stage"], unit["channel"], (unit["row"], unit["col"])
    column = next(column for column in columns if column.stage == stage)
    st.subheader("One neuron, end to end")
    left, right = st.columns(2)
    with left:
        show_cells(seen, column, channel, at)
    box = (0, 0, seen.spec.side, seen.spec.side) if unit["kind"] == "dense" else receptive_field(stage, *at, seen.model)
    right.image(boxed_input(image, box), width=168, caption=box_caption(stage, channel, at, box, unit["kind"]))
    if unit["kind"] == "dense":
        show_dense(seen, image, stage, channel)
        return
    if unit["kind"] == "pool":
        below, window = pooled_from(seen.model, image, stage, channel, *at)
        st.markdown(pool_sentence(window, below, stage, channel, None) + f" Below: that winner, {below} map "
                    f"{channel} at row {window.winner[0]}, column {window.winner[1]}, end to end.")
        stage, at = below, window.winner
    show_conv(seen, image, stage, channel, at)


def box_caption(stage: str, channel: int, at: tuple, box: tuple, kind: str) -> str:
    if kind == "dense":
        return "A dense unit reads the whole image (red box): its receptive field."
    return (f"{stage} map {channel} at row {at[0]}, column {at[1]} can only see input rows {box[0]}-{box[2] - 1}, "
            f"columns {box[1]}-{box[3] - 1} (red box): its receptive field.")


def show_cells(seen: Looking, column: Column, channel: int, at: tuple) -> None:
    """The chosen map (or dense layer) enlarged as a clickable heat map; an output: its probability."""
    if column.kind == "outputs":
        st.markdown(f"**Output {seen.spec.class_name(channel)}**: {column.values[channel]:.1%} after softmax.")
        return
    cells = enlarged_cells(column, channel)
    for cell in cells:  # what a screen reader (and a test) reads on each cell
        cell["tip"] = f"unit {cell['unit']}" if "unit" in cell else f"row {cell['row']}, column {cell['col']}"
    if column.kind == "maps":
        where, side = at, column.values.shape[-1]
        caption = f"{column.stage} map {channel} enlarged: click a cell to follow that unit."
    else:
        where, side = divmod(channel, strip_shape(column.values.size)[1]), strip_shape(column.values.size)[1]
        caption = f"{column.stage}: its {column.values.size:,} units, row by row; click one to follow it."
    st.vega_lite_chart(cells_spec(cells, where, side), key=CELL_CHART, selection_mode="cell",
                       on_select=functools.partial(_pick_cell, column.stage, channel, column))
    st.caption(caption)


def show_conv(seen: Looking, image: np.ndarray, stage: str, channel: int, at: tuple) -> None:
    """A conv unit: the kxk patch of every input map it reads, the sorted partial sums, their total, ReLU, pool."""
    unit = conv_unit(seen.model, image, stage, channel, *at)
    count, k = len(unit.contributions), unit.kernel.shape[-1]
    grid, _, high = maps_grid(unit.patches, per="layer", columns=min(count, 16), cell=32, numbered=count > 1)
    # Its own size while it fits a phone; wider grids (64 input maps) shrink to the column instead of being cut.
    st.image(grid, width=int(grid.shape[1]) if grid.shape[1] <= 360 else "stretch")
    st.caption(f"The {k}x{k} patch it reads in each of its {count} input map{'s' if count > 1 else ''} "
               f"({unit.source}{', numbered' if count > 1 else ''}; one scale, 0 dark to {high:.2f} bright)")
    if count > 1:  # one input map has one partial sum: the sentence says it all
        st.vega_lite_chart(partial_sums_chart(contribution_rows(unit), unit.source), width="stretch")
    st.markdown(conv_sentence(unit))


def partial_sums_chart(rows: list[dict], source: str) -> dict:
    """The sorted bars of a conv unit's partial sums, each labelled with its input map's number."""
    sums = [row["sum"] for row in rows]  # a fixed domain: Vega computes no extent (a rerun's data swap logs none)
    domain = [min(0.0, *sums), max(0.0, *sums) or 1.0]
    return chart_spec(rows, {"type": "bar"}, {
        "x": field("map", "nominal", sort=None, title=f"{source} map, largest partial sum first",
                   axis={"labelAngle": 0 if len(rows) <= 32 else -90, "labelFontSize": 11}),
        "y": field("sum", "quantitative", title="partial sum", stack=None, scale={"domain": domain}),
        "color": field("sign", "nominal", scale={"domain": ["adds", "takes away"], "range": ["#ff9e27", "#59b3ff"]},
                       title=""),
        "tooltip": [field("channel", "nominal", title="input map"), field("sum", "quantitative", format=".4f")]},
        title=f"Its {len(rows)} partial sums, largest first", height=240)


def show_dense(seen: Looking, image: np.ndarray, stage: str, unit_index: int) -> None:
    """A dense unit (or an output): its strongest inputs, weight x input, and what they add up to."""
    unit = dense_unit(seen.model, image, stage, unit_index)
    st.markdown(f"Its {len(unit.strongest)} strongest inputs (largest |weight x input|) of {unit.inputs:,}:")
    st.dataframe(strongest_rows(unit), hide_index=True)
    st.markdown(dense_sentence(unit, seen.spec.class_name))
