"""Experiments: fool the network. An adversarial example of the chosen image, changed by at most epsilon per pixel
(L-inf): untargeted (FGSM) or toward a chosen class (projected gradient descent), the change amplified, both answers,
and the smallest epsilon that flips it. Computed by cnn.adversarial; cached per checkpoint version and image.
"""
from __future__ import annotations

import threading

import numpy as np
import streamlit as st

from cnn.adversarial import (EPSILON_LIMIT, EPSILON_STEP, GREY_LEVELS, Fooling, answer_of, attack_sentence,
                             clamped_epsilon, fool, grey_levels, picture_caption, reachable_target, side_by_side,
                             smallest_flipping_epsilon)
from pages.picking import Looking, kept_choice, kept_default, taking_turns
from pages.shared import PERSIST, kept, probability_chart

MODES = {"any": "Any other answer (FGSM, one step)", "target": "A chosen target (20 gradient steps)"}
DEFAULT_EPSILON = 0.1
STEPS = 20  # the targeted attack's steps: ~40 ms for the article's CNN on this CPU
WHY = ("**Why this matters.** A change too small for us to notice *can* change the answer (not for every image "
       "and every epsilon: the smallest epsilon above says how much this one needs): the network does not see as "
       "we do. A sticker on a stop sign, a pixel pattern in a spam image or a few words in an e-mail can "
       "be chosen the same way, which is why a self-driving car's camera or a spam filter must be tested against "
       "such attacks. One defence is *adversarial training*: train on attacked images too, so that small changes "
       "stop mattering; it helps, and costs accuracy and time.")


@st.cache_data(max_entries=128, show_spinner=False)
def fooled(version: str, image_id: str, target: int | None, epsilon: float, _model, _image) -> Fooling:
    """One attack per checkpoint version, image, target and epsilon (~40 ms for 20 steps): a slider moved back is
    instant. _image: (side, side) float32 in [0, 1]."""
    return fool(_model, _image, target=target, epsilon=epsilon, steps=STEPS)


@st.cache_data(max_entries=64, show_spinner=False)
def smallest(version: str, image_id: str, target: int | None, _model, _image) -> float | None:
    """The smallest epsilon that flips the image (all 100 epsilons in one batch: ~1 s targeted, ~30 ms FGSM)."""
    return smallest_flipping_epsilon(_model, _image, target=target, steps=STEPS)


@st.cache_resource
def search_lock() -> threading.Lock:
    """One per server: the smallest-epsilon searches (about a second of both cores each) take turns."""
    return threading.Lock()


def kept_epsilon() -> str:
    """The epsilon slider's kept key, its value forced onto the slider's grid first (a browser can send NaN, 1e9
    or a word; Streamlit would stop the page on a value outside the slider)."""
    key = kept_default("fool_epsilon", DEFAULT_EPSILON)
    st.session_state[key] = clamped_epsilon(st.session_state[key], DEFAULT_EPSILON)
    return key


def searched(seen: Looking, image: np.ndarray, target: int | None) -> float | None:
    """The smallest epsilon that flips the image (or reaches target), cached, searches taking turns server-wide."""
    with taking_turns(search_lock(), "Another student's search is running; yours is next..."):
        with st.spinner("Finding the smallest epsilon that fools it..."):
            return smallest(seen.version, seen.image_id, target, seen.model, image)


def first_target(seen: Looking, image: np.ndarray, answer: int) -> int:
    """The target offered the first time: the class after the answer if an attack up to the limit reaches it,
    else the class FGSM flips the image to (so the first attack has somewhere to go)."""
    return reachable_target(answer, seen.spec.num_classes, lambda target: searched(seen, image, target),
                            lambda epsilon: fooled(seen.version, seen.image_id, None, epsilon, seen.model,
                                                   image).answer)


def choose_attack(seen: Looking, image: np.ndarray, answer: int) -> tuple[int | None, float]:
    """(target or None, epsilon) from the widgets, each checked on the server."""
    spec = seen.spec
    modes, classes = list(MODES), list(range(spec.num_classes))
    mode = st.radio("Make it read as", modes, format_func=MODES.get, horizontal=True,
                    key=kept_choice("fool_mode", modes, modes[0]), persist_state=PERSIST)
    columns = st.columns([1, 3]) if mode == "target" else [st.container()] * 2
    target = None
    if mode == "target":
        # Searched only when no valid target is kept yet: the first look, or a forged value.
        first = (answer + 1) % spec.num_classes
        if st.session_state.get(kept("fool_target")) not in classes:
            first = first_target(seen, image, answer)
        key = kept_choice("fool_target", classes, first)
        target = columns[0].selectbox(f"Target {spec.class_word}", classes, format_func=spec.class_name, key=key,
                                      persist_state=PERSIST)
        target = target if target in classes else first
    epsilon = columns[1].slider("Epsilon: the largest change of any pixel (L-inf; 1 is black to white)", 0.0,
                                EPSILON_LIMIT, step=EPSILON_STEP, format="%.3f", key=kept_epsilon(),
                                persist_state=PERSIST)
    epsilon = clamped_epsilon(epsilon, DEFAULT_EPSILON)
    columns[1].caption(f"Epsilon {epsilon:.3f} = {grey_levels(epsilon)} of {GREY_LEVELS} grey levels.")
    return target, epsilon


def show_result(seen: Looking, result: Fooling, found: float | None) -> None:
    """The three images in one picture, both answers with their probabilities, and the sentence (its advice
    follows from found, the smallest epsilon)."""
    spec = seen.spec
    # One picture, stretched to the main area (~560 px on a projector), shrunk to a phone's width: three columns
    # would stack there.
    # What the picture is (a test image's label), beside what the network reads: a misread image may be "fooled"
    # into its true class (the walk saw "it now reads as 4 instead of 6" under a 4 and could not tell).
    st.image(side_by_side(result), width="stretch", caption=f"The original: {seen.label}. {picture_caption(result)}")
    charts = st.columns(2)
    for column, title, answer, probabilities in (
            (charts[0], "The original reads", result.original_answer, result.original_probabilities),
            (charts[1], "The changed image reads", result.answer, result.probabilities)):
        column.markdown(f"{title} **{spec.class_name(answer)}** ({probabilities[answer]:.1%})")
        column.vega_lite_chart(probability_chart(probabilities, 150, spec.class_names, spec.class_word),
                               width="stretch")
    worked = result.answer != result.original_answer and result.target in (None, result.answer)
    (st.success if worked else st.info)(attack_sentence(spec, result, found, STEPS))


def show_smallest(seen: Looking, target: int | None, found: float | None) -> None:
    """The smallest epsilon on the grid that flips this image (or reaches the target), in a sentence."""
    goal = "change the answer" if target is None else f"make it read {seen.spec.class_name(target)}"
    if found is None:
        st.caption(f"No epsilon up to {EPSILON_LIMIT} is enough to {goal} with this attack.")
    elif found == 0:
        st.caption(f"It reads {seen.spec.class_name(target)} already.")
    else:
        st.caption(f"The smallest epsilon that is enough to {goal}: **{found:.3f}** ({grey_levels(found)} of "
                   f"{GREY_LEVELS} grey levels; searched in steps of {EPSILON_STEP}).")


def show(seen: Looking) -> None:
    st.subheader("Fool the network")
    st.caption("Change every pixel by at most epsilon, in the direction that hurts the network most (its gradient "
               "with respect to the image), and see its answer change.")
    image = (seen.image.astype(np.float32) / 255.0)
    answer = answer_of(seen.model, image)
    target, epsilon = choose_attack(seen, image, answer)
    result = fooled(seen.version, seen.image_id, target, epsilon, seen.model, image)
    found = searched(seen, image, target)  # before the result: the sentence's advice depends on it
    show_result(seen, result, found)
    show_smallest(seen, target, found)
    st.markdown(WHY)
