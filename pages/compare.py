"""Compare: finished runs side by side, and why convolution helps: accuracy on test images moved by 0-6 pixels."""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import streamlit as st

from cnn import compare
from cnn.checkpoint import dataset_refusal, default_runs_dir
from cnn.data import DATASETS
from cnn.runs import list_runs
from cnn.views import READABLE, extent, markdown_table
from pages.shared import (PERSIST, cached_checkpoint, chart_spec, checkpoint_problem, field, kept,
                          load_data_with_progress, loaded_checkpoint, progress_place, show_progress)

SHIFT_CAPTION = (f"Each of the first {compare.SHIFT_IMAGES:,} test images is moved right, left, down and up by 0 to "
                 f"{compare.SHIFTS[-1]} pixels (what comes in at the border is black); a point is the accuracy "
                 "averaged over the four directions.")


def choose_runs() -> tuple[str, list[compare.Candidate]]:
    """The dataset and the runs to compare, both kept across pages; a forged or stale choice is dropped here."""
    offered = compare.candidates(list_runs(default_runs_dir()))
    datasets = [name for name in DATASETS if any(c.dataset == name for c in offered)] or ["mnist"]
    if st.session_state.get(kept("compare_dataset")) not in datasets:
        st.session_state[kept("compare_dataset")] = datasets[0]
    dataset = st.selectbox("Dataset", datasets, format_func=lambda name: DATASETS[name].title,
                           key=kept("compare_dataset"), persist_state=PERSIST)
    mine = [c for c in offered if c.dataset == dataset]
    by_key = {c.key: c for c in mine}
    key = kept("compare_runs")
    if st.session_state.get("compare_default_for") != dataset or key not in st.session_state:
        st.session_state[key] = compare.default_choice(mine)  # a new dataset starts from its default set
        st.session_state.compare_default_for = dataset
    # A browser may send any list: each offered run once, in its order, whatever was forged (repeats would each
    # cost a full evaluation; by_key bounds the work by the runs that exist).
    st.session_state[key] = compare.offered_once(st.session_state[key], by_key)
    chosen = st.multiselect("Runs to compare", list(by_key), format_func=lambda k: by_key[k].label, key=key,
                            persist_state=PERSIST)
    return dataset, [by_key[k] for k in compare.offered_once(chosen, by_key)]


def load(candidate: compare.Candidate, dataset: str):
    """(model, card) through the server's shared cache, or our sentence when it cannot be used or (its file says)
    learned another dataset than the one compared."""
    if candidate.run:
        loaded = loaded_checkpoint(candidate.run)
    else:
        try:
            loaded = cached_checkpoint(candidate.checkpoint)
        except Exception as exc:  # noqa: BLE001 - a sentence of ours, never a library's message
            return checkpoint_problem(candidate.label, exc)
    return loaded if isinstance(loaded, str) else dataset_refusal(candidate.label, loaded[1], dataset) or loaded


def curves_of(runs: list[compare.ComparedRun], checkpoints: dict, data) -> dict[str, list[dict]]:
    """Each run's shift curve: kept ones read back, new ones measured once with a progress bar."""
    curves, place = {}, progress_place()
    for run in runs:
        curve = compare.read_curve(checkpoints[run.name], run.card)
        if curve is None:
            name = compare.shown_name(run.name)
            place.progress(0.0, text=f"Measuring {name} on shifted images (once per model)...")
            curve = compare.measured_curve(
                checkpoints[run.name], run.model, run.card, data.test_images, data.test_labels,
                progress=lambda f, m, name=name: show_progress(place, f, f"{name}: {m}"))
            place.empty()
        curves[run.name] = curve
    return curves


def shift_chart(values: list[dict], colors: dict) -> dict:
    """Accuracy (0-100%) over pixels shifted (0-6), one line per run; explicit domains, so Vega never sees no extent."""
    spec = chart_spec(values, {"type": "line", "point": {"size": 70}}, {
        "x": field("shift", "quantitative", title="pixels shifted", scale={"domain": [0, compare.SHIFTS[-1]]},
                   axis={"values": list(compare.SHIFTS), "format": "d"}),
        "y": field("accuracy", "quantitative", title="accuracy",
                   scale={"domain": [0, 1]}, axis={"format": "%"}),
        "color": field("network", "nominal", scale=colors, legend={"orient": "bottom", "title": None, "columns": 2,
                                                                   "labelLimit": 0}),
        "tooltip": [field("network", "nominal"), field("shift", "quantitative"),
                    field("accuracy", "quantitative", format=".1%")]},
        title="Accuracy on shifted test images", height=380)  # the height holds the title, axes and legend too
    return {**spec, "config": READABLE}


def per_class_chart(values: list[dict], class_names: list[str], networks: list[str]) -> dict:
    """A heat table: one row per run, one column per class, the accuracy written in each cell."""
    low, high = extent(values, "accuracy")
    spec = chart_spec(values, "rect", {
        # Every class named: Vega hides overlapping labels by default (every other one of Fashion-MNIST's).
        "x": field("class", "nominal", sort=class_names, title=None, axis={"labelAngle": 0 if len(
            max(class_names, key=len)) < 4 else -35, "orient": "top", "labelOverlap": False, "labelLimit": 0}),
        "y": field("network", "nominal", sort=networks, title=None, axis={"labelLimit": 0, "labelOverlap": False}),
    }, title="Accuracy per class (all test images)", height=100 + 40 * len(networks))  # title and labels, 40 px a row
    color = field("accuracy", "quantitative", scale={"domain": [low, high], "scheme": "viridis"}, legend=None)
    text = field("accuracy", "quantitative", format=".1%")
    ink = {"condition": {"test": f"datum.accuracy < {(low + high) / 2}", "value": "white"}, "value": "black"}
    layers = [{"mark": "rect", "encoding": {"color": color}},
              # Figures sized to their cells: 13 px on a projector, 8 on a phone, where ten share ~300 px.
              {"mark": {"type": "text", "fontSize": {"expr": f"clamp(width / {3.6 * len(class_names)}, 8, 13)"}},
               "encoding": {"text": text, "color": ink}}]
    slanted = len(max(class_names, key=len)) >= 4  # the last slanted name reaches past the chart's right edge
    return {**{k: v for k, v in spec.items() if k != "mark"}, "layer": layers, "config": READABLE,
            **({"padding": {"left": 5, "top": 5, "bottom": 5, "right": 45}} if slanted else {})}


def show(dataset: str, chosen: list[compare.Candidate]) -> None:
    """The table, the shift curves with what to see in them, and the per-class accuracy of the chosen runs."""
    data = load_data_with_progress(dataset)
    if data is None:
        return
    runs, checkpoints = [], {}
    for candidate in chosen:
        loaded = load(candidate, dataset)
        if isinstance(loaded, str):
            st.warning(loaded)
            continue
        runs.append(compare.ComparedRun(candidate.key, *loaded))
        checkpoints[candidate.key] = candidate.checkpoint
    if not runs:
        st.info("Choose at least one run to compare.")
        return
    try:
        rows = compare.comparison_rows(runs, test_data=(data.test_images, data.test_labels))
    except ValueError as exc:
        st.error(str(exc))
        return
    labels = [row["label"] for row in rows]
    st.markdown(markdown_table(compare.table_rows(rows)))
    st.caption("Trained: the epochs, and the training time each run's card recorded, on the machine that trained it. "
               "Accuracy: on all the test images.")
    curves = curves_of(runs, checkpoints, data)
    st.vega_lite_chart(spec=shift_chart(compare.shift_values(curves, compare.run_labels(runs)),
                                        compare.color_scale(labels)), width="stretch")
    st.caption(SHIFT_CAPTION)
    for sentence in compare.shift_sentences(runs, curves):
        st.markdown(sentence)
    values = compare.per_class_values(rows)
    if values:
        st.vega_lite_chart(spec=per_class_chart(values, list(data.spec.class_names), labels), width="stretch")
    else:
        st.caption("These runs' cards hold no per-class accuracy.")


st.title("Compare")
st.caption("The same data through different networks, side by side: softmax regression and an MLP see pixels, the "
           "convolutional networks see patterns. Move the test images a few pixels to see what convolution and "
           "pooling buy.")
show(*choose_runs())
