"""Teacher: the class's runs, what students may start, the class model and the class handwriting set."""
from __future__ import annotations

import streamlit as st

from pages.shared import is_teacher, require_app_navigation

require_app_navigation()
st.title("Teacher")
if not is_teacher():
    st.info("This page is for the teacher. Ask your teacher if you need a run stopped or more training.")
    st.stop()
