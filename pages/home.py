"""Home: what the app teaches, the network layer by layer, and the active model."""
import streamlit as st

from cnn.model import layer_table
from cnn.views import active_model_words, card_model, format_seconds, markdown_table, percent, plural, shape_story
from pages.shared import is_teacher, load_data_with_progress, require_app_navigation, resolved_model

GLOSSARY = {
    "Convolution": "A small grid of weights (a 3x3 filter) slides over the image; at each position it multiplies the nine pixels under it by its nine weights and adds them up. The result, one number per position, is a feature map.",
    "Receptive field": "The patch of the input image that one value can see. It grows layer by layer: 3x3 after conv1, 10x10 after pool2, 22x22 after pool3.",
    "Feature map": "The output of one filter over the whole image: bright where the filter's pattern (an edge, a curve) is present.",
    "ReLU": "max(0, x): negative responses become zero, so only evidence for a pattern passes on.",
    "Max-pooling": "Keeps the largest value of each 2x2 block: the map halves in size and small shifts of the digit matter less.",
    "Dropout": "While training, each value is zeroed at random (20% after the conv layers, 50% after FC 625, in ARTICLE), so the network cannot lean on any single feature. Off when predicting. FAST's single epoch does without it.",
    "Flatten": "The 128 maps of 4x4 are laid out as one list of 2,048 numbers.",
    "Fully connected": "Every output unit weighs every input number: FC 625 combines all features, FC 10 gives one score per digit.",
    "Softmax": "Turns the ten scores into probabilities that add up to 1.",
    "Epoch": "One pass over all 60,000 training images. ARTICLE trains for 10 epochs, FAST for 1.",
    "Batch": "The handful of images (128 for ARTICLE and FAST) the network looks at before it changes its weights once.",
    "Step": "One change of the weights, after one batch. An epoch is 60,000 / batch size steps: 469 for batches of "
            "128, 938 for batches of 64. That is why the Train page compares runs by epoch, not by step.",
    "Learning rate": "How big each step is. Too big and the network jumps past good weights; too small and it "
                     "learns very slowly.",
    "Loss": "A score of how wrong the network is on a batch: minus the log of the probability it gave the right "
            "digit (cross-entropy). 0 means sure and right; training pushes it down.",
    "Label smoothing": "Training against a softer answer key: 91% \"it's a 7\" and 1% for each other digit, instead "
                       "of 100% \"7\". It stops the network from becoming over-sure. Its loss can then never reach 0 "
                       "(about 0.5 is the best possible), so FAST's loss levels off there.",
    "RMSProp": "The optimizer: each weight's step is its gradient divided by a running average of recent gradient sizes, so every weight learns at a sensible pace.",
}



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
    words = active_model_words(*card_model(card))
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
    for term, meaning in GLOSSARY.items():
        st.markdown(f"**{term}.** {meaning}")

    load_data_with_progress(model.dataset)


require_app_navigation()
page()
