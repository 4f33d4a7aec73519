"""The Train page's Start form state: what a preset or network choice fills in, kept across page switches.

Plain functions over st.session_state (no drawing), so a test can run them in a script of its own.

Known and open: on a loaded machine a value typed into the form can still come back as the preset's (CI runs lost
a typed epoch count three times, in three tests, in ~1 of 4 full runs; never reproduced here in ~30 tries). A
callback delivered twice, a choice that arrives without its callback and a write that resets what is being typed
are each mended below; whatever is left happens between Streamlit's widget state and the live view's timed reruns.
"""
from __future__ import annotations

import secrets

import streamlit as st

from cnn import classroom
from cnn.config import PRESETS, presets_for
from cnn.data import DATASETS
from cnn.model import NETWORKS
from cnn.runs import run_name_stem
from pages.shared import kept


FORM_MAX_EPOCHS = 50  # the Epochs field's limit; the class's rules and the server's step cap are checked at Start
# The Start form's fields: widget key name -> the preset's field it starts from. Kept (pages.shared.kept), so a
# trip to Draw and back keeps what the student set.
FORM_FIELDS = {"epochs": "epochs", "batch": "batch_size", "lr": "learning_rate", "seed": "seed",
               "keep_conv": "p_keep_conv", "keep_hidden": "p_keep_hidden"}


def default_run_name() -> str:
    """A fresh name for this session's next run: what it trains (run_name_stem: "fast", "fashion-mlp-fast"), a tag
    of this session, how many it started (+1).

    Computed from this session alone, so another session starting a run changes nothing here.
    """
    tag = st.session_state.setdefault("run_tag", secrets.token_hex(2))
    stem = run_name_stem(*(st.session_state[kept(k)] for k in ("preset", "network", "dataset")))
    return f"{stem}-{tag}-{st.session_state.get('runs_started', 0) + 1}"


def _name_follows() -> None:
    """A new default name on the next run, unless the student typed their own.

    Any name this session was given as a default counts as not typed: a browser that sends back the name one run
    late (a choice made while the page still draws) must not freeze "article-..." under a Fashion-MNIST MLP.
    """
    if st.session_state.get(kept("run_name")) in st.session_state.get("run_name_defaults", ()):
        st.session_state.new_run_name = True


def _preset_changed(max_epochs: int = FORM_MAX_EPOCHS) -> None:
    """A new preset fills the form with its values (epochs within what this session may start), and a new default
    name unless the student typed one. A preset the network cannot take brings its own network (the softmax
    baseline: softmax regression)."""
    base = PRESETS.get(st.session_state[kept("preset")])
    if base is None:  # a forged value (a browser can send any string): form_defaults puts an allowed preset back
        return
    network = st.session_state.get(kept("network"))
    if not isinstance(network, str) or base.name not in presets_for(network):
        network = base.architecture
    if tuple(st.session_state.get("form_applied") or ()) == (network, base.name):
        # Already filled for this choice: a callback Streamlit delivers a second time (a fresh-clone run's softmax
        # form went back to 5 epochs after the student typed 1) must not undo what was typed since.
        return
    for key, name in FORM_FIELDS.items():
        st.session_state[kept(key)] = getattr(base, name)
    st.session_state[kept("epochs")] = min(base.epochs, max_epochs)
    if st.session_state.get(kept("network")) != network:
        st.session_state[kept("network")] = network
    st.session_state.form_applied = (network, base.name)
    _name_follows()


def _network_changed(presets: tuple[str, ...], max_epochs: int = FORM_MAX_EPOCHS) -> None:
    """A new network starts from its default preset (cnn.config.presets_for: the softmax baseline for softmax
    regression, mostly ARTICLE for the others) among those this session may start, its values in the form."""
    network = st.session_state.get(kept("network"))
    fitting = classroom.network_presets(network, presets) if isinstance(network, str) and network in NETWORKS else ()
    if not fitting:  # a forged value: form_defaults puts an offered network back
        return
    st.session_state[kept("preset")] = fitting[0]
    _preset_changed(max_epochs)


def apply_lost_choice(presets: tuple[str, ...], max_epochs: int) -> None:
    """Fill the form for a network or preset chosen since it was last filled, when the choice's callback did not run.

    A choice that reaches the server in the same moment as the live charts' timed rerun can arrive without its
    on_change (a fresh-clone browser run chose FAST and kept ARTICLE's 10 epochs): the form then compares what it
    was last filled for (form_applied, set by the callbacks) with what is chosen, and fills it itself."""
    now = (st.session_state[kept("network")], st.session_state[kept("preset")])
    applied = st.session_state.get("form_applied")
    if applied is None or tuple(applied) == now:
        st.session_state.form_applied = now
    elif applied[0] != now[0] and applied[1] == now[1]:
        _network_changed(presets, max_epochs)  # a new network brings its default preset
    else:
        _preset_changed(max_epochs)


def form_is_behind() -> bool:
    """True when the Preset or Network shown is not the one the form was last filled for.

    A choice can reach the server in one of the live charts' own runs, without its callback (a fresh-clone run
    came back from Draw to FAST over ARTICLE's 10 epochs, and stayed so): the live view checks every second, and a
    full run fills the form."""
    applied = st.session_state.get("form_applied")
    now = (st.session_state.get(kept("network")), st.session_state.get(kept("preset")))
    return applied is not None and None not in now and tuple(applied) != now


def form_defaults(presets: tuple[str, ...], max_epochs: int) -> str:
    """Give the kept form widgets their defaults before they are drawn (never value=); returns the preset name.

    Checked here, whatever the browser sent: a dataset and a network this app has (the network one that an offered
    preset can train), and a preset that can train it. A preset's values start within what this session may start
    (max_epochs); a kept preset the class no longer allows is replaced. Epochs a student types beyond the class's
    limit stay as typed: Start says why not.
    """
    if st.session_state.get(kept("dataset")) not in DATASETS:
        st.session_state[kept("dataset")] = "mnist"
        _name_follows()
    networks = classroom.trainable_networks(presets)
    if st.session_state.get(kept("network")) not in networks:
        st.session_state[kept("network")] = "cnn" if "cnn" in networks else networks[0]
    fitting = classroom.network_presets(st.session_state[kept("network")], presets)
    if st.session_state.get(kept("preset")) not in fitting:
        st.session_state[kept("preset")] = fitting[0]
        _preset_changed(max_epochs)
    apply_lost_choice(presets, max_epochs)
    base = PRESETS[st.session_state[kept("preset")]]
    for key, name in FORM_FIELDS.items():
        st.session_state.setdefault(kept(key), getattr(base, name))
    epochs = min(max(int(st.session_state[kept("epochs")]), 1), FORM_MAX_EPOCHS)
    if st.session_state[kept("epochs")] != epochs:  # written only to correct it: a write resets what is being typed
        st.session_state[kept("epochs")] = epochs
    if st.session_state.pop("new_run_name", False) or kept("run_name") not in st.session_state:
        name = st.session_state[kept("run_name")] = default_run_name()
        made = st.session_state.setdefault("run_name_defaults", [])
        if name not in made:
            made[:] = (made + [name])[-50:]  # this session's own defaults, bounded
    return base.name
