"""Teacher: every run with who started it, what students may start, the class model and the class handwriting set.

Listed in the menu for the teacher only; a student who opens /teacher gets a sentence. Logic lives in cnn/classroom.py.
"""
from __future__ import annotations

from pages.routing import require_app_navigation

require_app_navigation()  # first: a cold request for this page's URL reroutes before PyTorch loads

import streamlit as st

from cnn import classroom
from cnn.checkpoint import default_runs_dir
from cnn.classset import ClassSetError, default_class_dir, load_class_set, remove_sample, reset_class_set
from cnn.config import PRESETS, preset_label
from cnn.runs import list_runs
from cnn.views import config_model, model_note, plural, progress_summary, run_choice_labels
from pages.shared import (class_settings, is_teacher, job_manager, loaded_checkpoint, my_session_tag, owner_id,
                          show_pending_toast, toast_after_rerun)

THUMBNAILS_SHOWN = 40  # per digit: the class set may hold thousands
PRESET_NAMES = {"article": "ARTICLE", "fast": "FAST", "softmax": "Softmax"}  # short: they sit in a 1024 px form


@st.fragment(run_every=2.0)
def runs() -> None:
    """Every run in memory: active ones with Pause/Resume/Stop, ended ones in a table; Clear the queue."""
    show_pending_toast()  # "Dropped 2 queued runs." after this fragment's own rerun
    manager = job_manager()
    active, ended = classroom.run_rows(manager.jobs(), me=my_session_tag())
    if not active and not ended:
        st.info("No run has been started on this server yet.")
    for job in active:
        with st.container(border=True):
            note = model_note(*config_model(job["config"]))  # a run that is not the article's CNN on MNIST
            st.markdown(f"**{job['name']}** ({preset_label(job['config'])}{', ' + note if note else ''}), "
                        f"started by {job['started_by']}")
            st.caption(progress_summary(job)["text"])
            with st.container(horizontal=True):
                for action in job["actions"]:
                    if st.button(action, key=f"teacher-{action}-{job['id']}"):
                        act(manager, job["id"], action)
    if any(job["status"] == "queued" for job in active) and st.button("Clear the queue"):
        dropped = manager.clear_queue()
        toast_after_rerun(f"Dropped {plural(dropped, 'queued run')}.")
        st.rerun(scope="fragment")
    if ended:
        st.dataframe(ended, hide_index=True, width="stretch")


def act(manager, job_id: int, action: str) -> None:
    """Pause, resume or stop any session's run as the teacher; a run that ended meanwhile is just left alone."""
    command = {"Pause": manager.pause, "Resume": manager.resume, "Stop": manager.stop}[action]
    try:
        command(job_id, owner_id(), teacher=is_teacher())
    except (KeyError, PermissionError):
        st.warning("That run is no longer listed: it may have ended meanwhile.")
    st.rerun(scope="fragment")


def student_rules(settings: classroom.ClassSettings) -> None:
    """What students may start: a radio, the presets, the most epochs; saved for every session."""
    st.subheader("What students may start")
    st.caption(classroom.class_rules_sentence(settings) or "Students may start anything within the server's limits.")
    with st.form("rules"):
        choices = list(classroom.TRAINING_CHOICES)
        training = st.radio("Students may start", choices, index=choices.index(settings.student_training),
                            format_func=classroom.TRAINING_LABELS.get)
        presets = st.multiselect("Presets", list(PRESETS), default=list(settings.allowed_presets),
                                 format_func=PRESET_NAMES.get)
        epochs = st.number_input("Most epochs per run", 1, 50, min(settings.max_epochs, 50))
        if st.form_submit_button("Save"):
            save(lambda: classroom.settings_from_form(settings, training, presets, epochs))


def class_model(settings: classroom.ClassSettings) -> None:
    """The model every session uses until it picks its own on the Train page."""
    st.subheader("The class model")
    listed = list_runs(default_runs_dir())  # both bundled models (Fashion-MNIST's once its file is there) and runs
    choices = classroom.class_model_choices(listed)
    labels = run_choice_labels(listed)  # "bundled-fashion (the article's CNN on Fashion-MNIST, shipped with the app)"
    current = settings.class_model if settings.class_model in choices else classroom.BUNDLED
    with st.form("class-model"):
        picked = st.selectbox("Every session that has not chosen its own model uses", choices,
                              index=choices.index(current), format_func=lambda name: labels.get(name, name))
        if st.form_submit_button("Make it the class model"):
            loaded = loaded_checkpoint(picked) if picked in choices else "That run is not one of the finished runs."
            if isinstance(loaded, str):
                st.error(loaded)
            else:
                save(lambda: classroom.settings_from_form(settings, settings.student_training,
                                                          settings.allowed_presets, settings.max_epochs, picked))


def save(make_settings) -> None:
    """Write the class settings made by make_settings(), or say why not."""
    try:
        classroom.write_class_settings(default_runs_dir(), make_settings())
    except (ValueError, OSError) as exc:
        st.error(str(exc) if isinstance(exc, ValueError) else "The settings could not be saved on the server's disk.")
        return
    toast_after_rerun("Saved: every session uses it from now on.")
    st.rerun()


def class_set() -> None:
    """The class's handwriting: each drawing with a Delete button, per digit; a reset with a confirmation."""
    st.subheader("The class handwriting set")
    folder = default_class_dir()
    samples = load_class_set(folder)
    if not len(samples.labels):
        st.info("The class set is empty: students add drawings on the Draw page.")
        return
    digit = st.radio("Digit", list(range(10)), horizontal=True, key="teacher-digit")
    files = [(path, image) for path, image, label in zip(samples.files, samples.images, samples.labels)
             if label == digit][::-1][:THUMBNAILS_SHOWN]  # newest first
    st.caption(f"{plural(len(samples.labels), 'drawing')} in all; {sum(samples.labels == digit)} labelled {digit}"
               + (f", the newest {THUMBNAILS_SHOWN} shown." if len(files) == THUMBNAILS_SHOWN else "."))
    with st.container(horizontal=True, wrap=True):  # as many per row as the width holds (1024 px: 6)
        for path, image in files:
            thumbnail(folder, path, image)
    confirm_reset(folder, len(samples.labels))


def thumbnail(folder, path, image) -> None:
    """One drawing, 56 px, with its Delete button."""
    with st.container(width=84, gap=None):
        st.image(image, width=56)
        if st.button("Delete", key=f"delete-{path.name}"):
            try:
                remove_sample(folder, path.name)
            except ClassSetError:
                pass  # removed meanwhile (a student's Undo, another teacher tab): gone either way
            st.rerun()


def confirm_reset(folder, count: int) -> None:
    if not st.session_state.get("teacher_confirm_reset"):
        if st.button("Reset the class set", key="teacher-reset"):
            st.session_state.teacher_confirm_reset = True
            st.rerun()
        return
    st.warning(f"Delete {'the one drawing' if count == 1 else f'all {count:,} drawings'} of the class? "
               "This cannot be undone.")
    cols = st.columns(2)
    if cols[0].button("Yes, delete them all", type="primary", key="teacher-reset-confirm"):
        removed = reset_class_set(folder)
        st.session_state.teacher_confirm_reset = False
        toast_after_rerun(f"Deleted {plural(removed, 'drawing')}.")
        st.rerun()
    if cols[1].button("Cancel", key="teacher-reset-cancel"):
        st.session_state.teacher_confirm_reset = False
        st.rerun()


# Nothing secret: how a teacher gets in, for the one who finds this page locked (the walk looked for a way in).
TEACHER_HOW = ("Teacher? Open this app's address with `?teacher=` and your token after it: the token set in "
               "CNN_TEACHER_TOKEN, or the one the server printed when it started. It lasts until this tab is reloaded "
               "or closed.")


st.title("Teacher")
show_pending_toast()
if not is_teacher():
    st.info("This page is for the teacher. If you need a run stopped or more training, ask your teacher.")
    st.caption(TEACHER_HOW)
    st.stop()
st.caption("Runs of every session (a session is one browser tab: no names, no addresses), what students may start, "
           "the class model and the class's handwriting.")
st.subheader("Runs")
runs()
settings = class_settings()
student_rules(settings)
class_model(settings)
class_set()
