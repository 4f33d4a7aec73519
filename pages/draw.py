"""Draw: sketch a digit (or upload one) and see the active model read it, live, and why."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch
from streamlit_drawable_canvas import st_canvas

from cnn.classset import class_set_npz, default_class_dir, load_class_set, save_sample, score_class_set
from cnn.drawing import preprocess_steps
from cnn.explain import ATTRIBUTION_METHODS, attribution, describe, overlay, predict
from pages.shared import (active_model, probability_chart, require_app_navigation, send_to_feature_maps,
                          uploaded_digit)

CANVAS = 280
STROKE = 22  # ~2-3 MNIST pixels once the drawing is scaled into the 20x20 box


def show_prediction(steps: dict, model, source: str) -> None:
    tensor = torch.from_numpy(steps["centred"].astype(np.float32)[None, None] / 255.0)
    probabilities = predict(model, tensor)
    answer = describe(probabilities)
    cols = st.columns(2)  # two, not three: in the canvas's half of a 1024 px projector a third is ~75 px
    cols[0].image(steps["centred"], caption="what the network sees (28x28)", width=112, clamp=True)
    if answer["sure"]:
        cols[1].markdown(f"<div style='font-size:6rem;line-height:1'>{answer['digit']}</div>", unsafe_allow_html=True)
    cols[1].markdown(f"**{answer['text']}**")
    st.vega_lite_chart(spec=probability_chart(probabilities, height=150), width="stretch")
    method = st.radio("Why this answer?", list(ATTRIBUTION_METHODS), horizontal=True,
                      format_func=lambda m: m.replace("_", " ").title(), key=f"method-{source}")  # both may show
    heat = attribution(model, tensor, answer["digit"], method)
    st.image(overlay(steps["centred"] / 255.0, heat), width=224, caption=ATTRIBUTION_METHODS[method])
    with st.expander("How your drawing becomes a 28x28 MNIST-style image"):
        row = st.columns(4)  # each stage as wide as its column: a fixed 140 px overlapped its neighbours
        row[0].image(steps["grey"], caption="1. grey levels", width="stretch", clamp=True)
        row[1].image(steps["cropped"], caption="2. cropped to the ink", width="stretch", clamp=True)
        row[2].image(steps["scaled"], caption="3. longer side scaled to 20 px", width="stretch", clamp=True)
        row[3].image(steps["centred"], caption="4. centred by mass in 28x28", width="stretch", clamp=True)
    actions(steps["centred"], source)


def save_label(image: np.ndarray, key: str, source: str) -> None:
    meant = st.session_state.get(key)
    if meant is not None:  # None: the student took the choice back
        save_sample(default_class_dir(), image, meant)
        st.session_state.class_saved = f"Saved as a {meant} to the class's handwriting set."  # class_panel says it
        # A drawing's pills live in the canvas fragment, whose run would not redraw the class panel.
        st.session_state.class_panel_stale = source == "drawing"


def actions(image: np.ndarray, source: str) -> None:
    if st.button("Look inside: show this image on the Feature maps page", key=f"send-{source}"):
        send_to_feature_maps(image, f"your {source}")
    # One row of pills (one element, not ten buttons in ten columns); a new drawing gets a fresh, empty row.
    key = f"label-{source}-{hashlib.sha256(image.tobytes()).hexdigest()[:16]}"
    st.pills("Teach us your handwriting: what digit did you mean?", list(range(10)), key=key,
             on_change=save_label, args=(image, key, source))


@st.fragment
def canvas_panel(model) -> None:
    """The canvas in a fragment: a stroke reruns only this part of the page."""
    if st.session_state.pop("class_panel_stale", False):
        st.rerun(scope="app")
    left, right = st.columns(2, gap="medium")  # half the page: the 280 px canvas fits even on a 1024 px projector
    with left:
        cleared = st.button("Clear")
        if cleared:
            st.session_state.canvas_clears = st.session_state.get("canvas_clears", 0) + 1
        # Clear sends the canvas a new, empty starting drawing instead of mounting a new canvas under a new key:
        # a remounted canvas first appears below the old one and jumps up when the run ends, and on a busy
        # class server a student's stroke landed in the gap (the load test found it).
        result = st_canvas(stroke_width=STROKE, stroke_color="#FFFFFF", background_color="#000000",
                           height=CANVAS, width=CANVAS, drawing_mode="freedraw", return_image_data=True,
                           initial_drawing={"objects": [], "clears": st.session_state.get("canvas_clears", 0)},
                           key="canvas")
    drawing = result.image_bytes
    if cleared:  # until the browser sends the emptied canvas, the value is still the old drawing
        st.session_state.canvas_stale = drawing
    stale = drawing is not None and drawing == st.session_state.get("canvas_stale")
    steps = preprocess_steps(result.image_data) if drawing is not None and not stale else None
    with right:
        if steps is None:
            st.info("Draw a digit in the black square: one digit, as large as the square allows.")
            return
        show_prediction(steps, model, "drawing")


def upload_panel(model) -> None:
    uploaded = uploaded_digit("Or upload a photo of one digit (PNG or JPEG, up to 2 MB)")
    if uploaded is not None:
        show_prediction(uploaded[0], model, "upload")


def class_panel(model) -> None:
    if "class_saved" in st.session_state:
        st.toast(st.session_state.pop("class_saved"))
    samples = load_class_set(default_class_dir())
    score = score_class_set(model, samples)
    if score["n"] == 0:
        st.caption("No class drawings saved yet: draw a digit, then press its number.")
        return
    st.metric("Active model on the class's drawings", f"{score['accuracy']:.0%}", help=f"{score['n']} drawings")
    st.caption("Drawings per digit: " + ", ".join(f"{d}: {c}" for d, c in enumerate(score["counts"])))
    mistakes = score["mistakes"][:16]
    if mistakes:
        st.markdown("**Its mistakes** (meant -> read as)")
        cols = st.columns(8)
        for i, (index, label, predicted) in enumerate(mistakes):
            cols[i % 8].image(samples.images[index], caption=f"{label} -> {predicted}", width=70)
    st.download_button("Download the class set (.npz)", class_set_npz(samples), file_name="class-handwriting.npz")


require_app_navigation()
st.title("Draw a digit")
model, card, run = active_model()
st.caption(f"Read by the active model: {'the bundled ARTICLE model' if run == 'bundled' else run} "
           f"({100 * card.get('accuracy', 0):.2f}% on MNIST's test set).")
canvas_panel(model)
upload_panel(model)
st.subheader("The class's handwriting")
class_panel(model)
