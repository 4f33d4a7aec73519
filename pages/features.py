"""Feature maps and filters: what every layer of the active model computes for one chosen image."""
from __future__ import annotations

import os

import numpy as np
import streamlit as st
import torch

from cnn.features import (STAGES, activations, colour_bar, confusion_counts, confusion_matrix, convolution_at, enlarge,
                          hidden_strip, kernel_grid, kernels, maps_grid)
from cnn.runs import epoch_checkpoints, read_predictions
from pages.shared import (active_model, cached_checkpoint, checkpoint_for, data_holder, field, probability_chart,
                          require_app_navigation, uploaded_digit)


CHANNELS = {1: 32, 2: 64, 3: 128}


@st.cache_resource(max_entries=8)
def computed_predictions(version: str, _model, _data) -> np.ndarray:
    """(N,) predicted digits of one checkpoint version on the test images, computed once per server.

    Only for checkpoints whose run kept no predictions (the bundled model, runs from before they were kept).
    """
    return confusion_matrix(_model, _data.test_images, _data.test_labels)[1]


def test_predictions(folder, epoch: int | None, version: str, model, data) -> np.ndarray:
    """(N,) predicted digits on the test images: those training kept (model.pt's, or epoch-K.pt's), else computed.

    Reading the kept ones makes the time-travel slider cheap (computing took 3-4.6 s per move on a
    10-epoch run, and the cache above holds only 8 checkpoints).
    """
    kept = kept_predictions(folder, epoch, len(data.test_labels))
    return kept if kept is not None else computed_predictions(version, model, data)


def kept_predictions(folder, epoch: int | None, count: int) -> np.ndarray | None:
    """The predictions training wrote beside a checkpoint, if any and if they fit a test set of count digits."""
    kept = read_predictions(folder, epoch)  # None for none or an invalid file: then they are computed
    return kept if kept is not None and kept.shape == (count,) else None


def confusion_spec(matrix: np.ndarray, height: int = 320) -> dict:
    """A (10, 10) [true, predicted] count matrix as a Vega-Lite heat map with the counts written in each cell."""
    cells = [{"true": str(t), "predicted": str(p), "count": int(matrix[t, p])} for t in range(10) for p in range(10)]
    return {"data": {"values": cells}, "height": height,
            "encoding": {"x": field("predicted", "nominal"), "y": field("true", "nominal")},
            "layer": [{"mark": "rect", "encoding": {"color": field("count", "quantitative", scale={"type": "symlog"})}},
                      {"mark": "text", "encoding": {"text": field("count", "quantitative")}}]}


def choose_image(model, kept: tuple, version: str) -> tuple[np.ndarray, str] | None:
    data = data_holder().load()
    sources = ["Test set", "Sent from Draw", "Upload"]
    if st.session_state.pop("image_source", None) == "sent":  # just sent from the Draw page
        st.session_state.image_source_radio = "Sent from Draw"
    source = st.radio("Image", sources, horizontal=True, key="image_source_radio")
    if source == "Sent from Draw":
        chosen = st.session_state.get("chosen_image")
        if chosen is None:
            st.info("Nothing sent yet: on the Draw page, draw a digit and press 'Look inside'.")
            return None
        return np.array(chosen["image"], dtype=np.uint8), chosen["label"]
    if source == "Upload":
        uploaded = uploaded_digit("A photo of one digit (PNG or JPEG, up to 2 MB)")
        if uploaded is None:
            return None
        steps, name = uploaded
        return steps["centred"], f"upload {name}"
    if data is None:
        st.warning("MNIST is not available, so the test set cannot be shown; draw or upload a digit instead.")
        return None
    how = st.radio("Pick", ["by index", "by digit", "misclassified"], horizontal=True, key="pick")
    labels = data.test_labels.numpy()
    if how == "by digit":
        digit = st.selectbox("Digit", range(10), key="digit")
        candidates = np.nonzero(labels == digit)[0]
    elif how == "misclassified":
        predicted = test_predictions(*kept, version, model, data)
        candidates = np.nonzero(predicted != labels)[0]
    else:
        candidates = np.arange(len(labels))
    if len(candidates) == 0:
        st.info("None: this model reads every test image right.")
        return None
    st.session_state.test_pick = min(int(st.session_state.get("test_pick", 0)), len(candidates) - 1)
    st.button("Random", key="random", on_click=lambda: st.session_state.update(
        test_pick=int(np.random.default_rng().integers(len(candidates)))))
    pick = st.number_input(f"Which of {len(candidates):,}", 0, len(candidates) - 1, key="test_pick")
    index = int(candidates[pick])
    st.session_state.test_index = index
    return data.test_images[index].numpy(), f"test image #{index} (label {labels[index]})"


def show_maps(model, acts: dict) -> int:
    cols = st.columns(3)
    layer = cols[0].radio("Layer", [1, 2, 3], horizontal=True, format_func=lambda i: f"conv{i} ({CHANNELS[i]} maps)", key="layer")
    stage = cols[1].radio("Stage", list(STAGES), horizontal=True, format_func=STAGES.get, key="stage")
    per = cols[2].radio("Colours", ["map", "layer"], horizontal=True, format_func=lambda p: f"per {p}", key="per")
    maps = acts[f"{stage}{layer}"]
    grid, low, high = maps_grid(maps, per=per)
    st.image(grid, caption=f"conv{layer}, {STAGES[stage]}: {maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]}", width="stretch")
    st.image(colour_bar(low, high), caption=f"colour scale: {low:.3f} (dark) to {high:.3f} (bright)"
             + (" - each map is stretched to its own range" if per == "map" else ""), width=256)
    index = st.number_input("Enlarge map number", 0, maps.shape[0] - 1, 0, key="map_index")
    chosen = maps[index]
    left, right = st.columns([1, 2])
    left.image(enlarge(maps_grid(chosen[None], per="map", columns=1)[0][2:-2, 2:-2], 280), width=280,
               caption=f"map {index}: min {chosen.min():.3f}, max {chosen.max():.3f}")
    right.dataframe(np.round(chosen, 2), height=300)
    return layer


def show_filters(model, layer: int) -> None:
    st.subheader(f"The filters of conv{layer}")
    channel = 0
    if layer > 1:
        channel = st.slider("Input channel (each filter has one 3x3 kernel per input map)", 0, CHANNELS[layer - 1] - 1, 0, key="in_channel")
    weights = kernels(model, layer, channel)
    grid, limit = kernel_grid(weights)
    st.image(grid, width="stretch", caption=f"{weights.shape[0]} kernels reading input channel {channel}; blue negative, white 0, red positive (±{limit:.3f})")
    if layer == 1:
        st.dataframe({f"filter {k}": [" ".join(f"{v:+.2f}" for v in row) for row in weights[k]] for k in range(32)}, hide_index=True)


def show_convolution(model, acts: dict, layer: int) -> None:
    st.subheader("One convolution, by hand")
    size = acts[f"conv{layer}"].shape[-1]
    cols = st.columns(3)
    channel = cols[0].number_input("Map", 0, CHANNELS[layer] - 1, 0, key="conv_map")
    row = cols[1].number_input("Row", 0, size - 1, size // 2, key="conv_row")
    col = cols[2].number_input("Column", 0, size - 1, size // 2, key="conv_col")
    result = convolution_at(model, acts, layer, int(channel), int(row), int(col))
    best = int(np.argmax(np.abs(result["per_channel"])))
    shown = 0 if layer == 1 else best
    cols = st.columns(3)
    cols[0].markdown(f"**3x3 patch of {result['input']}**" + (f" (channel {shown})" if layer > 1 else ""))
    cols[0].dataframe(np.round(result["patch"][shown], 3))
    cols[1].markdown("**kernel**")
    cols[1].dataframe(np.round(result["kernel"][shown], 3))
    cols[2].markdown("**products**")
    cols[2].dataframe(np.round(result["products"][shown], 4))
    if layer == 1:
        st.markdown(f"Sum of the nine products = **{result['total']:.4f}**; conv1 map {channel} at ({row}, {col}) before ReLU = **{result['value']:.4f}**.")
    else:
        st.markdown(f"conv{layer} reads {len(result['per_channel'])} input maps, so the nine products are summed in each of them "
                    f"(shown: channel {shown}, the largest contribution, {result['per_channel'][shown]:+.4f}) and the "
                    f"{len(result['per_channel'])} sums are added: **{result['total']:.4f}** = the map's value before ReLU, **{result['value']:.4f}**.")


def show_output(acts: dict) -> None:
    left, right = st.columns(2)
    left.image(enlarge(hidden_strip(acts["fc"]), 250), caption="FC 625 activations (25x25, bright = strong)", width=250)
    right.vega_lite_chart(spec=probability_chart(acts["probabilities"], height=250), width="stretch")


def show_confusion(model, kept: tuple, version: str) -> None:
    data = data_holder().load()
    if data is None:
        return
    st.subheader("Where the model goes wrong: confusion matrix on the 10,000 test images")
    predicted = test_predictions(*kept, version, model, data)
    matrix = confusion_counts(data.test_labels.numpy(), predicted)
    st.vega_lite_chart(spec=confusion_spec(matrix), width="stretch")
    st.caption(f"{int(np.trace(matrix)):,} of {int(matrix.sum()):,} right ({np.trace(matrix) / matrix.sum():.2%}).")
    cols = st.columns(2)
    true = cols[0].selectbox("True digit", range(10), key="cm_true")
    guess = cols[1].selectbox("Read as", range(10), index=(true + 1) % 10, key="cm_pred")
    found = np.nonzero((data.test_labels.numpy() == true) & (predicted == guess))[0]
    st.caption(f"{len(found)} test images")
    thumbs = st.columns(10)
    for i, index in enumerate(found[:20]):
        thumbs[i % 10].image(data.test_images[index].numpy(), width=56, caption=f"#{index}")
        thumbs[i % 10].button("show", key=f"cm-{index}", on_click=_show_test_image, args=(int(index),))


def _show_test_image(index: int) -> None:
    """Make test image #index the page's image (a callback: runs before the widgets are drawn)."""
    st.session_state.update(image_source_radio="Test set", pick="by index", test_pick=index, image_source="test")


def travel_in_time(model, final) -> tuple:
    """(model, checkpoint path, epoch or None for the final model) chosen on the time-travel slider."""
    epochs = epoch_checkpoints(final.parent)
    if not epochs:
        return model, str(final), None
    epoch = st.select_slider("Training time travel: the model as it was after epoch", list(epochs) + ["final"],
                             value="final")
    if epoch == "final":
        return model, str(final), None
    try:
        past, _ = cached_checkpoint(epochs[epoch])
    except Exception:  # noqa: BLE001 - an odd file in runs/ must not end the page
        st.warning(f"The checkpoint of epoch {epoch} cannot be read; showing the final model.")
        return model, str(final), None
    return past, str(epochs[epoch]), epoch


def page() -> None:
    st.title("Feature maps and filters")
    model, card, run = active_model()
    if not hasattr(model, "conv1"):
        st.warning("The active model is the softmax baseline: it has no convolution layers to show. Choose a CNN run on the Train page.")
        return
    final = checkpoint_for(run)
    model, checkpoint, epoch = travel_in_time(model, final)
    version = f"{checkpoint}@{os.path.getmtime(checkpoint)}"  # computed predictions are cached per file version
    kept = (final.parent, epoch)  # where training kept this checkpoint's test predictions
    chosen = choose_image(model, kept, version)
    if chosen is None:
        return
    image, label = chosen
    acts = activations(model, torch.from_numpy(image.astype(np.float32) / 255.0)[None, None])
    st.image(enlarge(image, 140), width=140)
    st.caption(f"Input: {label}, read as {int(np.argmax(acts['probabilities']))}.")
    layer = show_maps(model, acts)
    show_filters(model, layer)
    show_convolution(model, acts, layer)
    show_output(acts)
    show_confusion(model, kept, version)


require_app_navigation()
page()
