"""Home: what the app teaches, the network layer by layer, and the active model."""
import streamlit as st

from cnn.model import layer_table
from cnn.views import format_seconds
from pages.shared import active_model, load_data_with_progress, require_app_navigation

GLOSSARY = {
    "Convolution": "A small grid of weights (a 3x3 filter) slides over the image; at each position it multiplies the nine pixels under it by its nine weights and adds them up. The result, one number per position, is a feature map.",
    "Receptive field": "The patch of the input image that one value can see. It grows layer by layer: 3x3 after conv1, 10x10 after pool2, 22x22 after pool3.",
    "Feature map": "The output of one filter over the whole image: bright where the filter's pattern (an edge, a curve) is present.",
    "ReLU": "max(0, x): negative responses become zero, so only evidence for a pattern passes on.",
    "Max-pooling": "Keeps the largest value of each 2x2 block: the map halves in size and small shifts of the digit matter less.",
    "Dropout": "While training, each value is zeroed at random (20% after the conv layers, 50% after FC 625), so the network cannot lean on any single feature. Off when predicting.",
    "Flatten": "The 128 maps of 4x4 are laid out as one list of 2,048 numbers.",
    "Fully connected": "Every output unit weighs every input number: FC 625 combines all features, FC 10 gives one score per digit.",
    "Softmax": "Turns the ten scores into probabilities that add up to 1.",
    "Cross-entropy": "The loss: minus the log of the probability given to the right digit. Training makes it small.",
    "RMSProp": "The optimizer: each weight's step is its gradient divided by a running average of recent gradient sizes, so every weight learns at a sensible pace.",
}



def page() -> None:
    st.title("The CNN classroom")
    st.markdown(
        "A **convolutional neural network** reads handwritten digits. This app lets you watch one "
        "learn, look inside every layer, and test it with your own handwriting. It is the network of "
        "the classic TensorFlow MNIST tutorial: three convolution layers, two fully connected layers, "
        "1,378,698 weights. Plain softmax regression reaches about 92% on MNIST; this network about 99%.")
    model, card, run = active_model()
    accuracy = card.get("accuracy")
    left, middle, right = st.columns(3)
    left.metric("Active model", "bundled (ARTICLE)" if run == "bundled" else run)
    middle.metric("Test accuracy (10,000 images)", f"{100 * accuracy:.2f}%" if accuracy is not None else "-")
    right.metric("Trained for", f"{card.get('epochs', '?')} epochs, {format_seconds(card.get('wall_seconds'))}")
    st.page_link("pages/train.py", label="Train a network and watch it learn", icon=":material/model_training:")
    st.page_link("pages/draw.py", label="Draw a digit and see it read, live", icon=":material/draw:")
    st.page_link("pages/features.py", label="Look inside: feature maps and filters", icon=":material/grid_view:")

    st.subheader("The network, layer by layer")
    st.caption("Shapes are channels x height x width. Sizes shrink 28 -> 14 -> 7 -> 4 while the number of maps grows 32 -> 64 -> 128.")
    rows = [{"layer": r["name"], "output shape": " x ".join(map(str, r["shape"])),
             "weights": r["params"], "what it does": r["explanation"]} for r in layer_table()]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"what it does": st.column_config.TextColumn(width="large")})

    st.subheader("Words you will meet")
    for term, meaning in GLOSSARY.items():
        st.markdown(f"**{term}.** {meaning}")

    load_data_with_progress()


require_app_navigation()
page()
