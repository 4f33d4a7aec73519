"""Experiments: change the network or the image and see what happens. Filter surgery (edit or ablate filters, on a
copy of the model), transforming the image (the answer follows; accuracy against shift and rotation), and fooling
the network (adversarial examples). The model and the image are chosen as on Feature maps and Inside the network
(the three pages share the choice); only the chosen experiment runs.
"""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import streamlit as st

from cnn.views import card_model, experiment_subject
from pages import experiments_fool, experiments_surgery, experiments_transform
from pages.picking import looking
from pages.shared import PERSIST, kept, resolved_model

VIEWS = {"surgery": "Filter surgery", "transform": "Transform the image", "fool": "Fool the network"}
SHOW = {"surgery": experiments_surgery.show, "transform": experiments_transform.show, "fool": experiments_fool.show}
CHOOSE = ("Choose an experiment: **Filter surgery** sets a filter's numbers by hand or removes filters, and measures "
          "the network on the 10,000 test images; **Transform the image** moves, turns or blurs the image and watches "
          "the answer; **Fool the network** changes the image too little for us to see, and the answer changes.")


def page() -> None:
    st.title("Experiments")
    st.caption("Change the network or the image, and measure what happens on the 10,000 test images. Every change "
               "is made on your own copy: the class's model stays as it is.")
    seen = looking()
    if seen is None:
        return
    _model, card, _run, source = resolved_model()  # its words; the weights are the ones time travel chose
    st.caption(experiment_subject(*card_model(card), source, seen.epoch))
    views, key = list(VIEWS), kept("experiment_view")
    if st.session_state.get(key) not in views:  # none chosen yet, or a forged value
        st.session_state[key] = None
    view = st.segmented_control("Experiment", views, format_func=VIEWS.get, key=key, persist_state=PERSIST)
    if view not in SHOW:
        # Nothing heavy runs until one is chosen: a class opening the page measures nothing, and no view's images
        # are dropped the moment they arrive (a switch while they load costs the browser a /media 404).
        st.info(CHOOSE)
        return
    SHOW[view](seen)


page()
