"""Draw: sketch a digit (or upload one) and see the active model read it, live, and why."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch
from streamlit_drawable_canvas import out as canvas_component

from cnn.classset import ClassSetError, class_set_npz, default_class_dir, save_sample, scored_class_set
from cnn.drawing import CanvasError, drawing_problem, preprocess_steps, read_canvas, stroke_problem
from cnn.explain import ATTRIBUTION_METHODS, attribution, describe, overlay, predict
from pages.shared import (active_model, checkpoint_for, probability_chart, require_app_navigation,
                          send_to_feature_maps, uploaded_digit)

CANVAS = 280
STROKE = 22  # ~2-3 MNIST pixels once the drawing is scaled into the 20x20 box
ALWAYS_A_DIGIT = ("The network must always answer with one of 0-9, even for a scribble: it has no \"not a digit\" "
                  "answer, so this page checks the ink first. And \"sure\" is not \"right\": a high percentage "
                  "means the network has no doubt, not that it read your digit correctly.")


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
    st.caption(ALWAYS_A_DIGIT)
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
        saved = st.session_state.get("class_samples_saved", 0)
        try:
            save_sample(default_class_dir(), image, meant, saved_by_session=saved)
        except ClassSetError as exc:
            st.session_state.class_saved = str(exc)  # class_panel says it
        else:
            st.session_state.class_samples_saved = saved + 1
            st.session_state.class_saved = f"Saved as a {meant} to the class's handwriting set."
        # A drawing's pills live in the canvas fragment, whose run would not redraw the class panel.
        st.session_state.class_panel_stale = source == "drawing"


def actions(image: np.ndarray, source: str) -> None:
    if st.button("Look inside: show this image on the Feature maps page", key=f"send-{source}"):
        send_to_feature_maps(image, f"your {source}")
    # One row of pills (one element, not ten buttons in ten columns); a new drawing gets a fresh, empty row.
    key = f"label-{source}-{hashlib.sha256(image.tobytes()).hexdigest()[:16]}"
    st.pills("Teach us your handwriting: what digit did you mean?", list(range(10)), key=key,
             on_change=save_label, args=(image, key, source))


def drawing_canvas(clears: int):
    """streamlit-drawable-canvas's component, called as its st_canvas calls it (same front end), returning the raw
    "drawing" value the browser sent: {"raw": Fabric JSON, "data": PNG data URL}, or whatever a forger sent.

    st_canvas would decode that PNG whatever its size (an 8000x8000 one cost the server 1.6 GB) and fails on
    a value of another shape; cnn.drawing.read_canvas checks it first.
    """
    # Clear sends the canvas a new, empty starting drawing instead of mounting a new canvas under a new key:
    # a remounted canvas first appears below the old one and jumps up when the run ends, and on a busy
    # class server a student's stroke landed in the gap (the load test found it).
    start = {"objects": [], "clears": clears, "background": "#000000"}
    data = {"fillColor": "#eee", "strokeWidth": STROKE, "strokeColor": "#FFFFFF", "backgroundColor": "#000000",
            "backgroundImageURL": None, "realtimeUpdateStreamlit": True, "canvasWidth": CANVAS,
            "canvasHeight": CANVAS, "drawingMode": "freedraw", "initialDrawing": start, "displayRadius": 3,
            "returnImageData": True, "disabled": False, "backgroundImageFit": "stretch", "maxDisplayHeight": None,
            "fontSize": 20, "label": ""}
    result = canvas_component(data=data, key="canvas", default={"drawing": {"raw": start, "data": None},
                                                                "backgroundFit": None},
                              on_drawing_change=lambda: None, on_backgroundFit_change=lambda: None,
                              width="content", height="content")
    return result.get("drawing")


def read_drawing(value) -> tuple[dict | None, str | None]:
    """(preprocess_steps, None) for ink that could be a digit; (None, sentence) for a refused value or shape;
    (None, None) for an empty canvas."""
    try:
        rgba = read_canvas(value, CANVAS)
    except CanvasError as exc:
        return None, str(exc)
    if rgba is None:
        return None, None
    problem = drawing_problem(rgba) or stroke_problem(value.get("raw") if isinstance(value, dict) else None)
    return (None, problem) if problem else (preprocess_steps(rgba), None)


# The canvas component keeps its toolbar (undo, redo, reset) transparent yet clickable over the top-right 30 px
# of the canvas, and moves it up only ~0.2 s after the pointer starts hovering; a finger never hovers. A stroke
# that began there landed on the toolbar and was lost (a mouse stroke drawn at once: 8 of 8, a finger: every
# time). The page's CSS cannot reach into the component's shadow root, so this script adds one rule to each
# component's shadow root as it is created: the toolbar sits just above the canvas (its own height, ~2.9rem).
TOOLBAR_ABOVE_CANVAS = """<script>
(() => {
  if (window.cnnToolbarAboveCanvas) return;
  window.cnnToolbarAboveCanvas = true;
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(".dc-toolbar { top: -3rem !important; }");
  const adopt = root => {
    if (root && !root.adoptedStyleSheets.includes(sheet)) root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
  };
  const attachShadow = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {  // before the component draws anything in it
    const root = attachShadow.call(this, init);
    if (this.dataset.testid === "stBidiComponentIsolated") adopt(root);
    return root;
  };
  document.querySelectorAll("[data-testid=stBidiComponentIsolated]").forEach(host => adopt(host.shadowRoot));
})();
</script>"""


@st.fragment
def canvas_panel(model) -> None:
    """The canvas in a fragment: a stroke reruns only this part of the page."""
    if st.session_state.pop("class_panel_stale", False):
        st.rerun(scope="app")
    st.html(TOOLBAR_ABOVE_CANVAS, unsafe_allow_javascript=True)  # before the canvas, so it runs first
    left, right = st.columns(2, gap="medium")  # half the page: the 280 px canvas fits even on a 1024 px projector
    with left:
        cleared = st.button("Clear")
        if cleared:
            st.session_state.canvas_clears = st.session_state.get("canvas_clears", 0) + 1
        value = drawing_canvas(st.session_state.get("canvas_clears", 0))
    sent = value.get("data") if isinstance(value, dict) else None
    sent = sent if isinstance(sent, str) else None
    if cleared:  # until the browser sends the emptied canvas, the value is still the old drawing
        st.session_state.canvas_stale = sent
    stale = sent is not None and sent == st.session_state.get("canvas_stale")
    steps, problem = (None, None) if stale else read_drawing(value)
    with right:
        if problem:
            st.warning(problem)
            st.caption(ALWAYS_A_DIGIT)
        elif steps is None:
            st.info("Draw a digit in the black square: one digit, as large as the square allows.")
        else:
            show_prediction(steps, model, "drawing")


def upload_panel(model) -> None:
    uploaded = uploaded_digit("Or upload a photo of one digit (PNG or JPEG, up to 2 MB)")
    if uploaded is not None:
        show_prediction(uploaded[0], model, "upload")


def class_panel(model, run: str) -> None:
    if "class_saved" in st.session_state:
        st.toast(st.session_state.pop("class_saved"))
    path = checkpoint_for(run)  # read and scored again only when a drawing is saved or removed, or the model changes
    samples, score = scored_class_set(default_class_dir(), model, (str(path), path.stat().st_mtime))
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
class_panel(model, run)
