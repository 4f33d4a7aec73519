"""Inside the network: what a unit wants to see. For a map of a conv layer, a hidden unit or a class output, the
input that excites it most (cnn.optvis.visualize_unit) beside the 9 test patches that excite it most, and the
pictures of all the class outputs ("what the network thinks a 6 looks like"). Cached per checkpoint version.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import streamlit as st
import torch

from cnn.features import enlarge
from cnn.optvis import (LayerMaxima, Patch, layer_maxima, layer_of, tiles_grid, top_patches, unit_activation,
                        visualisable_layers, visualize_unit)
from pages.picking import Looking, chosen_unit, clamped, kept_following, kept_number, test_inputs
from pages.picking import taking_turns as picking_turns
from pages.shared import PERSIST, load_data_with_progress, progress_place, show_progress

log = logging.getLogger("cnn.inside")  # the server's log: a class's heavy work, one line each
SEED = 0  # one picture per unit and checkpoint, the same for every student (and cached once for all)
PATCHES = 9


class NotYet(Exception):
    """No picture in the cache yet: the page renders one with a progress bar (an exception is never cached)."""


@st.cache_data(max_entries=512, show_spinner=False)
def remembered_picture(version: str, stage: str, channel: int, seed: int, _picture: np.ndarray | None = None):
    """(side, side) float32 picture of one unit of one checkpoint version: the one just rendered, else the cache's.

    Nothing here draws (a cached function's elements would be replayed), so the progress bar lives in picture()."""
    if _picture is None:
        raise NotYet
    return _picture


@st.cache_resource
def unit_work_lock() -> threading.Lock:
    """One per server: a unit's picture or a layer's pass over the test set is drawn by one session at a time, so
    a student who asks for many units at once (several tabs, forged messages) queues them instead of taking both
    cores from a class's training runs and drawings."""
    return threading.Lock()


def taking_turns(words: str, place=None):
    """Hold the server's unit lock, saying so (in place, when given) while another session's unit is being drawn."""
    return picking_turns(unit_work_lock(), f"Another picture is being drawn for the class; {words} is next...", place)


def remembered(version: str, stage: str, channel: int) -> np.ndarray | None:
    try:
        return remembered_picture(version, stage, channel, SEED)
    except NotYet:
        return None


def picture(seen: Looking, stage: str, channel: int, words: str, place) -> np.ndarray:
    """The unit's picture, from the cache at once, else rendered once per checkpoint (one at a time on the server:
    a session that waited finds the picture another drew for the same unit) with a progress bar."""
    made = remembered(seen.version, stage, channel)
    if made is not None:
        return made
    with taking_turns(words, place):
        made = remembered(seen.version, stage, channel)
        if made is not None:
            return made
        place.progress(0.0, text=f"Finding what {words} wants to see (once per model)...")
        started = time.perf_counter()
        made = visualize_unit(seen.model, stage, channel, seed=SEED, progress=lambda done: show_progress(
            place, done, f"Finding what {words} wants to see: {done:.0%}"))
        place.empty()
        log.info("Drew what unit %s of %s wants to see in %.1f s.", channel, stage, time.perf_counter() - started)
    return remembered_picture(seen.version, stage, channel, SEED, made)


@st.cache_resource(max_entries=4, show_spinner="Looking through the test images for this layer (once per model)...")
def strongest_in_layer(version: str, dataset: str, stage: str, _model, _images) -> LayerMaxima:
    """Every unit's strongest value in each test image ((N, side, side) uint8), for one layer of one checkpoint
    version: one pass over the test set per layer (a few seconds, taking its turn on the server), then every unit
    of the layer is a sort. Shared, never mutated."""
    with unit_work_lock():
        started = time.perf_counter()
        maxima = layer_maxima(_model, test_inputs(dataset, _images), stage)
        log.info("Looked through %d test images for %s's units in %.1f s.", len(_images), stage,
                 time.perf_counter() - started)
        return maxima


def strongest_patches(seen: Looking, stage: str, channel: int, images) -> list[Patch]:
    """top_patches over the whole test set ((N, side, side) uint8), from the layer's one pass."""
    maxima = strongest_in_layer(seen.version, seen.spec.name, stage, seen.model, images)
    return top_patches(seen.model, test_inputs(seen.spec.name, images), stage, channel, k=PATCHES, maxima=maxima)


def unit_words(stage: str, channel: int, spec) -> str:
    return f"the output for {spec.class_name(channel)}" if stage == "logits" else f"unit {channel} of {stage}"


def choose(seen: Looking) -> tuple[str, int]:
    """The layer and the unit, opening on the unit chosen on another view (the overview's click) when this network
    has it; both checked on the server, whatever the browser sent."""
    layers = visualisable_layers(seen.model)
    names = list(layers)
    unit = chosen_unit()
    opened = layer_of(seen.model, unit.get("stage", ""))
    context = (names, repr(sorted(unit.items())))  # another network, or another unit clicked: open on it again
    key = kept_following("wants_layer", context, opened or names[-1])
    if st.session_state[key] not in names:
        st.session_state[key] = opened or names[-1]
    words = {"logits": f"the {seen.spec.num_classes} class outputs"}
    stage = st.selectbox("Layer", names, key=key, persist_state=PERSIST,
                         format_func=lambda name: words.get(name, f"{name} ({layers[name]:,} units)"))
    stage = stage if stage in layers else names[-1]
    count = layers[stage]
    default = clamped(unit.get("channel", 0), 0, count - 1) if stage == opened else 0
    unit_key = kept_number("wants_unit", (stage, context), default, 0, count - 1)
    if stage == "logits":
        channel = st.selectbox(f"The output for the {seen.spec.class_word}", list(range(count)), key=unit_key,
                               format_func=seen.spec.class_name, persist_state=PERSIST)
    else:
        channel = st.number_input(f"Unit (0 to {count - 1})", 0, count - 1, key=unit_key, persist_state=PERSIST)
    return stage, clamped(channel, 0, count - 1)


def show_unit(seen: Looking, stage: str, channel: int, data) -> None:
    """The unit's picture and its value beside the test patches that excite it most."""
    words = unit_words(stage, channel, seen.spec)
    made = picture(seen, stage, channel, words, progress_place())
    value = float(unit_activation(seen.model, torch.from_numpy(made)[None, None], stage, channel)[0])
    patches = strongest_patches(seen, stage, channel, data.test_images)
    left, right = st.columns([2, 3])
    with left:
        st.image(enlarge((made * 255).round().astype(np.uint8), 224),
                 caption=f"What {words} wants to see: it reaches {value:.3f}")
    with right:
        grid = tiles_grid([patch.patch for patch in patches], [f"#{p.index}: {p.value:.2f}" for p in patches], 3)
        cropped = patches[0].patch.shape != tuple(data.test_images.shape[1:])  # a dense unit sees the whole image
        st.image(grid, caption=f"The {len(patches)} test images that excite it most, with the unit's value" + (
            ", each cropped to what the unit sees (its receptive field; grey: outside the image)" if cropped else
            " (it sees the whole image)"))
    st.write(f"The picture starts dark and is changed, step by step, in the direction that raises {words} (with a "
             f"little random shifting and smoothing, so it reads as shapes rather than noise). It reaches "
             f"{value:.3f}; the strongest of the {len(data.test_images):,} test images reaches {patches[0].value:.3f}.")


def show_classes(seen: Looking) -> None:
    """The pictures of every class output, rendered once per checkpoint (on request: about a second each)."""
    spec = seen.spec
    st.subheader(f"What the network thinks each {spec.class_word} looks like")
    classes, place = range(spec.num_classes), progress_place()
    try:
        pictures = [remembered_picture(seen.version, "logits", c, SEED) for c in classes]
    except NotYet:
        if not st.button(f"Draw all {spec.num_classes}", key="wants_all_classes"):
            st.caption(f"The input that excites each class output most, side by side: about a second per "
                       f"{spec.class_word}, once per model.")
            return
        for c in classes:
            picture(seen, "logits", c, unit_words("logits", c, spec), place)
        st.rerun()  # drawn again from the kept pictures: without the button, which this run has drawn above them
    st.image(tiles_grid(pictures, [spec.class_name(c) for c in classes], columns=5),
             caption=f"Each picture raises one class output as far as it can: the ink the network counts as "
                     f"evidence for that {spec.class_word}.")


def show(seen: Looking) -> None:
    data = load_data_with_progress(seen.spec.name)
    if data is None:
        return
    stage, channel = choose(seen)
    show_unit(seen, stage, channel, data)
    show_classes(seen)
