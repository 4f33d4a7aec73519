"""The app's pages, and the first lines of each page: nothing here imports more than Streamlit.

Streamlit treats a folder named pages/ as old-style pages until some run calls st.navigation (its documented
switch: "the pages/ directory is ignored" from then on); a first request for /draw after a restart would run the
page alone, with file names as menu and no app set-up. So each page calls require_app_navigation before its own
imports: a page that finds it was not routed by app.py calls st.navigation itself, with the app's pages, and reruns;
now app.py runs, says that the server is starting while PyTorch loads (~5 s, once per server), routes, and shows
the page that was asked for. Called after the page's imports, it left that first visitor a white page for those
seconds (walk). Public API only (no PagesManager); tests/test_browser_cold_start.py checks a cold request for /draw.
"""
from __future__ import annotations

import streamlit as st

# In menu order. No page icons: a :material/...: icon makes Streamlit fetch the browser tab's icon from a font server
# (an error in an offline classroom), and an emoji shows as an empty box where the machine has no emoji font
# (Debian's Chromium without fonts-noto-color-emoji). The tab keeps app.py's icon, drawn by the app.
PAGE_FILES = (("pages/home.py", "Home"), ("pages/train.py", "Train"), ("pages/draw.py", "Draw"),
              ("pages/features.py", "Feature maps"), ("pages/inside.py", "Inside the network"),
              ("pages/experiments.py", "Experiments"), ("pages/compare.py", "Compare"))
# The teacher's page is always routed (a student who opens /teacher gets our sentence, not Streamlit's "page not
# found"); only the teacher sees it in the menu.
TEACHER_PAGE = ("pages/teacher.py", "Teacher")


def page_list(teacher: bool) -> list:
    """The st.Page list of the app (Home first and default; the Teacher page in the menu only when teacher)."""
    pages = [st.Page(path, title=title, default=index == 0) for index, (path, title) in enumerate(PAGE_FILES)]
    path, title = TEACHER_PAGE
    pages.append(st.Page(path, title=title, visibility="visible" if teacher else "hidden"))
    return pages


def require_app_navigation() -> None:
    """Send a visitor who opened a page's URL before app.py ever ran back through app.py (the module's docstring).

    The menu it sets is hidden, and only for this one run: app.py's own replaces it."""
    if not st.session_state.get("routed_by_app"):
        st.navigation(page_list(teacher=False), position="hidden")
        st.rerun()
