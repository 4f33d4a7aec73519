"""Inside the network: the whole network at a glance for one image, one neuron end to end, what a unit wants to see,
and the hidden layer's map of the test set. Each view is a section module; this page chooses the model (time travel)
and the image, as Feature maps does (they share the choice), then shows the view the user picks.
"""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import streamlit as st

from pages import inside_glance, inside_map, inside_wants
from pages.picking import kept_choice, looking
from pages.shared import PERSIST

# Only the chosen view runs: a unit's visualisation or a projection costs seconds the others need not wait for.
VIEWS = {"glance": "The network at a glance", "wants": "What a unit wants to see", "map": "The hidden layer's map"}
SHOW = {"glance": inside_glance.show, "wants": inside_wants.show, "map": inside_map.show}


def page() -> None:
    st.title("Inside the network")
    seen = looking()
    if seen is None:
        return
    views = list(VIEWS)
    view = st.segmented_control("View", views, format_func=VIEWS.get, key=kept_choice("inside_view", views, views[0]),
                                persist_state=PERSIST)
    SHOW[view if view in SHOW else views[0]](seen)


page()
