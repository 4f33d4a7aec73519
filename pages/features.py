"""Feature maps and filters: what every layer of the active model computes for one chosen image.

Everything shown is what the model's network declares (its conv layers, their ReLU and pooling, its hidden layers),
on the model's dataset, with its class names.
"""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import functools

import numpy as np
import streamlit as st

from cnn.data import DatasetSpec
from cnn.features import (STAGES, ConvLayer, activations, class_template_grid, class_templates, confusion_cells,
                          confusion_counts, conv_layers, convolution_at, convolution_sentence, convolution_table,
                          dense_layers, enlarge, enlarged_map, hidden_strip, kernel_grid, kernels, map_colour_scale,
                          maps_grid, marked_patch, most_active_map, no_maps_sentence, picked_cell, products_table,
                          shown_decimals, strongest_output, thumbnail_grid)
from cnn.runs import read_filter_snapshots
from cnn.views import plural
from pages.picking import (clamped, kept_choice, kept_number, kept_select_slider, looking, show_test_image,
                           test_predictions)
from pages.shared import PERSIST, data_holder, field, kept, probability_chart


MAX_THUMBNAILS = 20  # images of one confusion cell shown at once
CONFUSION_CHART = "confusion"  # the chart's key: its selection (the clicked cell) is read in _open_cell


def confusion_spec(matrix: np.ndarray, spec: DatasetSpec, height: int = 340) -> dict:
    """A (K, K) [true, predicted] count matrix as a Vega-Lite heat map with the dataset's class names, in their
    order, its count written in each cell in the ink that reads on that cell's colour, and a point selection
    "cell" (a click picks one cell)."""
    selected = {"param": "cell", "empty": False}
    names, true_title = list(spec.class_names), f"true {spec.class_word}"
    angle = 0 if max(len(name) for name in names) <= 2 else -90  # slanted, "Ankle boot" hid every other name
    return {"data": {"values": confusion_cells(matrix, names)}, "height": height,
            "encoding": {"x": field("predicted", "nominal", title="read as", sort=names, axis={"labelAngle": angle}),
                         "y": field("true", "nominal", title=true_title, sort=names)},
            "layer": [{"mark": {"type": "rect", "cursor": "pointer", "stroke": "#ff7f0e"},
                       "params": [{"name": "cell", "select": {"type": "point", "fields": ["true", "predicted"]}}],
                       "encoding": {"color": field("fill", "nominal", scale=None),
                                    "strokeWidth": {"condition": {**selected, "value": 3}, "value": 0},
                                    "tooltip": [field("true", "nominal", title=true_title),
                                                field("predicted", "nominal", title="read as"),
                                                field("count", "quantitative", title="images")]}},
                      {"mark": {"type": "text", "cursor": "pointer", "fontSize": 12},
                       "encoding": {"text": field("count", "quantitative"), "color": field("ink", "nominal", scale=None)}}]}


def show_maps(acts: dict, layers: list[ConvLayer], image_id: str) -> tuple[ConvLayer, int]:
    """The maps of the chosen conv layer and stage, numbered, one enlarged beside its values; -> (layer, map shown)."""
    by_name = {layer.name: layer for layer in layers}
    cols = st.columns(3)
    name = cols[0].radio("Layer", list(by_name), horizontal=True, key=kept_choice("layer", list(by_name), layers[0].name),
                         format_func=lambda n: f"{n} ({by_name[n].maps} maps)", persist_state=PERSIST)
    layer = by_name.get(name, layers[0])  # a browser can send any value
    name, views = layer.name, list(layer.views)  # the stages that follow this conv in the network: before ReLU, after ReLU, pooled
    stage = cols[1].radio("Stage", views, horizontal=True, format_func=STAGES.get,
                          key=kept_choice("stage", views, "conv"), persist_state=PERSIST)
    per = cols[2].radio("Colours", ["map", "layer"], horizontal=True, format_func=lambda p: f"per {p}",
                        key=kept_choice("per", ["map", "layer"], "map"), persist_state=PERSIST)
    stage = stage if stage in layer.views else "conv"
    per = per if per in ("map", "layer") else "map"
    maps, signed = acts[layer.views[stage]], stage == "conv"  # before ReLU a map has both signs: centred on 0
    grid, low, high = maps_grid(maps, per=per, signed=signed, numbered=True)
    st.image(grid, caption=f"{name}, {STAGES[stage]}: {maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}, "
             f"numbered 0 to {maps.shape[0] - 1}", width="stretch")
    bar, scale = map_colour_scale(low, high, signed, per)
    st.image(bar, width=256)
    st.caption(scale)
    # Opens on the map that lets most through ReLU for this image (map 0 of conv3 is often blank); a stage
    # change keeps the map, so its way through ReLU and pooling can be followed.
    active = acts[layer.views.get("relu", layer.views["conv"])]
    key = kept_number("map_index", (image_id, name, layer.maps), most_active_map(active), 0, layer.maps - 1)
    index = clamped(st.number_input("Enlarge map number", 0, layer.maps - 1, key=key, persist_state=PERSIST,
                                    help="It opens on the map most active for this image."), 0, layer.maps - 1)
    chosen = maps[index]
    left, right = st.columns(2)  # the image stretches to its column (~280 px at 1024): the table never covers it
    left.image(enlarged_map(chosen, signed), width="stretch",
               caption=f"map {index}: min {chosen.min():.2f}, max {chosen.max():.2f}")
    right.dataframe(np.round(chosen, 2), height=300)
    return layer, index


def show_filters(model, layer: ConvLayer, run_folder) -> None:
    k = layer.kernel_size
    st.subheader(f"The filters of {layer.name}: {layer.maps} filters of {k}x{k}"
                 + (f" over {layer.inputs} input maps" if layer.inputs > 1 else "")
                 + (", each with a bias" if layer.bias else ""))
    channel = 0
    if layer.inputs > 1:
        key = kept_number(f"in_channel.{layer.name}", (layer.name, layer.inputs), 0, 0, layer.inputs - 1)
        channel = clamped(st.slider(f"Input channel (each filter has one {k}x{k} kernel per input map)", 0,
                                    layer.inputs - 1, key=key, persist_state=PERSIST), 0, layer.inputs - 1)
    weights = kernels(model, layer.name, channel)
    grid, limit = kernel_grid(weights)
    st.image(grid, width="stretch", caption=f"{weights.shape[0]} kernels reading input channel {channel}; "
             f"blue negative, white 0, red positive (±{limit:.3f})")
    if layer.inputs == 1:  # the first layer: each filter is one small image, its numbers readable
        st.dataframe({f"filter {f}": [" ".join(f"{v:+.2f}" for v in row) for row in weights[f]]
                      for f in range(len(weights))}, hide_index=True)
        if layer.name == "conv1":  # training keeps snapshots of conv1's filters
            filter_replay(run_folder, weights.shape)


def filter_replay(run_folder, shape: tuple) -> None:
    """conv1's filters at each snapshot training kept (step 0 is the random start), on a slider over steps;
    shape: conv1's (maps, k, k), which the snapshots must have."""
    snapshots = read_filter_snapshots(run_folder) if run_folder is not None else None
    if snapshots is None or len(snapshots[0]) == 0 or tuple(snapshots[1].shape[1:]) != tuple(shape):
        return
    steps, filters = snapshots
    at_step = {int(step): index for index, step in enumerate(steps)}  # step -> snapshot (the last, if repeated)
    step = kept_select_slider("How conv1's filters changed while training: the filters at step", list(at_step),
                              "replay_step", int(steps[-1]), format_func=lambda s: f"{s:,}")
    left, _ = st.columns([1, 1])  # a fixed width could make a phone's page wider than its screen
    left.image(kernel_grid(filters[at_step[step]], columns=8, cell=36, limit=float(np.abs(filters).max()))[0],
               width="stretch", caption=f"step {step:,}" + (": the random start, before any training" if step == 0 else ""))


def show_convolution(model, acts: dict, layer: ConvLayer, image_id: str, map_index: int) -> None:
    k = layer.kernel_size
    st.subheader("One convolution, by hand")
    conv = acts[layer.views["conv"]]
    size = conv.shape[-1]
    cols = st.columns(3)
    context = (image_id, layer.name, layer.maps, size)
    channel = clamped(cols[0].number_input("Map", 0, layer.maps - 1, key=kept_number(  # the enlarged one
        "conv_map", (*context, map_index), map_index, 0, layer.maps - 1), persist_state=PERSIST), 0, layer.maps - 1)
    start = strongest_output(conv[channel])  # on the image, where this filter answers most
    row = clamped(cols[1].number_input("Row", 0, size - 1, key=kept_number(
        "conv_row", (*context, channel), start[0], 0, size - 1), persist_state=PERSIST), 0, size - 1)
    col = clamped(cols[2].number_input("Column", 0, size - 1, key=kept_number(
        "conv_col", (*context, channel), start[1], 0, size - 1), persist_state=PERSIST), 0, size - 1)
    result = convolution_at(model, acts, layer.name, channel, row, col)
    shown = 0 if layer.inputs == 1 else int(np.argmax(np.abs(result["per_channel"])))
    decimals = shown_decimals(result["kernel"][shown])
    table = convolution_table(result, shown, decimals)
    source = f"{result['input']}" + (f", channel {shown}" if layer.inputs > 1 else "")
    picture, products = st.columns([2, 3])
    picture.image(marked_patch(acts[layer.input][shown], row, col, kernel_size=k, padding=layer.padding),
                  width="content", caption=f"the {k}x{k} patch (red box) that row {row}, column {col} reads, "
                  f"in {source}")
    products.markdown(products_table(table, (row, col)))
    st.markdown(convolution_sentence(result, table, layer.name, channel, (row, col), shown))


def show_output(model, acts: dict, spec: DatasetSpec) -> None:
    """What the network has after its convolutions: each hidden layer's activations, the softmax regression's
    weight images, and the probabilities with the dataset's class names."""
    templates = class_templates(model)
    if templates is not None:
        grid, limit = class_template_grid(templates, spec.class_names, cell=112)  # "T-shirt/top" fits under it
        st.image(grid, width="stretch", caption=f"What softmax regression learnt: its {spec.side}x{spec.side} "
                 f"weights for each {spec.class_word}, blue negative, white 0, red positive (±{limit:.3f}). "
                 "Ink where a class's weights are red raises its score.")
    shown = [(layer, acts[layer.activation]) for layer in dense_layers(model)] + [(None, acts["probabilities"])]
    for left, right in zip(shown[::2], [*shown[1::2], None]):
        columns = st.columns(2)
        for column, item in zip(columns, (left, right)):
            if item is not None:
                _show_layer_output(column, *item, spec)


def _show_layer_output(column, layer, values: np.ndarray, spec: DatasetSpec) -> None:
    """One hidden layer's activations as a square of bright cells, or (layer None) the probabilities."""
    if layer is None:
        column.vega_lite_chart(spec=probability_chart(values, height=250, class_names=spec.class_names,
                                                      class_word=spec.class_word), width="stretch")
        return
    strip = hidden_strip(values)
    column.image(enlarge(strip, 250), width=250, caption=f"FC {layer.units} activations "
                 f"({strip.shape[0]}x{strip.shape[1]}, bright = strong)")


def show_confusion(model, spec: DatasetSpec, kept_at: tuple, version: str) -> None:
    data = data_holder(spec.name).load()
    if data is None:
        return
    st.subheader(f"Where the model goes wrong: confusion matrix on the {len(data.test_labels):,} test images")
    predicted = test_predictions(*kept_at, version, model, data)
    labels = data.test_labels.numpy()
    matrix = confusion_counts(labels, predicted, spec.num_classes)
    errors = np.where(np.eye(spec.num_classes, dtype=bool), -1, matrix)
    worst = np.unravel_index(int(np.argmax(errors)), errors.shape)  # opens on the model's most frequent mistake
    chart, cell = st.columns([3, 2])
    chart.vega_lite_chart(spec=confusion_spec(matrix, spec), width="stretch", key=CONFUSION_CHART,
                          on_select=functools.partial(_open_cell, spec.class_names), selection_mode="cell")
    chart.caption(f"{int(np.trace(matrix)):,} of {int(matrix.sum()):,} right ({np.trace(matrix) / matrix.sum():.2%}). "
                  "Click a cell to see its images.")
    with cell:
        show_cell(data, spec, labels, predicted, worst)


def show_cell(data, spec: DatasetSpec, labels: np.ndarray, predicted: np.ndarray, worst: tuple) -> None:
    """One confusion cell's images beside the matrix: the chosen one enlarged on top, then the thumbnails and a
    pill per image to look inside it. All of it next to where the user clicked: nothing changes out of view."""
    scroll = st.session_state.pop("scroll_to_chosen", False)  # set by a click on a cell or a pill
    classes = list(range(spec.num_classes))
    # Side by side while the names are short (digits); one above the other when "T-shirt/top" would be cut.
    pick = st.columns(2) if max(len(name) for name in spec.class_names) <= 4 else (st.container(), st.container())
    true = pick[0].selectbox(f"True {spec.class_word}", classes, format_func=spec.class_name, persist_state=PERSIST,
                             key=kept_choice("cm_true", classes, int(worst[0])))
    guess = pick[1].selectbox("Read as", classes, format_func=spec.class_name, persist_state=PERSIST,
                              key=kept_choice("cm_pred", classes, int(worst[1])))
    true, guess = clamped(true, 0, spec.num_classes - 1), clamped(guess, 0, spec.num_classes - 1)  # sent by a browser
    found = np.nonzero((labels == true) & (predicted == guess))[0]
    st.markdown(f"**true {spec.class_name(true)}, read as {spec.class_name(guess)}: "
                f"{plural(len(found), 'image')}**")
    if len(found) == 0:
        return
    shown = [int(index) for index in found[:MAX_THUMBNAILS]]
    chosen = st.session_state.get("test_index")
    chosen = chosen if st.session_state.get(kept("image_source")) == "Test set" and chosen in shown else None
    with st.container(key="cm_chosen"):
        if chosen is not None:
            st.image(enlarge(data.test_images[chosen].numpy(), 112), width=112,
                     caption=f"#{chosen}: the page's image now; what the network makes of it is above")
        else:
            st.caption("Pick an image below to look inside it.")
    st.image(thumbnail_grid(data.test_images[shown].numpy(), [f"#{index}" for index in shown]), width="content",
             caption=f"the first {len(shown)} of {len(found):,}" if len(found) > len(shown) else None)
    key = f"cm_pick_{true}_{guess}"
    st.session_state[key] = chosen  # the pill of the page's image is the one lit
    st.pills("Look inside", shown, format_func=lambda index: f"#{index}", key=key, on_change=_pick_thumbnail, args=(key,),
             wrap=True)
    if scroll:  # after a click: the chosen image in view, on any screen (on a phone it is below the matrix)
        st.html("<script>document.querySelector('.st-key-cm_chosen')?.scrollIntoView({block: 'nearest'});</script>",
                unsafe_allow_javascript=True)


def _pick_thumbnail(key: str) -> None:
    """A pill under the thumbnails was pressed: that image becomes the page's image."""
    index = st.session_state.get(key)
    if isinstance(index, int):
        _show_test_image(index)


def _open_cell(class_names) -> None:
    """The confusion chart's callback (before the widgets are drawn): a clicked cell becomes the shown cell and its
    first image the page's image."""
    cell = picked_cell(st.session_state[CONFUSION_CHART].selection.get("cell"), class_names)
    if cell is None:
        return
    st.session_state[kept("cm_true")], st.session_state[kept("cm_pred")] = cell
    st.session_state.open_first_of_cell = True


def _show_test_image(index: int) -> None:
    """Make test image #index the page's image (a callback: runs before the widgets are drawn)."""
    show_test_image(index)
    st.session_state.scroll_to_chosen = True


def open_first_of_cell(model, spec: DatasetSpec, kept_at: tuple, version: str) -> None:
    """After a click on a confusion cell: its first image becomes the page's image (before the image is chosen)."""
    if not st.session_state.pop("open_first_of_cell", False):
        return
    data = data_holder(spec.name).load()
    if data is None:
        return
    predicted = test_predictions(*kept_at, version, model, data)
    true, guess = st.session_state[kept("cm_true")], st.session_state[kept("cm_pred")]
    found = np.nonzero((data.test_labels.numpy() == true) & (predicted == guess))[0]
    if len(found):
        _show_test_image(int(found[0]))


def page() -> None:
    st.title("Feature maps and filters")
    seen = looking(before_choosing=open_first_of_cell)
    if seen is None:
        return
    model, spec, layers = seen.model, seen.spec, conv_layers(seen.model)
    if not layers:
        st.info(no_maps_sentence(model))
    acts = activations(model, seen.x)
    st.image(enlarge(seen.image, 140), width=140)
    st.caption(f"Input: {seen.label}, read as {spec.class_name(np.argmax(acts['probabilities']))}.")
    if layers:
        layer, map_index = show_maps(acts, layers, seen.image_id)
        show_filters(model, layer, seen.history)
        show_convolution(model, acts, layer, seen.image_id, map_index)
    show_output(model, acts, spec)
    show_confusion(model, spec, seen.kept_at, seen.version)


page()
