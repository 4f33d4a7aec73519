"""Train: start a run in the background, watch it live, compare runs, pick the active model."""
from __future__ import annotations

import json
import secrets

import streamlit as st

from cnn.checkpoint import checkpoint_bytes, default_runs_dir
from cnn.config import PRESETS, form_config
from cnn.runs import list_runs, read_filter_snapshots
from cnn.features import kernel_grid
from cnn.jobs import run_steps
from cnn.views import eval_rows, history_rows, live_step_rows, progress_summary, run_curves, step_rows, thin
from pages.shared import (active_run, browser_key, chart_spec, client_address, checkpoint_for, field, job_manager,
                          is_teacher, load_data_with_progress, loaded_checkpoint, owner_id, require_app_navigation,
                          set_active_run)

PRESET_LABELS = {"article": "ARTICLE (the tutorial)", "fast": "FAST (Adam, one cycle)", "softmax": "Softmax baseline"}


def default_run_name(preset: str) -> str:
    """A fresh name for this session's next run: preset, a tag of this session, how many it started (+1).

    Computed from this session alone, so another session starting a run changes nothing here.
    """
    tag = st.session_state.setdefault("run_tag", secrets.token_hex(2))
    return f"{preset}-{tag}-{st.session_state.get('runs_started', 0) + 1}"


def _name_follows_preset() -> None:
    """A new preset gets a new default name, unless the student typed one (callback of the preset box)."""
    if st.session_state.get("run_name") == st.session_state.get("run_name_default"):
        st.session_state.new_run_name = True


def step_cap_caption(base, train_size: int, cap: int) -> str:
    """The server's step cap in the form's words: what fits at the preset's batch size."""
    per_epoch = run_steps(base.replace(epochs=1), train_size)
    return (f"This server trains at most {cap:,} steps per run (epochs x {train_size:,} images / batch size): "
            f"at batch {base.batch_size} that is up to {cap // per_epoch} epochs; a larger batch allows more.")


def start_form() -> None:
    preset_name = st.selectbox("Preset", list(PRESETS), format_func=PRESET_LABELS.get, key="preset",
                               on_change=_name_follows_preset)
    base = PRESETS[preset_name]
    if st.session_state.pop("new_run_name", False) or "run_name" not in st.session_state:
        # Set before the keyed field is drawn; the key keeps it (and what the student types) across reruns.
        st.session_state.run_name = st.session_state.run_name_default = default_run_name(preset_name)
    manager = job_manager()
    with st.form("start", border=True):
        cols = st.columns(4)
        epochs = cols[0].number_input("Epochs", 1, 50, base.epochs)
        batch = cols[1].number_input("Batch size", 8, 1024, base.batch_size)
        lr = cols[2].number_input("Learning rate", 1e-5, 1.0, base.learning_rate, format="%.4f")
        seed = cols[3].number_input("Seed", 0, 10_000, base.seed)
        cols = st.columns(3)
        keep_conv = cols[0].slider("Keep-probability, conv", 0.1, 1.0, base.p_keep_conv, 0.05)
        keep_hidden = cols[1].slider("Keep-probability, hidden", 0.1, 1.0, base.p_keep_hidden, 0.05)
        name = cols[2].text_input("Run name", key="run_name")
        # A form cannot change its limits while it is filled in: say the cap here; Start gets the refusal sentence.
        st.caption(step_cap_caption(base, manager.train_set_size(), manager.settings.max_steps_per_run))
        if st.form_submit_button("Start", type="primary"):
            try:
                config = form_config(base, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                                     p_keep_conv=keep_conv, p_keep_hidden=keep_hidden)
            except ValueError as exc:
                st.error(str(exc))
                return
            start(config, name.strip() if isinstance(name, str) else "")


def start(config, name: str) -> None:
    """Queue the run, or say in the server's sentence why not; on success the name moves on to a fresh default."""
    try:
        st.session_state.watch = job_manager().submit(config, name, owner_id(), browser=browser_key(),
                                                      address=client_address(), teacher=is_teacher())
    except ValueError as exc:
        st.error(str(exc))
        return
    st.session_state.runs_started = st.session_state.get("runs_started", 0) + 1
    st.session_state.new_run_name = True
    st.rerun()  # redraw the form with the next default name, the live view on the new run


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
    elif job["error"]:  # e.g. dropped from the queue because the session that queued it has ended
        st.info(job["error"])
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
    # A failed run keeps the model.pt of its last completed epoch: it may be made active too (if it does not
    # load, the pages say so and fall back to the bundled model).
    usable = [r["run"] for r in rows if r["run"] == "bundled" or (
        r["has_model"] and r["status"] in ("finished", "stopped", "interrupted", "failed"))]
    current = active_run() if active_run() in usable else "bundled"
    if st.session_state.get("active_model_choice") != current:
        # Keyed, so a new run in the list or a new choice keeps the widget; follows a fallback made elsewhere.
        st.session_state.active_model_choice = current
    picked = st.selectbox("Active model (used by the other pages)", usable, key="active_model_choice",
                          on_change=lambda: set_active_run(st.session_state.active_model_choice))
    downloads(picked)
    filter_replay(picked)


def overlay(names: list[str]) -> None:
    """Curves of several runs on one chart, e.g. ARTICLE vs FAST vs the softmax baseline."""
    steps, evals = [], []
    for name in names:
        curve_steps, run_evals = run_curves(checkpoint_for(name).parent)
        steps += step_rows(curve_steps, name, every=5)
        evals += eval_rows([e for e in run_evals if e["full"]], name)
    st.vega_lite_chart(spec=chart_spec(thin(evals), {"type": "line", "point": True}, {
        "x": field("step", "quantitative"), "y": field("accuracy", "quantitative", scale={"zero": False}),
        "color": field("run", "nominal")}, title="full test accuracy per epoch"), width="stretch")
    losses = thin([r for r in steps if r["metric"] == "training loss"], 3000)  # metric first: rows interleave
    st.vega_lite_chart(spec=chart_spec(losses, "line", {
        "x": field("step", "quantitative"), "y": field("value", "quantitative"), "color": field("run", "nominal")},
        title="training loss (smoothed)"), width="stretch")


def downloads(run: str) -> None:
    """Download buttons for a checkpoint that loads (checked, within the size limit), else a sentence why not.

    The bytes are made from the checked model only when the button is pressed (a callable), never read
    whole from runs/ on every rerun: a 1 GB file there used to cost every viewing session 1.2 GB.
    """
    loaded = loaded_checkpoint(run)
    if isinstance(loaded, str):
        st.caption(f"Nothing to download: {loaded}")
        return
    model, card = loaded
    cols = st.columns(2)
    cols[0].download_button("Download the model (.pt)", lambda: checkpoint_bytes(model, card), file_name=f"{run}.pt",
                            mime="application/octet-stream", on_click="ignore")
    cols[1].download_button("Download its card (.json)", json.dumps(card, indent=2), file_name=f"{run}.json",
                            mime="application/json", on_click="ignore")


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
