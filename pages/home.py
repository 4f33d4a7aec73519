"""Home: what the app teaches, the network layer by layer, and the active model."""
from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import streamlit as st

from cnn.model import layer_table
from cnn.views import (active_model_words, card_model, card_epoch_images, format_seconds, glossary, markdown_table,
                       percent, plural, shape_story)
from pages.shared import is_teacher, load_data_with_progress, resolved_model

def model_facts(card: dict, run: str, source: str, words: dict) -> None:
    """The model the pages use: its name and what it is in words (it may be long), then short numbers for a projector."""
    name = "the bundled ARTICLE model, shipped with the app" if run == "bundled" else f"**{run}**"
    chooser = "you" if is_teacher() else "your teacher"
    whose = {"your choice": ", your own choice", "the class model": f", the class model {chooser} chose"}
    st.markdown(f"Active model: {name}{whose.get(source, '')}: {words['subject']}. Choose another on the Train page.")
    accuracy, epochs = card.get("accuracy"), card.get("epochs")
    left, middle, right = st.columns(3)
    left.metric("Test accuracy", percent(accuracy) if accuracy is not None else "-", help=words["accuracy_help"])
    middle.metric("Trained for", plural(epochs, "epoch") if isinstance(epochs, int) else "-", help=words["epoch_help"])
    right.metric("Training time", format_seconds(card.get("wall_seconds")),
                 help="Measured on the machine that trained it; pauses not counted.")


def page() -> None:
    st.title("The CNN classroom")
    st.markdown(
        "A **convolutional neural network** learns to read images: handwritten digits (MNIST) or clothes "
        "(Fashion-MNIST). This app lets you watch one learn, look inside every layer, compare it with simpler "
        "networks, and test it with your own drawings. Its heart is the network of the classic TensorFlow MNIST "
        "tutorial: three convolution layers, two fully connected layers, 1,378,698 weights. Plain softmax regression "
        "reaches about 92% on MNIST; this network about 99%.")
    model, card, run, source = resolved_model()
    words = active_model_words(*card_model(card), epoch_images=card_epoch_images(card))
    model_facts(card, run, source, words)
    st.page_link("pages/train.py", label="Train a network and watch it learn", icon=":material/model_training:")
    st.page_link("pages/draw.py", label=words["draw_link"], icon=":material/draw:")
    st.page_link("pages/features.py", label="Look inside: feature maps and filters", icon=":material/grid_view:")
    st.page_link("pages/compare.py", label="Compare networks: why convolution helps", icon=":material/compare:")

    st.subheader(f"The active network, layer by layer: {words['subject']}")
    table = layer_table(model)
    st.caption(shape_story(table) + " \"Sees\": the patch of the input one value depends on (its receptive field).")
    rows = [{"layer": r["name"], "output shape": "\u00a0x\u00a0".join(map(str, r["shape"])),  # never "64 x 7 x / 7"
             "sees": f"{r['receptive_field']}x{r['receptive_field']}",  # the input patch one value depends on
             "weights": r["params"], "what it does": r["explanation"]} for r in table]
    st.markdown(markdown_table(rows))  # a plain table: its explanations wrap, where a data grid cut them

    st.subheader("Words you will meet")
    for term, meaning in glossary().items():
        st.markdown(f"**{term}.** {meaning}")

    load_data_with_progress(model.dataset)


page()
