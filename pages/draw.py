"""Draw: sketch a digit or a piece of clothing, as the active model's dataset asks (or upload one), and see the
model read it, live, and why."""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import time

import numpy as np
import streamlit as st
import torch
from streamlit_drawable_canvas import out as canvas_component

from cnn.classset import (ClassSetError, class_set_note, class_set_npz, default_class_dir, drawing_hash,
                          label_drawing, scored_class_set, undo_last_save)
from cnn.data import DatasetSpec
from cnn.drawing import (CanvasError, canvas_hint, drawing_problem, preprocess_steps, read_canvas, step_captions,
                         stroke_problem, to_grey)
from cnn.explain import (METHOD_NAMES, always_an_answer, answer_html, attribution_methods, describe, explain,
                         model_spec, names_are_numbers, overlay)
from cnn.novelty import cached_novelty_model, checked_prediction, no_check_sentence
from pages.shared import (PERSIST, answer_tail_slot, checkpoint_for, class_settings_changed, data_holder, is_teacher,
                          kept, note_class_settings, probability_chart, resolved_model, send_to_feature_maps,
                          uploaded_digit)

CANVAS = 280
STROKE = 22  # ~2-3 MNIST pixels once the drawing is scaled into the 20x20 box
ANSWER_FRAME_S = 1 / 60  # the rest of a stroke's reading waits one frame (show_reading)
STEPS_PER_ROW = 2  # preprocessing steps side by side under the canvas: ~130 px each in its column of a 1024 px page
# The canvas's column and the answer's: at 1024x768 with the sidebar open the main block is 564 px, and two equal
# columns gave 266 px each, which hid the right 14 px of the 280 px square (walk). 0.54 gives the canvas 287 px.
READING_COLUMNS = (0.54, 0.46)


def read_image(steps: dict, model) -> tuple[np.ndarray, str | None]:
    """(the model's probabilities, why the image is unlike any of its dataset as a sentence, or None), from one forward
    pass: the network's own features against its training images'.

    The check is fitted once per model in the background (cnn/novelty.py): until it is ready, no refusal.
    """
    data = data_holder(model_spec(model).name).load()
    return checked_prediction(model, steps["centred"], data, wait=False)


def start_refusal_fit(model) -> None:
    """Start fitting refusal's check for model in the background, unless it is fitted or being fitted (never waits).

    A dataset that could not be loaded is not tried again here, on every opening of the page (offline, a try can
    take seconds): a stroke's check tries, as before."""
    holder = data_holder(model_spec(model).name)
    data = None if holder.error else holder.load()
    if data is not None:
        cached_novelty_model(model, data, wait=False)


def show_refusal(problem: str, spec: DatasetSpec) -> None:
    st.warning(problem)
    st.caption(always_an_answer(spec))


def show_answer(steps: dict, probabilities: np.ndarray, model, then=None) -> dict:
    """The answer (read_image's probabilities, in words, with the image the network read); returns describe()'s
    answer. One element, the first this function sends: the student waits for nothing else
    (scripts/stroke_latency.py).

    then: a function called right after the answer's element is sent (show_reading's draw_input)."""
    spec = model_spec(model)
    answer = describe(probabilities, spec)
    st.markdown(answer_html(steps["centred"], answer, spec), unsafe_allow_html=True)
    if then is not None:
        then()
    return answer


def show_why(steps: dict, probabilities: np.ndarray, model, source: str, answer: dict) -> None:
    """Under the answer: the probabilities of the model's classes, and why (the attribution the student chose)."""
    spec = model_spec(model)
    st.vega_lite_chart(spec=probability_chart(probabilities, height=150, class_names=spec.class_names,
                                              class_word=spec.class_word), width="stretch")
    st.caption(always_an_answer(spec))
    unchecked = no_check_sentence(model)
    if unchecked:  # the softmax baseline: say outright that nothing checks the drawing first
        st.caption(unchecked)
    tensor = torch.from_numpy(steps["centred"].astype(np.float32)[None, None] / 255.0)
    shown = explain(model, tensor, answer["digit"], method_choice(model, source))
    if shown["empty"]:
        st.info(shown["empty"])  # a blank overlay would look like "nothing mattered"
    else:
        st.image(overlay(steps["centred"] / 255.0, shown["map"]), width=224, caption=shown["caption"])
    if shown["note"]:
        st.caption(shown["note"])


def method_choice(model, source: str) -> str:
    """The attribution method the student chose for this source, among those that apply to the model."""
    methods = attribution_methods(model)
    key = kept(f"draw_method_{source}")  # one per source: a drawing and an upload may be explained side by side
    if st.session_state.get(key) not in methods:  # first visit, a model without conv3, or a forged value
        st.session_state[key] = methods[0]
    return st.radio("Why this answer?", methods, horizontal=True, format_func=METHOD_NAMES.get, key=key,
                    persist_state=PERSIST)


def preprocessing_steps(steps: dict, source: str, spec: DatasetSpec) -> None:
    """Each stage of the pipeline (cnn.drawing's steps, in order, captioned for spec's recipe), STEPS_PER_ROW to a row."""
    captions = step_captions(spec)
    with st.expander(f"How your {'photo' if source == 'upload' else 'drawing'} becomes a 28x28 {spec.title}-style image"):
        items = list(steps.items())
        for first in range(0, len(items), STEPS_PER_ROW):
            row = st.columns(STEPS_PER_ROW)
            for column, (number, (key, image)) in zip(row, enumerate(items[first:first + STEPS_PER_ROW], first + 1)):
                column.image(image, caption=f"{number}. {captions.get(key, key)}", width="stretch", clamp=True)


def save_label(image: np.ndarray, key: str, source: str) -> None:
    """The label pills' callback: save, replace or take back this session's sample of the drawing."""
    saves = st.session_state.setdefault("class_saves", {})
    try:
        said = label_drawing(default_class_dir(), image, st.session_state.get(key), saves)
    except ClassSetError as exc:
        said = str(exc)
        st.session_state[key] = None  # nothing was saved: the pill must not look chosen
    if said:
        st.session_state.class_saved = said  # class_panel says it
    st.session_state.class_label_keys = {**st.session_state.get("class_label_keys", {}), drawing_hash(image): key}
    # A drawing's pills live in the canvas fragment, whose run would not redraw the class panel.
    st.session_state.class_panel_stale = source == "drawing"


def undo_save() -> None:
    """The Undo button's callback: take back this session's last sample and un-choose its pill."""
    saves = st.session_state.get("class_saves", {})
    if saves:
        pill = st.session_state.get("class_label_keys", {}).get(next(reversed(saves)))
        st.session_state.class_saved = undo_last_save(default_class_dir(), saves)
        if pill:
            st.session_state[pill] = None


def actions(image: np.ndarray, source: str, spec: DatasetSpec) -> None:
    """Under the answer, across the page: send to Feature maps, Inside the network or Experiments, and the label row (ten pills in view at 1024 px)
    where the class set is for the model's dataset."""
    feature_maps, inside = st.columns(2)
    if feature_maps.button("Look inside: its feature maps", key=f"send-{source}"):
        send_to_feature_maps(image, f"your {source}")
    if inside.button("Follow it through the whole network", key=f"send-inside-{source}"):
        send_to_feature_maps(image, f"your {source}", page="pages/inside.py")
    # A row of its own: three buttons in the canvas's half of a projector cut every label.
    if st.button("Experiment on it: move it, turn it, fool the network", key=f"send-experiments-{source}"):
        st.session_state[kept("experiment_view")] = "transform"  # what the button promises, not the first experiment
        send_to_feature_maps(image, f"your {source}", page="pages/experiments.py")
    if class_set_note(spec.name):
        return  # the class set holds digits: class_panel says why there are no label pills
    # One row of pills (one element, not ten buttons in ten columns); a new drawing gets a fresh, empty row.
    key = f"label-{source}-{drawing_hash(image)[:16]}"
    st.pills("Teach us your handwriting: what digit did you mean? (press it again to take it back)", list(range(10)),
             key=key, on_change=save_label, args=(image, key, source))


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


def read_drawing(value, spec: DatasetSpec) -> tuple[dict | None, str | None]:
    """(preprocess_steps, None) for ink that could be one of spec's images; (None, sentence) for a refused value or
    shape; (None, None) for an empty canvas."""
    try:
        rgba = read_canvas(value, CANVAS)
    except CanvasError as exc:
        return None, str(exc)
    if rgba is None:
        return None, None
    grey = to_grey(rgba)  # once: both take a grey image as it is
    problem = drawing_problem(grey, spec) or stroke_problem(value.get("raw") if isinstance(value, dict) else None, spec)
    return (None, problem) if problem else (preprocess_steps(grey, spec), None)


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


def show_reading(steps: dict | None, problem: str | None, model, source: str, left, right, hint: str | None,
                 draw_input=None) -> None:
    """An image read or refused: the answer beside the input (right), its preprocessing in the space under it (left),
    and the actions across the page, where the ten label pills fit in view on a 1024 px projector.

    draw_input: a function that draws the input itself (the canvas and its Clear button) in the left column, called
    right after the answer's words. A column's place on the page is fixed when it is made, so the order of the calls
    changes only what reaches the browser first: the browser renders a fragment's messages one by one (~5-10 ms
    each on a 2-core machine, the canvas's ~20 ms), and every one sent before the answer delayed it
    (scripts/stroke_latency.py).
    """
    spec = model_spec(model)
    probabilities = None
    if steps is not None and not problem:
        probabilities, problem = read_image(steps, model)

    def input_in_left():
        if draw_input is not None:
            with left:
                draw_input()

    with right:
        if problem:
            show_refusal(problem, spec)  # the sentence and no answer: a refused drawing gets no probabilities
        elif steps is None and hint:
            st.info(hint)
        if problem or steps is None:
            input_in_left()
            return
        answer = show_answer(steps, probabilities, model, then=input_in_left)  # the input right after the answer's words
    # One display frame before the rest (the chart, the explanation, the preprocessing, the buttons: ~25 messages).
    # Sent at once, they reached a busy browser with the answer, and it drew them all in one render before the
    # answer showed. scripts/stroke_latency.py on this 2-core machine, runs alternated: p50 257-284 ms without the
    # pause, 248-256 ms with it (two frames: no better). The rest of the page comes one frame later.
    time.sleep(ANSWER_FRAME_S)
    with answer_tail_slot():  # a few sessions at a time: see pages.shared.ANSWER_TAIL_SLOTS
        with right:
            show_why(steps, probabilities, model, source, answer)
        with left:
            preprocessing_steps(steps, source, spec)
        actions(steps["centred"], source, spec)


@st.fragment
def canvas_panel(model) -> None:
    """The canvas in a fragment: a stroke reruns only this part of the page.

    The drawing the browser just sent is in session state before the canvas is drawn again, so it is read, and
    answered, first; the canvas follows in its place (show_reading's draw_input)."""
    cleared = bool(st.session_state.get("clear_canvas"))  # the button's press, read before the button is drawn
    value = sent_drawing()
    sent = value.get("data") if isinstance(value, dict) else None
    sent = sent if isinstance(sent, str) else None
    if cleared:  # kept before a rerun of the whole page below, whose run no longer sees the press
        st.session_state.canvas_clears = st.session_state.get("canvas_clears", 0) + 1
        st.session_state.canvas_stale = sent  # until the browser sends a new drawing, the value is the old one
    # A drawing saved to the class set (the class panel shows it), or new class settings (a class model the teacher
    # just chose answers this stroke, and a Clear pressed since clears): a run of the whole page.
    if st.session_state.pop("class_panel_stale", False) or class_settings_changed("draw"):
        st.rerun(scope="app")
    left, right = st.columns(READING_COLUMNS, gap="medium")
    stale = sent is not None and sent == st.session_state.get("canvas_stale")
    spec = model_spec(model)
    steps, problem = (None, None) if stale else read_drawing(value, spec)

    def clear_and_canvas():
        st.button("Clear", key="clear_canvas")
        drawing_canvas(st.session_state.get("canvas_clears", 0))

    show_reading(steps, problem, model, "drawing", left, right, hint=canvas_hint(spec), draw_input=clear_and_canvas)


def sent_drawing():
    """The canvas's "drawing" value as the browser last sent it (what drawing_canvas returns once it is drawn), or
    None before the canvas has sent one: the component's state, kept under its key between runs."""
    state = st.session_state.get("canvas")
    try:
        return state.get("drawing") if state is not None else None
    except (AttributeError, TypeError):  # not the component's state: treated as no drawing
        return None


def upload_panel(model) -> None:
    left, right = st.columns(READING_COLUMNS, gap="medium")
    with left:
        spec = model_spec(model)
        thing = "one digit" if names_are_numbers(spec) else spec.item
        uploaded = uploaded_digit(f"Or upload a photo of {thing} (PNG or JPEG, up to 2 MB)", spec=spec)
    if uploaded is not None:
        show_reading(uploaded[0], None, model, "upload", left, right, hint=None)


def class_panel(model, run: str) -> None:
    if "class_saved" in st.session_state:
        st.toast(st.session_state.pop("class_saved"))
    note = class_set_note(model_spec(model).name)
    if note:  # the set holds digits: a clothes model is neither taught by it nor scored on it
        st.caption(note)
        return
    saves = st.session_state.get("class_saves", {})
    if saves:
        last = saves[next(reversed(saves))]["label"]
        st.button(f"Undo: take back the {last} I saved last", on_click=undo_save)
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


def model_caption(run: str, source: str, card: dict, spec: DatasetSpec) -> str:
    """Which model answers here, in words: the class model, your run X or a bundled model, and its accuracy on
    its dataset's test images."""
    test_images = f"{spec.title}'s {spec.test_size:,} test {'digits' if names_are_numbers(spec) else 'images'}"
    if run == "bundled":
        name = "the bundled model (the article's network, trained for 10 epochs)"
    elif run.startswith("bundled"):
        name = f"the bundled {spec.title} model (the article's network)"
    elif source == "the class model":
        name = f"the class model (run {run}, chosen by {'you' if is_teacher() else 'your teacher'})"
    else:
        name = f"your run {run}"
    return f"Read by {name}: {100 * (card.get('accuracy') or 0):.2f}% right on {test_images}."


note_class_settings("draw")  # before the class model is read
model, card, run, source = resolved_model()  # once per run: it reads the class's settings and the checkpoint
st.title(model_spec(model).draw_prompt)
st.caption(model_caption(run, source, card, model_spec(model)))
# Before the canvas, so it runs first; outside its fragment: a stroke's rerun would send it again and the browser
# would render it again before the answer, for nothing (the script installs its rule once per page).
st.html(TOOLBAR_ABOVE_CANVAS, unsafe_allow_javascript=True)
canvas_panel(model)
upload_panel(model)
st.subheader("The class's handwriting")
class_panel(model, run)
# Last, once the page is drawn: the not-a-digit check is fitted once per model, ~5 s in the background. Started as the
# page opens, it is ready by the first stroke and does not compete with the first strokes' answers for the CPU.
start_refusal_fit(model)
