"""The CNN classroom: the Streamlit entry point. It sets up the server once and routes; pages live in pages/."""
import sys

import streamlit as st

from pages.parsing import serialise_ast_parse

serialise_ast_parse()  # before torch's first import, which parses with ast.parse while other sessions may compile pages
starting = None
if "torch" not in sys.modules:  # this server's first run: PyTorch and the engine take ~5 s to load, once
    st.set_page_config(page_title="CNN classroom", layout="wide")
    starting = st.empty()  # a fresh server's first visitor saw a white page for 6-7 s
    starting.info("Starting the CNN classroom: loading PyTorch and the network, a few seconds, once per server.")

from PIL import Image  # noqa: E402 (after the sentence above, on purpose)

from cnn.views import app_icon  # noqa: E402
from pages.shared import app_pages, claim_teacher, server_startup  # noqa: E402

st.set_page_config(page_title="CNN classroom", page_icon=Image.fromarray(app_icon()), layout="wide")  # drawn here: nothing fetched
if starting is not None:
    starting.empty()  # loaded

try:
    server_startup()  # once per server: read the CNN_* caps, set torch's threads (before any page trains or predicts)
except ValueError as exc:  # a bad CNN_* variable: the teacher's sentence, not a traceback
    # The app's own pages, hidden: with no st.navigation call Streamlit would list every file in pages/ as a menu.
    st.navigation(app_pages(), position="hidden")
    st.error(f"The class server is not set up right: {exc}")
    st.stop()

claim_teacher()  # ?teacher=TOKEN makes this session the teacher's; the token leaves the address bar
st.session_state.routed_by_app = True  # pages check it first: pages/routing.py require_app_navigation
st.set_option("client.showSidebarNavigation", True)  # the app's own menu (see .streamlit/config.toml)
page = st.navigation(app_pages())
# Streamlit tops every page with 6rem of empty space: on a 1024x768 projector the Train page's Start button sat on
# the bottom edge. 3.75rem is its header's height: the title stays clear of the header's buttons (on a phone, the
# menu's). A table wider than a phone (Compare's, 513 px) scrolls sideways in its own box, not the whole page.
# An element of the main area, written on every run, its own box hidden so that it takes no room (st.html's
# style-only event container was sometimes empty once a page had drawn: the page slid back).
st.markdown("<style id='classroom-layout'>[data-testid='stMainBlockContainer'] { padding-top: 3.75rem; }"
            " [data-testid='stElementContainer']:has(style#classroom-layout) { display: none; }"
            " [data-testid='stMarkdownContainer']:has(> table) { overflow-x: auto; }</style>", unsafe_allow_html=True)
page.run()
