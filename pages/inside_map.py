"""Inside the network: the hidden layer's map. The 10,000 test images' last hidden layer (the article's FC 625)
projected to 2-D and coloured by class, the page's image as a star; a click on a point opens that test image. It
follows time travel, each epoch's frame turned onto the final model's, so a class watches the classes separate.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np
import streamlit as st

from cnn.projection import (PROJECTIONS, Projection, cached_projection, hidden_layer, hidden_layer_title,
                            kept_projection, map_extent, map_points, neighbour_accuracy, picked_point,
                            separation_sentence)
from pages.picking import Looking, kept_choice, show_test_image, taking_turns, test_inputs
from pages.shared import PERSIST, active_model, checkpoint_for, field, load_data_with_progress, progress_place, \
    show_progress

# Vega has no star among its symbol shapes; a custom shape is an SVG path in [-1, 1], scaled by the mark's size.
STAR = ("M0,-1L0.22,-0.31L0.95,-0.31L0.36,0.12L0.59,0.81L0,0.38L-0.59,0.81L-0.36,0.12L-0.95,-0.31L-0.22,-0.31Z")
MAP_CHART = "hidden_map"  # the chart's key: its selection (the clicked point) is read in _open_point
METHOD_NAMES = {"pca": "PCA (at once)", "tsne": "t-SNE"}


class NotKept(Exception):
    """No map in memory or on disk yet: the page fits one, with a progress bar (an exception is never cached)."""


@st.cache_resource(max_entries=12, show_spinner=False)
def remembered_map(version: str, method: str, dataset: str, start_from: str, _model, _inputs, _start=None,
                   _fitted: Projection | None = None):
    """A checkpoint version's map (t-SNE started from the map of the version start_from, "" for none), kept in
    memory: the one just fitted, else read from disk; NotKept otherwise.

    Nothing here draws (a cached function's elements would be replayed), so the progress bar lives in fitted_map."""
    found = _fitted if _fitted is not None else kept_projection(_model, _inputs, method, start=_start)
    if found is None:
        raise NotKept
    return found


@st.cache_resource(max_entries=64, show_spinner=False)
def fitting_lock(version: str, method: str) -> threading.Lock:
    """One lock per map: a class opening the class model's t-SNE at once fits it once, the others wait for it."""
    return threading.Lock()


def fitted_map(version: str, method: str, dataset: str, model, inputs, whose: str, place,
               start: tuple[str, np.ndarray] | None = None) -> Projection:
    """The map of one checkpoint version: from memory or disk at once, else fitted once with a progress bar; start:
    (version, points) of the map a t-SNE starts from (an epoch's starts from the final model's)."""
    start_from, start_points = start if start is not None and method == "tsne" else ("", None)
    try:
        return remembered_map(version, method, dataset, start_from, model, inputs, start_points)
    except NotKept:
        pass
    with taking_turns(fitting_lock(version, method), f"Another student is drawing {whose} {METHOD_NAMES[method]} "
                      "map; it shows here when done...", place):
        try:  # drawn while this session waited
            return remembered_map(version, method, dataset, start_from, model, inputs, start_points)
        except NotKept:
            pass
        place.progress(0.0, text=f"Drawing {whose} {METHOD_NAMES[method]} map (once per model)...")
        fitted = cached_projection(model, inputs, method, start=start_points, progress=lambda fraction, words: show_progress(
                                       place, fraction, f"{whose.capitalize()} {METHOD_NAMES[method]} map: {words}"))
        place.empty()
        return remembered_map(version, method, dataset, start_from, model, inputs, start_points, fitted)


@st.cache_data(max_entries=32, show_spinner=False)
def separation(version: str, method: str, _points: np.ndarray, _labels: np.ndarray) -> float:
    """The map's 5-nearest-neighbour accuracy, once per checkpoint version and method."""
    return neighbour_accuracy(_points, _labels)


def shown_map(seen: Looking, method: str, inputs, place) -> Projection:
    """The map of the model on the time-travel slider. An epoch's t-SNE starts from the final model's map (t-SNE puts
    clusters anywhere: started alike, each class stays where it ends), then every epoch's frame is turned onto the
    final one's, so the classes stay in place while they separate."""
    if seen.epoch is None:
        return fitted_map(seen.version, method, seen.spec.name, seen.model, inputs, "this model's", place)
    final, _card, run = active_model()
    path = checkpoint_for(run)
    final_version = f"{path}@{os.path.getmtime(path)}"
    final_map = fitted_map(final_version, method, seen.spec.name, final, inputs, "the final model's", place)
    projection = fitted_map(seen.version, method, seen.spec.name, seen.model, inputs, "this model's", place,
                            start=(final_version, final_map.points))
    return projection.aligned_to(final_map.points)


def _open_point(count: int) -> None:
    """The map's callback (before the widgets are drawn): a clicked point's test image becomes the page's image."""
    index = picked_point(st.session_state[MAP_CHART].selection.get("picked"), count)
    if index is not None:
        show_test_image(index)


def map_chart(projection: Projection, labels: np.ndarray, star: np.ndarray, seen: Looking) -> dict:
    """The test images' points coloured by class (a point selection "picked"), the page's image as a big star."""
    spec, names = seen.spec, list(seen.spec.class_names)
    axis = {"title": None, "labels": False, "ticks": False, "grid": False}  # a projection's axes have no units
    star_mark = {"type": "point", "shape": STAR, "size": 700, "filled": True, "color": "black", "stroke": "white",
                 "strokeWidth": 1.5, "opacity": 1}
    x_domain, y_domain = map_extent(np.vstack([projection.points, star[None]]))
    return {"data": {"values": map_points(projection.points, labels, names, star, seen.label)}, "height": 520,
            "encoding": {"x": field("x", "quantitative", axis=axis, scale={"domain": x_domain}),
                         "y": field("y", "quantitative", axis=axis, scale={"domain": y_domain})},
            "layer": [{"transform": [{"filter": "datum.star == ''"}],
                       "mark": {"type": "circle", "size": 14, "opacity": 0.65, "cursor": "pointer"},
                       "params": [{"name": "picked", "select": {"type": "point", "fields": ["image"]}}],
                       "encoding": {"color": field("class", "nominal", title=spec.class_word, sort=names,
                                                   scale={"domain": names, "scheme": "tableau10"}),
                                    "tooltip": [field("class", "nominal", title=spec.class_word),
                                                field("image", "quantitative", title="test image #")]}},
                      {"transform": [{"filter": "datum.star != ''"}], "mark": star_mark,
                       "encoding": {"tooltip": [field("star", "nominal", title="the star")]}}]}


def show(seen: Looking) -> None:
    try:
        hidden_layer(seen.model)
    except ValueError as exc:  # softmax regression: our sentence, nothing to map
        st.info(str(exc))
        return
    data = load_data_with_progress(seen.spec.name)
    if data is None:
        return
    methods = list(PROJECTIONS)
    method = st.radio("Projection", methods, horizontal=True, format_func=METHOD_NAMES.get, persist_state=PERSIST,
                      key=kept_choice("map_method", methods, methods[0]))
    method = method if method in PROJECTIONS else methods[0]  # a browser can send anything
    st.caption(PROJECTIONS[method])
    inputs = test_inputs(seen.spec.name, data.test_images)
    projection = shown_map(seen, method, inputs, progress_place())
    labels = data.test_labels.numpy()
    star = projection.place(seen.model, seen.x)[0]
    st.vega_lite_chart(spec=map_chart(projection, labels, star, seen), width="stretch", key=MAP_CHART,
                       on_select=functools.partial(_open_point, len(labels)), selection_mode="picked")
    accuracy = separation(f"{seen.version}", method, projection.raw_points, labels)
    st.caption(f"Each dot is one of the {len(labels):,} test images, placed by its {hidden_layer_title(seen.model)} "
               f"values; the star is the page's image ({seen.label}). Click a dot to make that image the page's.")
    st.markdown(separation_sentence(accuracy, epoch=seen.epoch, class_word=seen.spec.class_word))
