"""Train: start a run in the background, watch it live, compare runs, pick the active model."""
from __future__ import annotations

import streamlit as st

from cnn.checkpoint import default_runs_dir
from cnn.config import PRESETS
from cnn.runs import list_runs, read_filter_snapshots
from cnn.features import kernel_grid
from cnn.views import eval_rows, history_rows, live_step_rows, progress_summary, run_curves, step_rows, thin
from pages.shared import (active_run, chart_spec, checkpoint_for, field, job_manager, load_data_with_progress, owner_id,
                          set_active_run, require_app_navigation)

PRESET_LABELS = {"article": "ARTICLE (the tutorial)", "fast": "FAST (Adam, one cycle)", "softmax": "Softmax baseline"}


def start_form() -> None:
    preset_name = st.selectbox("Preset", list(PRESETS), format_func=PRESET_LABELS.get, key="preset")
    base = PRESETS[preset_name]
    with st.form("start", border=True):
        cols = st.columns(4)
        epochs = cols[0].number_input("Epochs", 1, 50, base.epochs)
        batch = cols[1].number_input("Batch size", 8, 1024, base.batch_size)
        lr = cols[2].number_input("Learning rate", 1e-5, 1.0, base.learning_rate, format="%.4f")
        seed = cols[3].number_input("Seed", 0, 10_000, base.seed)
        cols = st.columns(3)
        keep_conv = cols[0].slider("Keep-probability, conv", 0.1, 1.0, base.p_keep_conv, 0.05)
        keep_hidden = cols[1].slider("Keep-probability, hidden", 0.1, 1.0, base.p_keep_hidden, 0.05)
        name = cols[2].text_input("Run name", f"{preset_name}-{owner_id()[:4]}-{len(job_manager().jobs()) + 1}")
        if st.form_submit_button("Start", type="primary"):
            config = base.replace(epochs=int(epochs), batch_size=int(batch), learning_rate=float(lr),
                                  seed=int(seed), p_keep_conv=keep_conv, p_keep_hidden=keep_hidden)
            try:
                st.session_state.watch = job_manager().submit(config, name.strip(), owner_id())
            except ValueError as exc:
                st.error(str(exc))



def controls(job: dict) -> None:
    if job["owner"] != owner_id():
        st.caption("Started by another session: you can watch it; only that session can pause or stop it.")
        return
    manager, cols = job_manager(), st.columns(3)
    if job["status"] == "running" and cols[0].button("Pause", key=f"pause{job['id']}"):
        manager.pause(job["id"], owner_id())
    if job["status"] == "paused" and cols[0].button("Resume", key=f"resume{job['id']}"):
        manager.resume(job["id"], owner_id())
    if job["status"] in ("running", "paused", "queued") and cols[1].button("Stop", key=f"stop{job['id']}"):
        manager.stop(job["id"], owner_id())


def charts(steps: list[dict], evals: list[dict], run: str, height: int = 220) -> None:
    rows = live_step_rows(steps, run)  # 500 points per metric: enough for the eye, light to send every second
    left, right = st.columns(2)
    for column, metric in ((left, "training loss"), (right, "batch accuracy")):
        data = [r for r in rows if r["metric"] == metric]
        column.vega_lite_chart(spec=chart_spec(data, "line", {
            "x": field("step", "quantitative"), "y": field("value", "quantitative", title=metric),
            "color": field("run", "nominal")}, title=f"{metric} (smoothed)", height=height), width="stretch")
    left.vega_lite_chart(spec=chart_spec(eval_rows(evals, run), {"type": "line", "point": True}, {
        "x": field("step", "quantitative"), "y": field("accuracy", "quantitative", scale={"zero": False}),
        "color": field("test set", "nominal"),
        "tooltip": [field("step", "quantitative"), field("test set", "nominal"),
                    field("accuracy", "quantitative", format=".2%")]}, title="test accuracy", height=height),
        width="stretch")
    speed = [r for r in rows if r["metric"] == "images/s"]
    right.vega_lite_chart(spec=chart_spec(speed, "line", {
        "x": field("step", "quantitative"), "y": field("value", "quantitative", title="images/s")},
        title="images per second", height=height), width="stretch")


@st.fragment(run_every=1.0)
def live() -> None:
    jobs = job_manager().jobs()
    if not jobs:
        st.info("No training yet on this server. Choose a preset and press Start.")
        return
    statuses = {job["id"]: job["status"] for job in jobs}
    if statuses != st.session_state.setdefault("seen_statuses", statuses):
        st.session_state.seen_statuses = statuses
        st.rerun(scope="app")  # a run started or ended: the history and the model choice lie outside this fragment
    ids = [job["id"] for job in jobs]
    watched = st.session_state.get("watch", ids[0])
    labels = {job["id"]: f"{job['name']} ({job['status']}{', queued #' + str(job['queue_position']) if job['queue_position'] else ''})" for job in jobs}
    choice = st.selectbox("Watch run", ids, index=ids.index(watched) if watched in ids else 0, format_func=labels.get)
    st.session_state.watch = choice
    job = job_manager().snapshot(choice)  # only the watched run's history is copied
    summary = progress_summary(job)
    st.progress(summary["fraction"], text=summary["text"])
    if job["status"] == "failed":
        st.error(f"This run failed: {job['error']}")
    for problem in job["save_errors"]:
        st.warning(problem)
    controls(job)
    charts(job["steps"], job["evals"], job["name"])


def history() -> None:
    rows = history_rows(list_runs(default_runs_dir()), job_manager().jobs())
    st.dataframe([{k: v for k, v in r.items() if k != "has_model"} for r in rows], hide_index=True,
                 width="stretch", column_config={"accuracy": st.column_config.NumberColumn(format="percent")})
    chosen = st.multiselect("Overlay the curves of", [r["run"] for r in rows], key="overlay")
    if chosen:
        overlay(chosen)
    usable = [r["run"] for r in rows if r["run"] == "bundled" or (
        r["has_model"] and r["status"] in ("finished", "stopped", "interrupted"))]
    current = active_run() if active_run() in usable else "bundled"
    picked = st.selectbox("Active model (used by the other pages)", usable, index=usable.index(current))
    if picked != active_run():
        set_active_run(picked)
    downloads(picked)
    filter_replay(picked)


def overlay(names: list[str]) -> None:
    """Curves of several runs on one chart, e.g. ARTICLE vs FAST vs the softmax baseline."""
    steps, evals = [], []
    for name in names:
        run_steps, run_evals = run_curves(checkpoint_for(name).parent)
        steps += step_rows(run_steps, name, every=5)
        evals += eval_rows([e for e in run_evals if e["full"]], name)
    st.vega_lite_chart(spec=chart_spec(thin(evals), {"type": "line", "point": True}, {
        "x": field("step", "quantitative"), "y": field("accuracy", "quantitative", scale={"zero": False}),
        "color": field("run", "nominal")}, title="full test accuracy per epoch"), width="stretch")
    losses = thin([r for r in steps if r["metric"] == "training loss"], 3000)  # metric first: rows interleave
    st.vega_lite_chart(spec=chart_spec(losses, "line", {
        "x": field("step", "quantitative"), "y": field("value", "quantitative"), "color": field("run", "nominal")},
        title="training loss (smoothed)"), width="stretch")


def downloads(run: str) -> None:
    path = checkpoint_for(run)
    if not path.is_file():
        return
    cols = st.columns(2)
    cols[0].download_button("Download the model (.pt)", path.read_bytes(), file_name=f"{run}.pt")
    card = path.with_suffix(".json")
    if card.is_file():
        cols[1].download_button("Download its card (.json)", card.read_bytes(), file_name=f"{run}.json")


def filter_replay(run: str) -> None:
    snapshots = read_filter_snapshots(checkpoint_for(run).parent)
    if snapshots is None or len(snapshots[0]) == 0:
        return
    steps, filters = snapshots
    st.markdown("**How conv1's 32 filters changed while training** (blue negative, red positive)")
    index = st.slider("Snapshot at step", 0, len(steps) - 1, len(steps) - 1, format="%d", key=f"replay-{run}")
    st.image(kernel_grid(filters[index], columns=8, cell=36, limit=float(abs(filters).max()))[0],
             caption=f"step {int(steps[index])}", width=420)


require_app_navigation()
st.title("Train")
st.caption("Training runs in the background on the server: switch pages and come back, the charts keep growing.")
load_data_with_progress()
start_form()
live()
st.subheader("Run history")
history()
