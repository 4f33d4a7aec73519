"""Experiments: placeholder while this section is being built (replaced by its own module)."""
from __future__ import annotations

import streamlit as st

from pages.picking import Looking


def show(seen: Looking) -> None:
    st.info("This experiment is being built.")
