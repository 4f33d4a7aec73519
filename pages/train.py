"""Train: start a run in the background, watch it live, compare runs, pick the active model."""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import json
import time

import streamlit as st

from cnn import classroom
from cnn.checkpoint import BUNDLED_MODELS, checkpoint_bytes, default_runs_dir
from cnn.config import PRESETS, form_config
from cnn.data import DATASETS
from cnn.features import history_folder, kernel_grid
from cnn.health import health_items, health_sentence
from cnn.jobs import step_cap_sentence
from cnn.model import NETWORKS, keep_probabilities
from cnn.runs import list_runs, read_filter_snapshots
from cnn.views import (ACTIVE_STATES, capitalised, card_model, card_steps_per_epoch, config_summary, dataset_line,
                       history_rows, history_state, job_label, live_charts, model_words, network_line, network_title,
                       overlay_charts, progress_summary, run_choice_labels, run_colors, run_curves, run_subject,
                       shown_runs, smoothing_note, started_watch, steps_per_epoch, watch_echo, watch_only_sentence,
                       watched_job)
from pages.shared import (PERSIST, active_run, browser_key, class_settings, class_settings_changed, client_address,
                          checkpoint_for, is_teacher, job_manager, kept, load_data_with_progress, loaded_checkpoint,
                          note_class_settings, owner_id, set_active_run)
from pages.train_form import FORM_MAX_EPOCHS, form_defaults, form_is_behind, given_run_name

PRESET_LABELS = {"article": "ARTICLE (the tutorial)", "fast": "FAST (Adam, one cycle)", "softmax": "Softmax baseline"}


def network_label(name: str) -> str:
    """"An MLP" for "mlp": the network's title as a menu item."""
    return capitalised(NETWORKS[name].title)


def model_choice(presets: tuple[str, ...]) -> tuple[str, str]:
    """The Dataset and Network choices, each with its line; returns (dataset, network).

    No on_change: form_defaults fills the form for a new choice (see pages/train_form.py for why not a callback)."""
    cols = st.columns(2)
    dataset = cols[0].selectbox("Dataset", tuple(DATASETS), format_func=lambda name: DATASETS[name].title,
                                key=kept("dataset"), persist_state=PERSIST)
    cols[0].caption(dataset_line(dataset))
    network = cols[1].selectbox("Network", classroom.trainable_networks(presets), format_func=network_label,
                                key=kept("network"), persist_state=PERSIST)
    cols[1].caption(network_line(network))
    return dataset, network


def start_form() -> None:
    """The Start form, with only what this session may start (a student on a class server: what the class allows)."""
    note_class_settings("train")  # before the settings are read: a save in between is seen at the next tick
    teacher, settings = is_teacher(), class_settings()
    presets = tuple(PRESETS) if teacher else classroom.student_presets(settings)
    rules = None if teacher else classroom.class_rules_sentence(settings)
    if not presets:
        st.info(rules)
        return
    # The Epochs field's limit is the same for everyone: a student who types more than the class allows gets the
    # server's sentence at Start (a lower limit only turned the field red, and Start ran the old value).
    max_epochs = (None if teacher else classroom.student_max_epochs(settings)) or FORM_MAX_EPOCHS
    preset_name, replaced = form_defaults(presets, max_epochs)
    dataset, network = model_choice(presets)
    load_data_with_progress(dataset)  # the first use of a dataset prepares it here, with a bar, not inside a run
    # Every preset this session may start is offered; one the network cannot take brings its own network.
    st.selectbox("Preset", presets, format_func=PRESET_LABELS.get, key=kept("preset"), persist_state=PERSIST)
    if rules:
        st.caption(rules)
    base = PRESETS[preset_name]
    manager = job_manager()
    # Plain widgets, not an st.form: a form's values reach the server only with its button, so a trip to another
    # page lost what was set but not yet started; each change now reaches the server and is kept.
    with st.container(border=True):
        cols = st.columns([1, 1, 1.3, 1])  # the learning rate's "0.0010" needs the room beside its +/- buttons
        epochs = cols[0].number_input("Epochs", 1, FORM_MAX_EPOCHS, key=kept("epochs"), persist_state=PERSIST)
        batch = cols[1].number_input("Batch size", 8, 1024, key=kept("batch"), persist_state=PERSIST)
        lr = cols[2].number_input("Learning rate", 1e-5, 1.0, format="%.4f", key=kept("lr"), persist_state=PERSIST)
        seed = cols[3].number_input("Seed", 0, 10_000, key=kept("seed"), persist_state=PERSIST)
        cols = st.columns([1, 1, 1.35])  # at 1024 px: ~30 characters of run name, the sliders' labels on one line
        keeps = keep_sliders(network, cols[:2], base)
        keep_conv, keep_hidden = keeps["p_keep_conv"], keeps["p_keep_hidden"]
        name = cols[2].text_input("Run name", key=kept("run_name"), persist_state=PERSIST)
        if teacher:  # a student's limit is the class's rule, said above; the server's step cap is the teacher's
            # The cap in the preset's words; a run over it gets the server's refusal sentence at Start.
            st.caption(step_cap_sentence(base, manager.settings.max_steps_per_run, manager.train_set_size(dataset),
                                         batch_size=batch))
        if st.button("Start", type="primary"):
            if replaced:
                st.warning("Your teacher has changed what students may start, so the form now shows what you may "
                           "start. Check it, then press Start again.")
                return
            try:
                config = form_config(base, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                                     p_keep_conv=keep_conv, p_keep_hidden=keep_hidden, architecture=network,
                                     dataset=dataset)
            except ValueError as exc:
                st.error(str(exc))
                return
            start(config, name.strip() if isinstance(name, str) else "")


def keep_sliders(network: str, cols, base) -> dict[str, float]:
    """A slider for each keep-probability the network's dropout uses (none for LeNet or softmax regression); a
    value it does not use stays as it was (the preset's, until changed), recorded on the card but never applied."""
    used = keep_probabilities(network)
    values = {}
    for col, (field_name, key) in zip(cols, (("p_keep_conv", "keep_conv"), ("p_keep_hidden", "keep_hidden"))):
        if field_name in used:
            values[field_name] = col.slider(used[field_name], 0.1, 1.0, step=0.05, key=kept(key), persist_state=PERSIST)
        else:
            values[field_name] = st.session_state.get(kept(key), getattr(base, field_name))
    if not used:
        cols[0].caption(f"{capitalised(network_title(network))} has no dropout: no keep-probabilities to set.")
    return values


def start(config, name: str) -> None:
    """Queue the run, or say in the server's sentence why not; on success the name moves on to a fresh default."""
    try:
        job_id = job_manager().submit(config, name, owner_id(), browser=browser_key(), address=client_address(),
                                      teacher=is_teacher())
    except ValueError as exc:
        st.error(str(exc))
        return
    st.session_state.watch_started = started_watch(st.session_state.get(kept("watch")), job_id, time.monotonic())
    st.session_state[kept("watch")] = job_id  # the live view follows the run just started
    st.session_state.watch_chosen = False  # and then whatever watched_job follows
    st.session_state.runs_started = st.session_state.get("runs_started", 0) + 1
    given_run_name(st.session_state[kept("run_name")])  # the field moves on to the next default
    st.rerun()  # redraw the form with the next default name, the live view on the new run


def controls(job: dict) -> None:
    """Pause/Resume and Stop for the run's own session, and for the teacher on every run."""
    teacher, mine = is_teacher(), job["owner"] == owner_id()
    if not mine and not teacher:
        st.caption(watch_only_sentence(job))
        return
    if not mine and job["status"] in ACTIVE_STATES:
        st.caption(f"Started by {job.get('started_by', 'another session')}: as the teacher you can pause or stop it.")
    manager, command = job_manager(), None
    # Side by side at the left: in the middle, Stop sat under the hover toolbar of the chart below it (walk).
    row = st.container(horizontal=True)
    if job["status"] == "running" and row.button("Pause", key=f"pause{job['id']}"):
        command = manager.pause
    if job["status"] == "paused" and row.button("Resume", key=f"resume{job['id']}"):
        command = manager.resume
    if job["status"] in ACTIVE_STATES and row.button("Stop", key=f"stop{job['id']}"):
        command = manager.stop
    if command is not None:
        try:
            command(job["id"], owner_id(), teacher=teacher)
        except (KeyError, PermissionError):  # the run was dropped meanwhile, or this session lost the right
            st.warning("That run can no longer be changed from here.")


def draw_charts(items: list[dict], columns: int = 2) -> None:
    """cnn.views chart items in a grid: a chart, or the sentence saying why there is none yet."""
    cols = st.columns(columns)
    for index, item in enumerate(items):
        column = cols[index % columns]
        if "spec" in item:
            column.vega_lite_chart(spec=item["spec"], width="stretch")
        else:
            column.markdown(f"**{item['title']}**")
            column.caption(item["sentence"])


def overlay_choice() -> list[str]:
    return list(st.session_state.get(kept("overlay")) or [])


def chose_watch() -> None:
    """The Watch run box's callback: the session picked a run itself, and the view stays on it (watched_job), unless
    the "pick" is a late tick's echo of the run a Start just moved the box from (watch_echo): then back to the new."""
    started = st.session_state.pop("watch_started", None)  # one echo at most
    if watch_echo(started, st.session_state.get(kept("watch")), time.monotonic()):
        st.session_state[kept("watch")] = started["new"]
        return
    st.session_state.watch_chosen = True


@st.fragment(run_every=1.0)
def live() -> None:
    manager = job_manager()
    jobs = manager.jobs()
    if (history_state(jobs) != st.session_state.get("history_state", history_state(jobs))
            or class_settings_changed("train")):
        # A run started or ended, or finished an epoch, since the history and the model choice (outside this
        # fragment) were drawn, or the teacher saved new class settings since the form was: a run of the whole page
        # redraws them, so a student sees what they may start now (and each run's epochs so far) without touching
        # the page. Asked for again on every tick until one has drawn them. Held for up to two ticks while the form
        # is behind its choice: this run's values may be a late echo, and the browser's own full run, or its next
        # tick, puts them right.
        held = st.session_state.get("history_held", 0)
        if form_is_behind() and held < 2:
            st.session_state.history_held = held + 1
        else:
            st.session_state.history_held = 0
            st.rerun(scope="app")
    if not jobs:
        st.info("Nothing is training on this server now. Choose a preset and press Start.")
        return
    ids = [job["id"] for job in jobs]
    current = st.session_state.get(kept("watch"))
    watch = watched_job(jobs, owner_id(), current, st.session_state.get("watch_chosen", False))
    st.session_state.watch_chosen = st.session_state.get("watch_chosen", False) and watch == current
    labels = {job["id"]: job_label(job) for job in jobs}
    # The box's value is its label, which says the run's status: "(running)", then "(finished)". A browser keeps the
    # old label and sends it with its next tick: no option has it, so the box fell back to its first option, another
    # run (walk; tests/test_browser_watch.py). Set again whenever the label changes, the new label goes to the box.
    if watch != current or labels.get(watch) != st.session_state.get("watch_label"):
        st.session_state[kept("watch")] = watch
    st.session_state.watch_label = labels.get(watch)
    choice = st.selectbox("Watch run", ids, format_func=labels.get, key=kept("watch"), persist_state=PERSIST,
                          on_change=chose_watch)
    job = manager.snapshot(choice)  # only the watched run's history is copied
    if job is None:
        return
    summary = progress_summary(job)
    st.progress(summary["fraction"], text=summary["text"])
    st.caption(run_subject(job["config"]))
    st.caption(config_summary(job["config"]))
    if job["status"] == "failed":
        st.error(f"This run failed: {job['error']}")
    elif job["error"]:  # e.g. dropped from the queue because the session that queued it has ended
        st.info(job["error"])
    for problem in job["save_errors"]:
        st.warning(problem)
    controls(job)
    if job["status"] == "queued":
        st.caption("Its charts start when it does.")
        return
    scale = run_colors(shown_runs(job["name"], overlay_choice()))
    train_size = manager.train_set_size(job["config"].get("dataset", "mnist"))
    draw_charts(live_charts(job, steps_per_epoch(job["config"]["batch_size"], train_size, job["config"].get("epoch_images", 0)), scale))
    note = smoothing_note({job["name"]: job["config"]})
    if note:
        st.caption(note)


@st.fragment(run_every=5.0)  # its own, slower beat: a dozen charts redrawn every second made the page's reruns lag
def layer_health() -> None:
    """The watched run's layers: gradient norms, dead ReLUs, the latest weight and output histograms, and a sentence."""
    job = job_manager().snapshot(st.session_state.get(kept("watch")))  # live() chose it (and checked it is listed)
    if job is None or job["status"] == "queued":
        return
    st.subheader("Layer health")
    health = job.get("health")
    if not health or not health.get("layers"):
        st.caption("Layer health is measured while the server trains a run; this run has none to show.")
        return
    if not health.get("latest"):  # the run has started, its first measure (at step 0) is being taken
        st.caption("Measuring the layers as they start...")
        return
    st.caption(health_sentence(health, job["config"]))
    lines, weights, outputs = health_items(health, job["config"])
    draw_charts(lines, columns=1)  # full width: one legend entry per layer fits on one line
    step = int(health["latest"].get("step", 0))
    st.caption("Each layer's weights, then its outputs before ReLU on the test subset, " + (
        f"at step {step:,} (bars) and at the start (grey steps), in the same bins." if step else
        "at the start (step 0): the next measure draws the start as grey steps beside it."))
    draw_charts(weights, columns=3)
    draw_charts(outputs, columns=3)


HISTORY_COLUMNS = ("run", "accuracy", "epochs", "time", "status", "preset", "network", "dataset")
# Pixels for the longest words a column holds, whole: "no epoch yet", "the article's first block alone",
# "Fashion-MNIST", "fast, changed" (the walk saw "no epoch ye", "the article's", "Fashion-MN"); the rest fit "small".
HISTORY_WIDTHS = {"accuracy": 100, "preset": 115, "network": 230, "dataset": 115}
HISTORY_HELP = {"preset": "The preset the run started from. \"changed\": its batch, learning rate or another setting "
                          "is not the preset's today (epochs, seed, network and dataset do not count)."}


def history() -> None:
    runs = list_runs(default_runs_dir())
    rows = history_rows(runs, job_manager().jobs())
    # What a class compares first, first: at 1024 px the table's right-hand columns need a sideways scroll.
    st.dataframe([{k: v for k, v in r.items() if k != "has_model"} for r in rows], hide_index=True,
                 width="stretch", column_order=HISTORY_COLUMNS,
                 column_config={"run": st.column_config.Column(pinned=True),  # stays in view when scrolled sideways
                                **{name: st.column_config.Column(width=HISTORY_WIDTHS.get(name, "small"),
                                                                 help=HISTORY_HELP.get(name))
                                   for name in HISTORY_COLUMNS[1:]}})
    names = [r["run"] for r in rows]
    # Kept across pages; a run no longer listed is dropped from the choice before the widget is drawn.
    st.session_state[kept("overlay")] = [name for name in overlay_choice() if name in names]
    chosen = st.multiselect("Overlay the curves of", names, key=kept("overlay"), persist_state=PERSIST)
    if chosen:
        overlay(chosen, {run.name: run.card for run in runs})
    # A failed run keeps the model.pt of its last completed epoch: it may be made active too (if it does not
    # load, the pages say so and fall back to the bundled model). Both bundled models are offered, MNIST's first.
    usable = [r["run"] for r in rows if r["run"] in BUNDLED_MODELS or (
        r["has_model"] and r["status"] in ("finished", "stopped", "interrupted", "failed"))]
    current = active_run() if active_run() in usable else "bundled"
    if st.session_state.get("active_model_choice") != current:
        # Keyed, so a new run in the list or a new choice keeps the widget; follows a fallback made elsewhere.
        st.session_state.active_model_choice = current
    labels = run_choice_labels(runs)  # a run that is not the article's CNN on MNIST says what it is
    picked = st.selectbox("Active model (used by the other pages)", usable, key="active_model_choice",
                          format_func=lambda name: labels.get(name, name),
                          on_change=lambda: set_active_run(st.session_state.active_model_choice))
    downloads(picked)
    filter_replay(picked)


def history_curves(run: str) -> tuple[list[dict], list[dict]]:
    """(steps, evaluations) a run recorded; none for the bundled Fashion model (models/metrics.jsonl is MNIST's)."""
    folder = history_folder(checkpoint_for(run))
    return run_curves(folder) if folder is not None else ([], [])


def overlay(names: list[str], cards: dict[str, dict | None]) -> None:
    """Curves of several runs on the epoch axis, e.g. ARTICLE vs FAST vs the softmax baseline (one legend)."""
    train_size = job_manager().train_set_size()
    curves = {name: (*history_curves(name), card_steps_per_epoch(cards.get(name), train_size)) for name in names}
    watched = next((job["name"] for job in job_manager().jobs() if job["id"] == st.session_state.get(kept("watch"))),
                   None)
    draw_charts(overlay_charts(curves, run_colors(shown_runs(watched, names))), columns=1)
    # What each curve trained: runs of different networks or datasets are compared here.
    st.caption("; ".join(f"{name}: {model_words(*card_model(cards.get(name)))}" for name in names) + ".")
    # The watched run's note is above already: say it here only for the other runs.
    note = smoothing_note({name: (cards.get(name) or {}).get("config") or {} for name in names if name != watched})
    if note:
        st.caption(note)


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
    st.caption(f"{run}: {model_words(*card_model(card))}.")  # what the downloaded file is, before it is saved
    cols = st.columns(2)
    cols[0].download_button("Download the model (.pt)", lambda: checkpoint_bytes(model, card), file_name=f"{run}.pt",
                            mime="application/octet-stream", on_click="ignore")
    cols[1].download_button("Download its card (.json)", json.dumps(card, indent=2), file_name=f"{run}.json",
                            mime="application/json", on_click="ignore")


def filter_replay(run: str) -> None:
    """conv1's filters at each saved step, from the random start (step 0) to the end (a network without conv1, none)."""
    folder = history_folder(checkpoint_for(run))  # None for the bundled Fashion model: models/' history is MNIST's
    snapshots = read_filter_snapshots(folder) if folder is not None else None
    if snapshots is None or len(snapshots[0]) == 0:
        return
    steps, filters = snapshots  # (K,), (K, maps, k, k): the article's 32 of 3x3, LeNet's 6 of 5x5
    st.markdown(f"**How conv1's {filters.shape[1]} filters of {filters.shape[2]}x{filters.shape[3]} changed while "
                "training** (blue negative, red positive)")
    options = [int(step) for step in steps]
    step = st.select_slider("Filters at step", options, value=options[-1], key=f"replay-{run}",
                            format_func=lambda s: f"{s:,}" + (" (random start)" if s == 0 else ""))
    index = options.index(step)
    st.image(kernel_grid(filters[index], columns=8, cell=36, limit=float(abs(filters).max()))[0],
             caption=f"step {step:,}" + (": the random weights, before any training" if step == 0 else ""),
             width="content")  # its own 306 px, never wider than the column: 420 px made a phone's page 436 px wide


st.title("Train")
st.caption("Training runs in the background on the server: switch pages and come back, the charts keep growing.")
start_form()
# What the history below is drawn for (it reads the server's runs after this: at worst newer, and one more run of
# the page follows); the live view asks for a run of the whole page whenever the runs' states differ from it.
st.session_state.history_state = history_state(job_manager().jobs())
live()
# Off until asked for: with its dozen charts always on, a choice of the active model below was sometimes lost (the
# Fashion-MNIST MLP browser test failed 3 times in 5; 0 in 6 without it).
st.session_state.setdefault(kept("health"), False)
if st.toggle("Show layer health (gradients, dead ReLUs, histograms)", key=kept("health"), persist_state=PERSIST):
    layer_health()
st.subheader("Run history")
history()
