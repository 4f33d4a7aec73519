"""Experiments > Transform the image: move, turn, scale, thicken or thin, add noise, black out a box, and watch the
answer follow; a sweep of one transformation through its range; accuracy on the test set (and on the class's
handwriting) against shift and rotation, for the active model and the Compare page's bundled networks.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from cnn import transforms
from cnn.classset import class_set_note, class_set_version, default_class_dir, load_class_set
from cnn.compare import BUNDLED_COMPARISON_DATASET, ComparedRun, color_scale, run_labels
from cnn.data import to_float
from cnn.drawing import LruCache
from cnn.explain import describe
from cnn.features import enlarge
from cnn.transforms import CURVE_VALUES, TRANSFORM_RANGES
from pages.picking import Looking, kept_choice, taking_turns, test_inputs
from pages.shared import PERSIST, cached_checkpoint, chart_spec, field, kept, load_data_with_progress, \
    probability_chart, progress_place, show_progress

# (slider name, its kind in TRANSFORM_RANGES, its label, its help); the box's three sliders follow them.
SLIDERS = (("dx", "shift", "Right (px)", "Negative: left."), ("dy", "shift", "Down (px)", "Negative: up."),
           ("rotate", "rotate", "Turn (degrees)", "Anticlockwise; negative: clockwise."),
           ("scale", "scale", "Scale (x)", "About the centre: 2 is twice as big."),
           ("thickness", "thickness", "Strokes (px)", "Positive: thicker (3x3 dilations); negative: thinner."),
           ("noise", "noise", "Noise (std)", "Gaussian noise of this spread, clipped to black and white."))
BOX = ("box_size", "box_row", "box_col")
SWEEP_TITLES = {"shift": "move right", "rotate": "turn", "scale": "scale", "thickness": "strokes", "noise": "noise"}
ACTIVE = "active model"  # the active model's name among the curves' networks (no bundled name has a space)


def _key(name: str) -> str:
    return kept(f"transform_{name}")


def reset() -> None:
    """Every slider back to the identity (a button's callback: it runs before the sliders are drawn)."""
    for name, kind, *_ in SLIDERS:
        st.session_state[_key(name)] = TRANSFORM_RANGES[kind].identity
    for name in BOX:
        st.session_state[_key(name)] = 0


def controls(side: int) -> dict:
    """The sliders (their kept values settled first: a forged NaN, 1e9 or string never reaches a widget);
    returns the transform_images keywords they set."""
    for name, kind, *_ in SLIDERS:
        st.session_state[_key(name)] = transforms.settled(kind, st.session_state.get(_key(name),
                                                                                     TRANSFORM_RANGES[kind].identity))
    box = transforms.box_sliders(*(st.session_state.get(_key(name), 0) for name in BOX), side)
    for name, value in zip(BOX, box):
        st.session_state[_key(name)] = value
    columns = st.columns(2)
    for index, (name, kind, label, words) in enumerate(SLIDERS):
        spread = TRANSFORM_RANGES[kind]
        number = int if float(spread.step).is_integer() else float  # the type settled() gives: the slider's own
        columns[index % 2].slider(label, number(spread.low), number(spread.high), step=number(spread.step),
                                  help=words, key=_key(name), persist_state=PERSIST)
    columns[0].slider("Black box (px)", 0, side // 2, help="Its side; 0: no box.", key=_key("box_size"),
                      persist_state=PERSIST)
    spare = side - max(box[0], 1)  # the box stays inside the image (box_sliders settled the corner so)
    columns[1].slider("Box row", 0, spare, key=_key("box_row"), persist_state=PERSIST)
    columns[0].slider("Box column", 0, spare, key=_key("box_col"), persist_state=PERSIST)
    columns[1].button("Reset", on_click=reset, key="transform_reset")
    names = [name for name, *_ in SLIDERS] + list(BOX)
    return transforms.settings_from({name: st.session_state[_key(name)] for name in names}, side)


def live(seen: Looking, settings: dict) -> None:
    """The original beside the transformed image, and what the network answers for it."""
    moved, probabilities = transforms.read_transformed(seen.model, seen.image, settings)
    answer = describe(probabilities, seen.spec)
    images = st.columns(2)
    images[0].image(enlarge(seen.image, 140), caption="Original")
    images[1].image(enlarge(np.round(moved * 255).astype(np.uint8), 140), caption="Transformed")
    with st.container(key="transform_answer"):
        st.markdown(f"**Transformed: {answer['text']}**")
    st.vega_lite_chart(probability_chart(probabilities, 140, seen.spec.class_names, seen.spec.class_word),
                       width="stretch")


def sweep_chart(rows: list[dict], kind: str, values: list[float], current: float, class_word: str) -> dict:
    """Each class's probability (a line) as kind goes through values, the current value a vertical rule; explicit
    domains, so Vega never meets an empty extent while Streamlit puts the data in."""
    axis = field(kind, "quantitative", title=TRANSFORM_RANGES[kind].title, scale={"domain": [values[0], values[-1]]})
    lines = {"data": {"values": rows}, "mark": {"type": "line", "point": True}, "encoding": {
        "x": axis, "y": field("probability", "quantitative", scale={"domain": [0, 1]}),
        "color": field("class", "nominal", title=class_word, sort=None,
                       legend={"orient": "bottom", "columns": 5, "labelLimit": 0}),
        "tooltip": [field("class", "nominal", title=class_word), field(kind, "quantitative"),
                    field("probability", "quantitative", format=".1%")]}}
    rule = {"data": {"values": [{kind: current}]}, "mark": {"type": "rule", "strokeDash": [4, 3]},
            "encoding": {"x": axis}}
    return {"layer": [lines, rule], "height": 330}  # Streamlit fits axes and the key in this height too


def sweep(seen: Looking, settings: dict) -> None:
    kinds = list(TRANSFORM_RANGES)
    kind = st.segmented_control("Sweep one transformation through its range (the others stay as set)", kinds,
                                format_func=SWEEP_TITLES.get, key=kept_choice("transform_sweep", kinds, kinds[0]),
                                persist_state=PERSIST)
    kind = kind if kind in kinds else kinds[0]
    values = transforms.sweep_range(kind, seen.spec.side)
    probabilities = transforms.class_sweep(seen.model, seen.image, kind, values, settings=settings)
    rows = transforms.sweep_values(probabilities, values, seen.spec.class_names, kind)
    st.vega_lite_chart(sweep_chart(rows, kind, values, transforms.current_value(settings, kind), seen.spec.class_word),
                       width="stretch")


def show(seen: Looking) -> None:
    st.caption("Move, turn, scale, thicken or thin the strokes, add noise or black out a box: the network answers "
               "for the transformed image at once. Nothing here changes the model.")
    left, right = st.columns([5, 4])
    with left:
        settings = controls(seen.spec.side)
    with right:
        live(seen, settings)
    sweep(seen, settings)
    test_set_curves(seen)
    class_set_curves(seen)


# ---------------------------------------------------------------- on the test set and the class's handwriting


@st.cache_resource
def _measuring_lock() -> threading.Lock:
    """One measurement of curves at a time on the whole server (each takes both cores for seconds)."""
    return threading.Lock()


@st.cache_resource
def _class_curves() -> LruCache:
    """(model version, class set version) -> the class set's curves, shared by every session."""
    return LruCache(8)


def measured(seen: Looking) -> tuple[list[ComparedRun], dict]:
    """Each network's loaded model and its curves: kept ones read back, missing ones measured under the lock."""
    data = load_data_with_progress(seen.spec.name)
    if data is None:
        return [], {}
    images, labels = test_inputs(seen.spec.name, data.test_images), data.test_labels
    runs, curves, place = [], {}, progress_place()
    for name, path in transforms.curve_networks(seen.checkpoint, seen.spec.name, ACTIVE):
        model, card = (seen.model, cached_checkpoint(path)[1]) if name == ACTIVE else cached_checkpoint(path)
        runs.append(ComparedRun(name, model, card))
        curves[name] = transforms.read_robustness(path, card, min(transforms.ROBUSTNESS_IMAGES, len(images)))
        if curves[name] is None:
            with taking_turns(_measuring_lock(), "Another student is measuring curves: waiting for a turn...", place):
                place.progress(0.0, text=f"Measuring {name} on moved and turned test images (once per model)...")
                curves[name] = transforms.measured_robustness(
                    path, model, card, images, labels,
                    progress=lambda f, m, name=name: show_progress(place, f, f"{name}: {m}"))
                place.empty()
    return runs, curves


def curves_chart(curves: dict, labels: dict, kind: str, title: str, legend: bool) -> dict:
    """Accuracy over kind's CURVE_VALUES, one line per network; explicit domains, so Vega never sees no extent."""
    rows, values = transforms.curve_rows(curves, labels, kind), CURVE_VALUES[kind]
    return chart_spec(rows, {"type": "line", "point": True}, {
        "x": field(kind, "quantitative", title=title, scale={"domain": [values[0], values[-1]]}),
        "y": field("accuracy", "quantitative", scale={"domain": [0, 1]}, axis={"format": "%"}),
        "color": field("network", "nominal", scale=color_scale(list(labels.values())),
                       legend={"orient": "bottom", "columns": 1, "labelLimit": 0, "title": None} if legend else None),
        "tooltip": [field("network", "nominal"), field(kind, "quantitative"),
                    field("accuracy", "quantitative", format=".1%")]}, height=400 if legend else 220)  # key included (a row per network)


def draw_curves(curves: dict, labels: dict) -> None:
    """The shift chart over the rotation chart, full width: the networks' names are long, so the key (under the
    first, the same colours in both) gets the width rather than two narrow charts each cutting it."""
    st.vega_lite_chart(curves_chart(curves, labels, "shift", "moved right (px; negative: left)", legend=True),
                       width="stretch")
    st.vega_lite_chart(curves_chart(curves, labels, "rotate", "turned (degrees anticlockwise)", legend=False),
                       width="stretch")


def test_set_curves(seen: Looking) -> None:
    count = transforms.ROBUSTNESS_IMAGES
    st.subheader("On the test set: accuracy against shift and rotation")
    runs, curves = measured(seen)
    if not runs:
        return
    labels = run_labels(runs)
    st.caption(f"The first {count:,} test images, moved or turned: the active model"
               + (", beside the Compare page's networks after 1 epoch (bundled)." if len(runs) > 1 else "."))
    draw_curves(curves, labels)
    for sentence in transforms.robustness_sentences(runs, curves):
        st.markdown(sentence)
    if seen.spec.name != BUNDLED_COMPARISON_DATASET:
        st.caption(f"The Compare page's bundled networks learned MNIST, so on {seen.spec.title} only the active "
                   "model is measured.")


CLASS_CURVE_IMAGES = 500  # the class's drawings measured at most (evenly spread over the labels): ~1 s of both cores
REMEASURE_SECONDS = 60  # a changed class set is measured again at most once a minute per model


@dataclass(frozen=True)
class ClassCurves:
    """The class set's curves as last measured for one model version."""

    measured_at: float  # time.monotonic() when measured
    version: tuple  # cnn.classset.class_set_version then
    value: tuple | None  # (drawings measured, drawings saved, curves) or None when none were saved


def still_fresh(kept_curves: ClassCurves, version: tuple) -> bool:
    """Whether kept curves may be shown for the class set at version: the same set, or curves measured less than a
    minute ago (an empty set's "none yet" is never kept waiting: the first drawings are measured at once)."""
    return kept_curves.version == version or (
        kept_curves.value is not None and time.monotonic() - kept_curves.measured_at < REMEASURE_SECONDS)


def measured_class_curves(seen: Looking, folder: Path) -> ClassCurves:
    """The class set's curves for the active model: measured once, then again only when drawings were added or removed
    AND a minute has passed (every saved drawing changes the set: a class drawing while others look here must not
    keep the server measuring)."""
    key, version, place = (seen.version, str(folder)), class_set_version(folder), progress_place()
    found, kept_curves = _class_curves().get(key)
    if found and still_fresh(kept_curves, version):
        return kept_curves
    with taking_turns(_measuring_lock(), "Another student is measuring curves: waiting for a turn...", place):
        found, kept_curves = _class_curves().get(key)  # measured while this session waited
        if found and still_fresh(kept_curves, version):
            return kept_curves
        samples, value = load_class_set(folder), None
        if len(samples.labels):
            chosen = np.unique(np.linspace(0, len(samples.labels) - 1, CLASS_CURVE_IMAGES).round().astype(int))
            images, labels = to_float(torch.from_numpy(samples.images[chosen])), torch.from_numpy(samples.labels[chosen])
            place.progress(0.0, text="Measuring the class's drawings, moved and turned...")
            value = (len(labels), len(samples.labels), transforms.measure_curves(
                seen.model, images, labels, progress=lambda f, m: show_progress(place, f, m)))
            place.empty()
        kept_curves = ClassCurves(time.monotonic(), version, value)
        _class_curves().put(key, kept_curves)
    return kept_curves


def class_set_curves(seen: Looking) -> None:
    st.subheader("The class's handwriting, moved and turned")
    note = class_set_note(seen.spec.name)
    if note:
        st.caption(note)
        return
    folder = default_class_dir()
    shown = measured_class_curves(seen, folder)
    if shown.value is None:
        st.caption(f"No class drawings saved yet: on the Draw page, draw {seen.spec.item} and press its number to "
                   "add it; its curves appear here.")
        return
    measured, saved, curves = shown.value
    some = f"{measured:,} of " if measured < saved else ""
    st.caption(f"The active model on {some}the class's {saved:,} saved drawing{'' if saved == 1 else 's'}"
               + (" (spread evenly over the digits)." if measured < saved else ".")
               + (" Drawings saved since are measured within a minute." if shown.version != class_set_version(folder)
                  else ""))
    draw_curves({ACTIVE: curves}, {ACTIVE: "the class's handwriting"})
