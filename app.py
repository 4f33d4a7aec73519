"""The CNN classroom: the Streamlit entry point. It only sets up the page and routes; pages live in pages/."""
import streamlit as st

st.set_page_config(page_title="CNN classroom", page_icon=":material/neurology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/draw.py", title="Draw", icon=":material/draw:"),
    st.Page("pages/features.py", title="Feature maps", icon=":material/grid_view:"),
]

st.session_state.routed_by_app = True  # pages check it: see pages/shared.py require_app_navigation
st.navigation(PAGES).run()
