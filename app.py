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
st.navigation(app_pages()).run()
