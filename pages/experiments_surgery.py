"""Experiments: filter surgery. Set a first-layer kernel by hand (or a classic one: Sobel, blur, ...), remove filters
and hidden units, and see the changed maps, the new answer and the accuracy on the test set beside the original's;
then which filters matter (the accuracy with each removed alone). Every edit is made on a copy (cnn.surgery): the
edits live in this session's state as a small checked dict, never on the shared model.
"""
from __future__ import annotations

import threading

import numpy as np
import streamlit as st

from cnn.experiments import quick_accuracy
from cnn.features import kernels as trained_kernels
from cnn.features import maps_grid
from cnn.surgery import (CLASSIC_KERNELS, ROW_CHARACTERS, ablatable_layers, ablation_sweep, checked_edits,
                         classic_kernel, compare_image, edited_map_pairs, edited_model, editable_kernels, edits_key,
                         kernel_rows, network_shape, parse_kernel, part_word, removed_instead, result_sentence,
                         sweep_rows, sweep_sentence)
from pages.inside_wants import NotYet
from pages.picking import Looking, clamped, kept_choice, kept_following, kept_number, taking_turns, test_inputs
from pages.shared import PERSIST, chart_spec, field, kept, load_data_with_progress, probability_chart, progress_place, \
    show_progress

SWEEP_IMAGES = 2000  # the sweep's test images: a few seconds for conv1's 32 filters
SHOWN_BARS = 128  # a sweep of a larger layer (FC 625) shows the removals that hurt most
AS_TRAINED = "as trained"
AS_APPLIED = "as applied"  # the kernel applied to the chosen filter (offered once there is one)
SHAPE_KEY = "surgery_shape"  # the network shape (cnn.surgery.network_shape) the session's edits were made for
ABLATE_PREFIX = "surgery_ablate."
ENLARGED = 4  # hand-set filters whose maps are shown enlarged, original beside edited
LABELLED_BARS = 64  # up to this many bars, every filter's number stands under its bar
WAITING = "Another network is being measured for the class; yours is next..."


@st.cache_resource
def surgery_lock() -> threading.Lock:
    """One per server: measuring an edited network or sweeping a layer (seconds of both cores) takes turns."""
    return threading.Lock()


@st.cache_data(max_entries=64, show_spinner=False)
def remembered_accuracy(version: str, key: tuple, _accuracy: float | None = None) -> float:
    """The test accuracy of one edit (key: cnn.surgery.edits_key) of one checkpoint version: the one just measured,
    else the cache's. Nothing here draws (a cached function's elements would be replayed)."""
    if _accuracy is None:
        raise NotYet
    return _accuracy


@st.cache_resource(max_entries=256, show_spinner=False)  # a few floats each: 4 epochs x 4 layers filled 16
def remembered_sweep(version: str, stage: str, _sweep: tuple | None = None) -> tuple:
    """(accuracies (C,), the original's accuracy) of one layer's sweep of one checkpoint version; never mutated."""
    if _sweep is None:
        raise NotYet
    return _sweep


def test_accuracy(seen: Looking, model, key: tuple, data) -> float:
    """quick_accuracy of model on the whole test set, once per (checkpoint version, edits), one session at a time."""
    try:
        return remembered_accuracy(seen.version, key)
    except NotYet:
        pass
    with taking_turns(surgery_lock(), WAITING):
        try:
            return remembered_accuracy(seen.version, key)  # measured while this session waited
        except NotYet:
            with st.spinner(f"Measuring on the {len(data.test_labels):,} test images..."):
                accuracy = quick_accuracy(model, test_inputs(seen.spec.name, data.test_images), data.test_labels)
                # kept before the spinner closes: a rerun interrupting its exit must not throw the work away
                return remembered_accuracy(seen.version, key, accuracy)


def kept_edits(seen: Looking, layers: dict) -> tuple[str, dict]:
    """(key of the hand-set kernels, {stage: key of its removed filters}), their values checked against the model
    before any widget shows them: forged values are cleared with a sentence. The edits follow the network's shape,
    not its checkpoint: another epoch of the same network keeps them; another network clears them, saying so."""
    shape = network_shape(seen.model)
    if st.session_state.get(SHAPE_KEY, shape) != shape and held_edits():
        clear_all_edits()
        st.info("Your edits were made for another network, with other layers, so they were cleared.")
    st.session_state[SHAPE_KEY] = shape
    kernels_key = kept_following("surgery_kernels", shape, {})
    ablate_keys = {stage: kept_following(f"{ABLATE_PREFIX}{stage}", shape, []) for stage in layers}
    try:
        checked_edits(seen.model, *chosen_edits(kernels_key, ablate_keys))
    except ValueError as exc:
        st.warning(f"{exc} The edits were cleared.")
        reset(kernels_key, ablate_keys)
    return kernels_key, ablate_keys


def held_edits() -> bool:
    """Whether this session holds any edit, of whatever network."""
    prefix = kept(ABLATE_PREFIX)
    return bool(st.session_state.get(kept("surgery_kernels"))) or any(
        str(key).startswith(prefix) and st.session_state[key] for key in list(st.session_state.keys()))


def clear_all_edits() -> None:
    """Every edit of the session, whatever network's layers it names."""
    prefix = kept(ABLATE_PREFIX)
    st.session_state[kept("surgery_kernels")] = {}
    for key in [key for key in list(st.session_state.keys()) if str(key).startswith(prefix)]:
        st.session_state[key] = []


def chosen_edits(kernels_key: str, ablate_keys: dict) -> tuple:
    """(kernels, ablate) as this session's state holds them, unchecked."""
    return st.session_state[kernels_key], {stage: st.session_state[key] for stage, key in ablate_keys.items()}


def reset(kernels_key: str, ablate_keys: dict, row_keys: tuple = ()) -> None:
    """Reset's callback: no edits, "Start from" as trained, and the rows back to the trained kernel's."""
    st.session_state[kernels_key] = {}
    for key in ablate_keys.values():
        st.session_state[key] = []
    st.session_state[kept("surgery_source")] = AS_TRAINED
    for key in row_keys:  # drawn again from the trained kernel (kept_following's default)
        st.session_state.pop(key, None)


def apply_kernel(kernels_key: str, stage: str, k: int, side: int, row_keys: list[str]) -> None:
    """Apply's callback: the rows' numbers become filter k's kernel, shown from now on "as applied". Rows that do
    not parse apply nothing (the editor says why; a browser can send anything)."""
    try:
        kernel = parse_kernel([st.session_state.get(key) for key in row_keys], side)
    except ValueError:
        return
    st.session_state[kernels_key] = {**st.session_state[kernels_key], (stage, k): kernel.tolist()}
    st.session_state[kept("surgery_source")] = AS_APPLIED


def kernel_editor(seen: Looking, editable: dict, kernels_key: str, ablate_keys: dict) -> None:
    """Choose a filter of the first layer and type its kxk numbers, a row per line, by hand or from a classic
    kernel; Apply, Reset."""
    stage = next(iter(editable))
    count, side = editable[stage]
    shape = network_shape(seen.model)
    filter_key = kept_number("surgery_filter", (shape, stage), 0, 0, count - 1)
    k = clamped(st.number_input(f"Filter of {stage} (0 to {count - 1})", 0, count - 1, key=filter_key,
                                persist_state=PERSIST), 0, count - 1)
    applied = st.session_state[kernels_key].get((stage, k))
    sources = [AS_TRAINED, *([AS_APPLIED] if applied is not None else []), *CLASSIC_KERNELS]
    source = st.selectbox("Start from", sources, key=kept_choice("surgery_source", sources, AS_TRAINED),
                          persist_state=PERSIST)
    start = (classic_kernel(source, side) if source in CLASSIC_KERNELS else
             np.asarray(applied) if source == AS_APPLIED and applied is not None else
             trained_kernels(seen.model, stage)[k])
    if source in CLASSIC_KERNELS:
        st.caption(CLASSIC_KERNELS[source].finds)
    elif source == AS_APPLIED:
        st.caption(f"The kernel applied to filter {k}.")
    # another filter or source starts the rows again; "as trained" follows the epoch too (its numbers differ)
    context = (shape, stage, k, source, seen.version if source == AS_TRAINED else None)
    row_keys = []
    for row, text in enumerate(kernel_rows(start)):
        key = kept_following(f"surgery_row.{row}", context, text)
        if not isinstance(st.session_state[key], str):  # forged: a text input holds text
            st.session_state[key] = text
        st.text_input(f"Row {row + 1}", key=key, max_chars=ROW_CHARACTERS, persist_state=PERSIST)
        row_keys.append(key)
    try:
        parse_kernel([st.session_state[key] for key in row_keys], side)
        problem = False
    except ValueError as exc:
        st.warning(str(exc))
        problem = True
    apply, clear = st.columns(2)
    apply.button(f"Apply to filter {k}", key="surgery_apply", on_click=apply_kernel, disabled=problem,
                 args=(kernels_key, stage, k, side, row_keys))
    clear.button("Reset all edits", key="surgery_reset", on_click=reset, args=(kernels_key, ablate_keys, row_keys))


def ablation_choice(model, layers: dict, ablate_keys: dict) -> None:
    """One multiselect per layer whose filters or units can be removed."""
    for stage, count in layers.items():
        st.multiselect(f"Remove {part_word(model, stage)}s of {stage} ({count})", list(range(count)),
                       key=ablate_keys[stage], persist_state=PERSIST, placeholder="none removed")


def show_image(seen: Looking, edited, kernels: dict) -> None:
    """The first layer's maps and the probabilities for the chosen image, original beside edited; the maps of the
    filters set by hand (up to ENLARGED) enlarged, original beside edited."""
    result = compare_image(seen.model, edited, seen.x)
    spec = seen.spec
    if result.maps is not None:
        left, right = st.columns(2)
        for column, maps, words in ((left, result.maps, "original"), (right, result.edited_maps, "edited")):
            grid = maps_grid(maps, per="map", columns=8, signed=True, numbered=True)[0]
            column.image(grid, caption=f"{words.capitalize()} first-layer maps before ReLU (blue < 0 < orange)")
        show_enlarged(edited_map_pairs(seen.model, result, kernels, limit=ENLARGED))
    left, right = st.columns(2)
    for column, probabilities, words in ((left, result.probabilities, "Original"),
                                         (right, result.edited_probabilities, "Edited")):
        best = int(np.argmax(probabilities))
        column.markdown(f"**{words}:** {spec.class_name(best)} ({probabilities[best]:.1%})")
        column.vega_lite_chart(spec=probability_chart(probabilities, 160, spec.class_names, spec.class_word),
                               width="stretch")


def show_enlarged(pairs: list) -> None:
    """Each hand-set filter's map, original beside edited on one colour scale: two pairs to a row."""
    for first in range(0, len(pairs), 2):
        columns = st.columns(4)
        for i, (k, before, after) in enumerate(pairs[first:first + 2]):
            columns[2 * i].image(before, caption=f"map {k}: original", width="stretch")
            columns[2 * i + 1].image(after, caption=f"map {k}: edited", width="stretch")
    if pairs:
        st.caption("The maps of the filters set by hand, each pair on one colour scale: an edited map far brighter "
                   "than its original is what the next layer now reads.")


def show_accuracy(seen: Looking, edited, kernels: dict, ablate: dict, data) -> None:
    original = test_accuracy(seen, seen.model, edits_key({}, {}), data)
    accuracy = test_accuracy(seen, edited, edits_key(kernels, ablate), data) if kernels or ablate else original
    removed = None
    if kernels and accuracy < original - 0.0005:  # a costly hand-set kernel: is removing the filter gentler?
        instead = removed_instead(kernels, ablate)
        removed = test_accuracy(seen, edited_model(seen.model, ablate=instead), edits_key({}, instead), data)
    count = len(data.test_labels)
    left, right = st.columns(2)
    left.metric(f"Original, {count:,} test images", f"{original:.2%}")
    right.metric(f"Edited, {count:,} test images", f"{accuracy:.2%}",
                 delta=f"{100 * (accuracy - original):+.2f} points" if kernels or ablate else None)
    st.write(result_sentence(kernels, ablate, original, accuracy, seen.model, removed))


def sweep_chart(rows: list[dict], original: float, stage: str, part: str = "filter") -> dict:
    """Bars of the accuracy with each filter removed, the most harmful first, and a rule at the original's."""
    shown = rows[:SHOWN_BARS]
    # every filter's number under its bar up to LABELLED_BARS (Vega drops overlapping labels otherwise)
    axis = ({"labelOverlap": False, "labelAngle": 0 if len(shown) <= 32 else -90,
             "labelFontSize": 10 if len(shown) <= 32 else 8} if len(shown) <= LABELLED_BARS else {})
    low = min(min(r["accuracy"] for r in shown), original)
    scale = {"domain": [max(0.0, low - 0.01), min(1.0, original + 0.005)], "clamp": True}
    bars = chart_spec(shown, "bar", {
        "x": field("filter", "ordinal", sort=None, title=f"{stage}: the {part} removed", axis=axis),
        "y": field("accuracy", "quantitative", scale=scale, axis={"format": ".1%"}),
        "tooltip": [field("filter", "ordinal"), field("accuracy", "quantitative", format=".2%"),
                    field("drop", "quantitative", title="drop (points)")]})
    rule = chart_spec([{"accuracy": original}], {"type": "rule", "color": "#d62728"},
                      {"y": field("accuracy", "quantitative", scale=scale)})
    return {"layer": [bars, rule], "height": 220}


def show_sweep(seen: Looking, layers: dict, data) -> None:
    """Which filters matter: a layer, the sweep on request (cached per checkpoint version and layer), its chart."""
    st.subheader("Which filters matter")
    names = list(layers)
    stage = st.selectbox("Layer", names, key=kept_choice("surgery_sweep_layer", names, names[0]), persist_state=PERSIST)
    stage = stage if stage in layers else names[0]
    count = min(SWEEP_IMAGES, len(data.test_labels))
    place = progress_place()
    try:
        accuracies, original = remembered_sweep(seen.version, stage)
    except NotYet:
        words = f"{layers[stage]} {part_word(seen.model, stage)}s of {stage}"
        if not st.button(f"Remove each of the {words} in turn", key="surgery_sweep"):
            st.caption(f"The accuracy on the first {count:,} test images with each one removed alone, once per model.")
            return
        run_sweep(seen, stage, data, count, place)
        st.rerun()  # drawn again from the kept sweep: without the button, which this run has drawn above the bar
    rows = sweep_rows(accuracies, original)
    st.vega_lite_chart(spec=sweep_chart(rows, original, stage, part_word(seen.model, stage)), width="stretch")
    more = f" (the {SHOWN_BARS} that hurt most of {len(rows)})" if len(rows) > SHOWN_BARS else ""
    st.caption(f"The original network's accuracy (your edits left out) on the first {count:,} test images with one "
               f"removed{more}. The red line: nothing removed, {original:.1%} on these {count:,}"
               + (f" (not the {len(data.test_labels):,} measured above)." if count < len(data.test_labels) else "."))
    st.write(sweep_sentence(rows, stage, original, part_word(seen.model, stage)))


def run_sweep(seen: Looking, stage: str, data, count: int, place) -> None:
    """Measure stage's sweep on the first count test images and keep it (remembered_sweep), the bar in place; one
    sweep at a time on the server, and none when the session waited while another kept this one."""
    with taking_turns(surgery_lock(), WAITING, place):
        try:
            remembered_sweep(seen.version, stage)
            return  # measured while this session waited its turn
        except NotYet:
            pass
        images, labels = test_inputs(seen.spec.name, data.test_images)[:count], data.test_labels[:count]
        place.progress(0.0, text=f"Removing each filter of {stage} in turn...")
        accuracies = ablation_sweep(seen.model, images, labels, stage, progress=lambda done: show_progress(
            place, done, f"Removing each filter of {stage} in turn: {done:.0%}"))
        original = quick_accuracy(seen.model, images, labels)
        remembered_sweep(seen.version, stage, (accuracies, original))  # kept before anything can interrupt
        place.empty()


def show(seen: Looking) -> None:
    st.subheader("Filter surgery")
    data = load_data_with_progress(seen.spec.name)
    if data is None:
        return
    editable, layers = editable_kernels(seen.model), ablatable_layers(seen.model)
    if not layers:
        st.info("This network has no filters and no hidden units: each score weighs the pixels directly, so there "
                "is nothing to remove. Choose a network with layers on the Train page (the article's CNN has three).")
        return
    kernels_key, ablate_keys = kept_edits(seen, layers)
    left, right = st.columns(2)
    with left:
        if editable:
            kernel_editor(seen, editable, kernels_key, ablate_keys)
        else:
            st.info("This network has no convolution that reads the image, so there is no kernel to set by hand; "
                    "its hidden units can be removed.")
    with right:
        ablation_choice(seen.model, layers, ablate_keys)
    try:
        kernels, ablate = checked_edits(seen.model, *chosen_edits(kernels_key, ablate_keys))
    except ValueError as exc:
        st.warning(str(exc))
        kernels, ablate = {}, {}
    edited = edited_model(seen.model, kernels, ablate)
    show_image(seen, edited, kernels)
    show_accuracy(seen, edited, kernels, ablate, data)
    show_sweep(seen, layers, data)
