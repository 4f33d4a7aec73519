"""Inside the network: a section (being built)."""
from __future__ import annotations

import streamlit as st

from pages.picking import Looking


def show(seen: Looking) -> None:
    st.info("This view is being built.")
