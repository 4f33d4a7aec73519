"""Choosing what the inside pages look at: the model at any epoch (time travel) and one image (a test image, a
drawing sent from Draw, an upload). Feature maps and Inside the network share these choices: an image picked on one
is the image of the other.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from cnn.data import DatasetSpec, to_float
from cnn.features import confusion_matrix, history_folder
from cnn.model import model_spec
from cnn.runs import epoch_checkpoints, read_predictions
from pages.shared import (PERSIST, active_model, cached_checkpoint, checkpoint_for, data_holder, kept,
                          uploaded_digit)


SOURCES = ["Test set", "Sent from Draw", "Upload"]


def kept_default(name: str, default) -> str:
    """The kept key of a widget, given its default the first time (never through value=/index=, see kept())."""
    st.session_state.setdefault(kept(name), default)
    return kept(name)


def kept_following(name: str, context, default) -> str:
    """The kept key of a widget that starts at default again whenever context changes (another image, layer, ...);
    within one context the user's own choice stays, across page switches too."""
    key, marker = kept(name), f"default_for.{name}"
    if key not in st.session_state or st.session_state.get(marker) != context:
        st.session_state[key] = default
        st.session_state[marker] = context
    return key


def kept_select_slider(label: str, options: list, name: str, default, **kwargs):
    """A select_slider whose choice survives page switches; its value is always one of options (default when the
    kept one is not: another run with other epochs, a forged value).

    Drawn with value= from a plain session key that its on_change keeps: a select_slider kept by its widget key
    alone (persist_state) is drawn afresh at its first option after a page switch, and the browser sends that back
    (a class found itself at epoch 1 after moving from Feature maps to Inside the network)."""
    store, key = f"chosen.{name}", f"slider.{name}"
    current = st.session_state.get(store)
    current = current if current in options else default
    st.session_state[store] = current

    def moved() -> None:
        value = st.session_state.get(key)
        st.session_state[store] = value if value in options else default

    value = st.select_slider(label, options, value=current, key=key, on_change=moved, **kwargs)
    return value if value in options else current


def clamped(value, low: int, high: int) -> int:
    """A widget's number forced into [low, high]: a browser can send any value (a non-number counts as low)."""
    try:
        return min(max(int(value), low), high)
    except (TypeError, ValueError):
        return low


def kept_number(name: str, context, default: int, low: int, high: int) -> str:
    """kept_following's key, its value first forced into [low, high]: a choice kept from another model (conv1 had
    32 maps, LeNet's has 6) or forged must not reach the widget out of its range (Streamlit would stop the page)."""
    key = kept_following(name, context, default)
    st.session_state[key] = clamped(st.session_state[key], low, high)
    return key


def kept_choice(name: str, options: list, default) -> str:
    """The kept key of a radio or selectbox, its value first put back to default when it is not one of options
    (another network has other layers; a browser can send anything)."""
    key = kept_default(name, default)
    if st.session_state[key] not in options:
        st.session_state[key] = default
    return key


@st.cache_resource(max_entries=8)
def computed_predictions(version: str, _model, _data) -> np.ndarray:
    """(N,) predicted digits of one checkpoint version on the test images, computed once per server.

    Only for checkpoints whose run kept no predictions (the bundled model, runs from before they were kept).
    """
    return confusion_matrix(_model, _data.test_images, _data.test_labels, _data.spec.num_classes)[1]


def test_predictions(folder, epoch: int | None, version: str, model, data) -> np.ndarray:
    """(N,) predicted digits on the test images: those training kept (model.pt's, or epoch-K.pt's), else computed.

    Reading the kept ones makes the time-travel slider cheap (computing took 3-4.6 s per move on a
    10-epoch run, and the cache above holds only 8 checkpoints).
    """
    kept_ones = kept_predictions(folder, epoch, len(data.test_labels)) if folder is not None else None
    return kept_ones if kept_ones is not None else computed_predictions(version, model, data)


def kept_predictions(folder, epoch: int | None, count: int) -> np.ndarray | None:
    """The predictions training wrote beside a checkpoint, if any and if they fit a test set of count digits."""
    predictions = read_predictions(folder, epoch)  # None for none or an invalid file: then they are computed
    return predictions if predictions is not None and predictions.shape == (count,) else None


def choose_image(model, spec: DatasetSpec, kept_at: tuple, version: str) -> tuple[np.ndarray, str] | None:
    """The page's image: a test image of the model's dataset, a drawing sent from Draw or an upload, with its label."""
    data = data_holder(spec.name).load()
    if st.session_state.pop("image_source", None) == "sent":  # just sent from the Draw page
        st.session_state[kept("image_source")] = "Sent from Draw"
    first = st.columns(2)  # two rows of choices, not five: the views they choose for start higher on a projector
    source = first[0].radio("Image", SOURCES, horizontal=True, key=kept_default("image_source", SOURCES[0]),
                            persist_state=PERSIST)
    if source == "Sent from Draw":
        chosen = st.session_state.get("chosen_image")
        if chosen is None:
            st.info(f"Nothing sent yet: on the Draw page, draw {spec.item} and press 'Look inside'.")
            return None
        return np.array(chosen["image"], dtype=np.uint8), chosen["label"]
    if source == "Upload":
        uploaded = uploaded_digit(f"A photo of {spec.item} (PNG or JPEG, up to 2 MB)", spec=spec)  # spec's recipe
        if uploaded is None:
            return None
        steps, name = uploaded
        return steps["centred"], f"upload {name}"
    if data is None:
        st.warning(f"{spec.title} is not available, so the test set cannot be shown; draw or upload {spec.item} "
                   "instead.")
        return None
    picks = ["by index", "by digit", "misclassified"]  # stable values: "by digit" is shown in the dataset's words
    how = first[1].radio("Pick", picks, horizontal=True, key=kept_choice("pick", picks, "by index"),
                         persist_state=PERSIST,
                         format_func=lambda pick: f"by {spec.class_word}" if pick == "by digit" else pick)
    labels = data.test_labels.numpy()
    second = st.columns([2, 2, 1] if how == "by digit" else [4, 1], vertical_alignment="bottom")
    if how == "by digit":
        classes = list(range(spec.num_classes))
        label = second[0].selectbox(spec.class_word.capitalize(), classes, key=kept_choice("digit", classes, 0),
                             format_func=spec.class_name, persist_state=PERSIST)
        candidates = np.nonzero(labels == clamped(label, 0, spec.num_classes - 1))[0]
    elif how == "misclassified":
        predicted = test_predictions(*kept_at, version, model, data)
        candidates = np.nonzero(predicted != labels)[0]
    else:
        candidates = np.arange(len(labels))
    if len(candidates) == 0:
        st.info("None: this model reads every test image right.")
        return None
    pick_key = kept("test_pick")
    st.session_state[pick_key] = clamped(st.session_state.get(pick_key, 0), 0, len(candidates) - 1)
    second[-1].button("Random", key="random", on_click=lambda: st.session_state.update(
        {pick_key: int(np.random.default_rng().integers(len(candidates)))}))
    pick = second[-2].number_input(f"Which of {len(candidates):,}", 0, len(candidates) - 1, key=pick_key,
                           persist_state=PERSIST)
    index = int(candidates[clamped(pick, 0, len(candidates) - 1)])
    st.session_state.test_index = index
    return data.test_images[index].numpy(), f"test image #{index} (label {spec.class_name(labels[index])})"


@st.cache_resource(max_entries=2, show_spinner=False)
def test_inputs(dataset: str, _images: torch.Tensor) -> torch.Tensor:
    """(N, 1, side, side) float32 in [0, 1] of a dataset's test images ((N, side, side) uint8), made once per
    server and shared by every session; never mutated."""
    return to_float(_images)


def show_test_image(index: int) -> None:
    """Make test image #index the image of both inside pages (a widget callback: it runs before they are drawn)."""
    st.session_state.update({kept("image_source"): SOURCES[0], kept("pick"): "by index", kept("test_pick"): index})


def travel_in_time(model, final, history) -> tuple:
    """(model, checkpoint path, epoch or None for the final model) chosen on the time-travel slider; history: the
    folder of the model's training history (None: it has none)."""
    epochs = epoch_checkpoints(history) if history is not None else {}
    if not epochs:
        return model, str(final), None
    options = list(epochs) + ["final"]
    epoch = kept_select_slider("Training time travel: the model as it was after epoch", options, "epoch", "final")
    if epoch == "final":
        return model, str(final), None
    try:
        past, _ = cached_checkpoint(epochs[epoch])
    except Exception:  # noqa: BLE001 - an odd file in runs/ must not end the page
        st.warning(f"The checkpoint of epoch {epoch} cannot be read; showing the final model.")
        return model, str(final), None
    return past, str(epochs[epoch]), epoch


@dataclass(frozen=True)
class Looking:
    """What an inside page looks at: the model (at the chosen epoch), its dataset, and the chosen image."""

    model: torch.nn.Module  # shared and cached: never mutate it (experiments work on copies)
    spec: DatasetSpec
    checkpoint: str  # the file the model was read from
    version: str  # checkpoint@mtime: what caches of per-checkpoint results are keyed by
    epoch: int | None  # None: the final model
    history: object  # the folder of its training history (Path), None when it has none
    image: np.ndarray  # (side, side) uint8, as chosen
    label: str  # where the image came from, in words
    image_id: str  # a hash of the image: defaults that follow the image are keyed by it

    @property
    def x(self) -> torch.Tensor:
        """The image as the model takes it: (1, 1, side, side) float32 in [0, 1]."""
        return torch.from_numpy(self.image.astype(np.float32) / 255.0)[None, None]

    @property
    def kept_at(self) -> tuple:
        return self.history, self.epoch


def model_at_epoch():
    """(model, spec, checkpoint, version, epoch, history) of the session's model on the time-travel slider."""
    model, _card, run = active_model()
    final = checkpoint_for(run)
    history = history_folder(final)  # None for a bundled model whose history is not kept beside it
    model, checkpoint, epoch = travel_in_time(model, final, history)
    version = f"{checkpoint}@{os.path.getmtime(checkpoint)}"
    return model, model_spec(model), checkpoint, version, epoch, history


def looking(before_choosing=None) -> Looking | None:
    """The time-travel slider and the image choice, drawn; None when no image is chosen yet (a sentence says why).

    before_choosing(model, spec, kept_at, version), if given, runs between the two (Feature maps opens a clicked
    confusion cell's first image there)."""
    model, spec, checkpoint, version, epoch, history = model_at_epoch()
    if before_choosing is not None:
        before_choosing(model, spec, (history, epoch), version)
    chosen = choose_image(model, spec, (history, epoch), version)
    if chosen is None:
        return None
    image, label = chosen
    return Looking(model, spec, checkpoint, version, epoch, history, image, label,
                   hashlib.sha1(image.tobytes()).hexdigest())


# The unit the inside views look at, shared by them: the overview's click sets it, "what a unit wants to see" opens
# on it. Plain session state (no widget has this key), checked where it is read: a stage the model lacks is ignored.
UNIT_KEY = "inside_unit"


def chosen_unit() -> dict:
    """{"stage", "channel", "row", "col"} last chosen on an inside view ({} for none yet)."""
    unit = st.session_state.get(UNIT_KEY)
    return dict(unit) if isinstance(unit, dict) else {}


def choose_unit(stage: str, channel: int, row: int | None = None, col: int | None = None) -> None:
    """Remember a unit (a map and a position; row and col None for a whole map or a dense unit)."""
    st.session_state[UNIT_KEY] = {"stage": str(stage), "channel": int(channel), "row": row, "col": col}


@contextlib.contextmanager
def taking_turns(lock: threading.Lock, waiting: str, place=None):
    """Hold a server-wide lock around heavy work (one session at a time, so a student asking for many things at
    once queues them instead of taking both cores from the class), saying `waiting` in a spinner while another
    session holds it: in place (pages.shared.progress_place) when given, so the page's elements keep their places.

    The spinner's own exit may raise Streamlit's rerun interruption (a newer message from this browser) after the
    lock is taken: it is released all the same, or every later session would wait forever."""
    held = lock.acquire(blocking=False)
    try:
        if not held:
            with place.container() if place is not None else contextlib.nullcontext():
                with st.spinner(waiting):
                    lock.acquire()
                    held = True
            if place is not None:
                place.empty()
        yield
    finally:
        if held:
            lock.release()
