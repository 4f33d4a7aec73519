"""The Train page's Start form state: what a preset or network choice fills in, kept across page switches.

Plain functions over st.session_state (no drawing), so a test can run them in a script of its own.

The form is filled at the top of each full run of the page (form_defaults), before its widgets are drawn, never in a
widget callback. Streamlit runs a changed widget's callback in whatever run first carries the change, and the live
view's timed fragment runs carry every widget's value: a preset chosen in the moment of a tick had its callback run in
the fragment run, which wrote the Network, the Epochs and the run name on the server without redrawing them, so the
browser's next full run sent their old values back as new choices, and their callbacks undid the preset. Reproduced
under load (a typed run name came back as the default in 1 of 12 runs, the Softmax preset went back to ARTICLE in 1
of 18); it was the "typed value lost" that CI runs showed in ~1 of 4 full suites.
"""
from __future__ import annotations

import streamlit as st

from cnn import classroom
from cnn.config import PRESETS, presets_for
from cnn.data import DATASETS
from cnn.model import NETWORKS
from cnn.runs import run_name_stem
from pages.shared import kept, my_session_tag


FORM_MAX_EPOCHS = 50  # the Epochs field's limit; the class's rules and the server's step cap are checked at Start
# The Start form's fields: widget key name -> the preset's field it starts from. Kept (pages.shared.kept), so a
# trip to Draw and back keeps what the student set.
FORM_FIELDS = {"epochs": "epochs", "batch": "batch_size", "lr": "learning_rate", "seed": "seed",
               "keep_conv": "p_keep_conv", "keep_hidden": "p_keep_hidden"}


def default_run_name() -> str:
    """A fresh name for this session's next run: what it trains (run_name_stem: "fast", "fashion-mlp-fast"), this
    session's tag (the 4 hex digits the Teacher page shows as "session 3f2a"), how many it started (+1).

    Computed from this session alone, so another session starting a run changes nothing here.
    """
    tag = my_session_tag().split()[-1]  # the walk's teacher read "fast-5baf-1 ... started by session 1c5d"
    stem = run_name_stem(*(st.session_state[kept(k)] for k in ("preset", "network", "dataset")))
    return f"{stem}-{tag}-{st.session_state.get('runs_started', 0) + 1}"


def _preset_changed(max_epochs: int = FORM_MAX_EPOCHS) -> None:
    """A new preset fills the form with its values (epochs within what this session may start). A preset the network
    cannot take brings its own network (the softmax baseline: softmax regression)."""
    base = PRESETS.get(st.session_state[kept("preset")])
    if base is None:  # a forged value (a browser can send any string): form_defaults puts an allowed preset back
        return
    network = st.session_state.get(kept("network"))
    if not isinstance(network, str) or base.name not in presets_for(network):
        network = base.architecture
    if tuple(st.session_state.get("form_applied") or ()) == (network, base.name):
        return  # already filled for this choice: what was typed since stays
    for key, name in FORM_FIELDS.items():
        st.session_state[kept(key)] = getattr(base, name)
    st.session_state[kept("epochs")] = min(base.epochs, max_epochs)
    if st.session_state.get(kept("network")) != network:
        st.session_state[kept("network")] = network
    st.session_state.form_applied = (network, base.name)


def _network_changed(presets: tuple[str, ...], max_epochs: int = FORM_MAX_EPOCHS) -> None:
    """A new network starts from its default preset (cnn.config.presets_for: the softmax baseline for softmax
    regression, mostly ARTICLE for the others) among those this session may start, its values in the form."""
    network = st.session_state.get(kept("network"))
    fitting = classroom.network_presets(network, presets) if isinstance(network, str) and network in NETWORKS else ()
    if not fitting:  # a forged value: form_defaults puts an offered network back
        return
    st.session_state[kept("preset")] = fitting[0]
    _preset_changed(max_epochs)


def follow_choice(presets: tuple[str, ...], max_epochs: int) -> None:
    """Fill the form for a Network or Preset chosen since it was last filled (form_applied): a new network brings
    its default preset, a new preset its values (and its network, where the chosen one cannot take it).

    Called by form_defaults at the top of a full run, never from a callback (see this module's docstring)."""
    now = (st.session_state[kept("network")], st.session_state.get(kept("preset")))
    applied = st.session_state.get("form_applied")
    if now[1] is None:
        return  # the first visit: form_defaults gives the network its first preset
    if applied is None or tuple(applied) == now:
        st.session_state.form_applied = now
    elif applied[0] != now[0] and applied[1] == now[1]:
        _network_changed(presets, max_epochs)  # a new network brings its default preset
    else:
        _preset_changed(max_epochs)


def form_is_behind() -> bool:
    """True when the Preset or Network the session holds is not the one the form was last filled for: a choice
    whose full run has not come yet, or a late echo of a value the server has just filled in (a request the browser
    sent before that run's answer reached it). Either way the browser's next request puts it right, so the live
    view does not ask for a run of the whole page meanwhile: one with the echo would fill the form for it."""
    applied = st.session_state.get("form_applied")
    now = (st.session_state.get(kept("network")), st.session_state.get(kept("preset")))
    return applied is not None and None not in now and tuple(applied) != now


def given_run_name(name: str) -> None:
    """Count name as given by the page (a default, or the name of a run just started): the next full run puts this
    session's current default in its place. A name the student typed is never replaced."""
    made = st.session_state.setdefault("run_name_defaults", [])
    if name not in made:
        made[:] = (made + [name])[-50:]  # bounded


def follow_run_name() -> None:
    """The run name field holds the current default (run_name_stem of the dataset, network and preset, this
    session's tag and run count) unless the student typed a name of their own.

    Written only when it differs: a write resets what is being typed. A name the browser sends one run late (a
    choice made while the page still draws) is still one the page gave, so a Fashion-MNIST MLP never keeps
    "article-...".
    """
    name = st.session_state.get(kept("run_name"))
    if isinstance(name, str) and name not in st.session_state.get("run_name_defaults", ()):
        return  # typed
    fresh = default_run_name()
    given_run_name(fresh)
    if name != fresh:
        st.session_state[kept("run_name")] = fresh


def form_defaults(presets: tuple[str, ...], max_epochs: int) -> tuple[str, bool]:
    """Give the kept form widgets their defaults before they are drawn (never value=); returns the preset's name, and
    whether the network or preset the form showed was replaced because this session may no longer start it.

    Checked here, whatever the browser sent: a dataset and a network this app has (the network one that an offered
    preset can train), and a preset that can train it. A preset's values start within what this session may start
    (max_epochs); a kept preset the class no longer allows is replaced. Epochs a student types beyond the class's
    limit stay as typed: Start says why not.
    """
    if st.session_state.get(kept("dataset")) not in DATASETS:
        st.session_state[kept("dataset")] = "mnist"
    networks = classroom.trainable_networks(presets)
    shown = (st.session_state.get(kept("network")), st.session_state.get(kept("preset")))
    if shown[0] not in networks:
        st.session_state[kept("network")] = "cnn" if "cnn" in networks else networks[0]
    follow_choice(presets, max_epochs)  # before the check below: a preset chosen may bring its network
    fitting = classroom.network_presets(st.session_state[kept("network")], presets)
    if st.session_state.get(kept("preset")) not in fitting:
        st.session_state[kept("preset")] = fitting[0]
        _preset_changed(max_epochs)
    # A network or preset the form showed that this session may no longer start (the teacher changed the class's
    # rules since the page was drawn): a Start pressed on that form must not start the replacement unseen.
    replaced = None not in shown and (shown[0] not in networks or shown[1] not in presets)
    base = PRESETS[st.session_state[kept("preset")]]
    for key, name in FORM_FIELDS.items():
        st.session_state.setdefault(kept(key), getattr(base, name))
    epochs = min(max(int(st.session_state[kept("epochs")]), 1), FORM_MAX_EPOCHS)
    if st.session_state[kept("epochs")] != epochs:  # written only to correct it: a write resets what is being typed
        st.session_state[kept("epochs")] = epochs
    follow_run_name()
    return base.name, replaced
