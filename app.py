"""The CNN classroom: Streamlit entry point. It only routes; the pages live in pages/."""
import streamlit as st

from cnn import layer_table

st.set_page_config(page_title="CNN classroom", page_icon="🧠", layout="wide")
st.title("The CNN classroom")
st.write("The MNIST network of the classic TensorFlow tutorial, layer by layer.")
st.dataframe(layer_table(), hide_index=True)
