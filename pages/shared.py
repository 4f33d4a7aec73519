"""Shared app state: MNIST and the job manager are read-only/shared (st.cache_resource); the active model is per session."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import uuid
from pathlib import Path

import streamlit as st

from cnn import classroom
from cnn.checkpoint import BUNDLED_MODEL, BUNDLED_MODELS, CheckpointError, default_runs_dir, load_checkpoint, run_dir
from cnn.data import DataError, ImageDataset, dataset_spec, load_dataset
from cnn.drawing import UploadError, no_ink_in_photo, read_upload_steps
from cnn.jobs import JobManager
from cnn.classroom import ClassSettings, read_class_settings
from cnn.sessions import SessionRegistry, browser_key_from, session_tag
from cnn.settings import ServerSettings, configure_threads, server_settings
from cnn.train import keep_freed_memory
from pages.media import keep_replaced_media
from pages.routing import page_list


def app_pages() -> list:
    """The st.Page list of the app for this session (pages/routing.py's, the Teacher page listed for the teacher)."""
    return page_list(is_teacher())


@st.cache_resource
def server_startup() -> ServerSettings:
    """Read the class server's settings and set torch's threads, once per server process.

    Raises ValueError with a sentence for a bad CNN_* variable (not cached, so a fixed variable is read again).
    """
    settings = server_settings()
    log_engine_messages()
    configure_threads(settings)  # training would take every core; one stays for the students' strokes
    keep_freed_memory()  # a page's pass over the test set, not only a training, reuses its freed blocks
    teacher_token()  # a bad CNN_TEACHER_TOKEN stops the app with its sentence; a made one is printed now
    from streamlit import runtime

    if runtime.exists():  # a real server (not a script run by a test harness)
        keep_replaced_media(runtime.get_instance().media_file_mgr)
    return settings


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when a line comes (a test harness swaps and closes its own;
    a line from a background thread must not land on a closed one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_engine_messages() -> None:
    """The engine's log lines (cnn.*, INFO and up) on the server's terminal, once per process."""
    engine = logging.getLogger("cnn")
    if not engine.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s cnn: %(message)s"))
        engine.addHandler(handler)
        engine.setLevel(logging.INFO)


# ---------------------------------------------------------------- the teacher

TEACHER_KEY = "class_teacher"  # session_state flag; no widget has this key (a forged widget id cannot set it)


def server_address() -> str | None:
    """Streamlit's server.address ("" or None: every interface, Streamlit's default)."""
    return st.get_option("server.address")


def chosen_token() -> str | None:
    """CNN_TEACHER_TOKEN as set ("" counts as unset)."""
    return os.environ.get(classroom.TOKEN_VARIABLE, "").strip() or None


def is_class_server() -> bool:
    """Whether students may connect here: a teacher token is set, the server listens beyond loopback, or this
    session came through a reverse proxy (which makes every student look like loopback)."""
    return classroom.is_class_server(server_address(), chosen_token()) or came_through_proxy()


def came_through_proxy() -> bool:
    try:
        headers = st.context.headers
    except Exception:  # no client context (a bare run): nobody else is connected
        return False
    return classroom.forwarded(headers)


def teacher_token() -> str | None:
    """The class server's teacher token: CNN_TEACHER_TOKEN, else one made once per server and printed with the link.

    None on a laptop bound to loopback with no token (its one user is the teacher). ValueError with a sentence
    for a token that is too short.
    """
    token = chosen_token()
    if token:
        if classroom.token_problem(token):
            raise ValueError(classroom.token_problem(token))
        return token
    if not is_class_server():
        return None
    return made_token()


@st.cache_resource
def made_token() -> str:
    """A token made once per server, printed once to the terminal (never shown on a page)."""
    token = classroom.new_token()
    link = classroom.teacher_link(classroom.link_host(server_address()), st.get_option("server.port"), token)
    print(classroom.teacher_link_sentence(link), file=sys.stderr, flush=True)
    return token


def claim_teacher() -> None:
    """Make this session the teacher's when its address carries the right ?teacher=TOKEN, then take the token out
    of the address bar (a projector must never show it). A wrong token: a sentence; the session stays a student.

    Session only: a reload starts a new session, and the teacher opens the link again.
    """
    token = teacher_token()  # made (and printed) on the first run that finds a class server
    offered = st.query_params.get(classroom.TEACHER_PARAMETER)
    if offered is None:
        return
    del st.query_params[classroom.TEACHER_PARAMETER]
    if not is_class_server():
        return  # on a laptop everyone is the teacher already
    if classroom.token_matches(offered, token):
        st.session_state[TEACHER_KEY] = True
    else:
        logging.getLogger(__name__).warning("A session opened the app with a wrong teacher token.")
        st.warning("That teacher link is not right: this page works as a student's. "
                   "Ask the teacher for the link the server printed.")


def is_teacher() -> bool:
    """Whether this session is the class's teacher (on a laptop bound to loopback, the one user is)."""
    return not is_class_server() or bool(st.session_state.get(TEACHER_KEY, False))


def class_settings() -> ClassSettings:
    """The class's settings as the teacher saved them (runs/classroom.json; the defaults until then)."""
    return read_class_settings(default_runs_dir())


def toast_after_rerun(message: str) -> None:
    """Show message as a toast in this session's next run: one shown right before st.rerun() is dropped by Streamlit
    1.67 now and then (streamlit/streamlit#7740, fixed after 1.67), and the teacher saw no "Saved"."""
    st.session_state.pending_toast = message


def show_pending_toast() -> None:
    """The toast toast_after_rerun asked for, once."""
    message = st.session_state.pop("pending_toast", None)
    if isinstance(message, str):
        st.toast(message)


def note_class_settings(page: str) -> None:
    """Remember which save of the class's settings page was drawn for (call before reading them)."""
    st.session_state[f"settings_drawn.{page}"] = classroom.settings_stamp(default_runs_dir())


def class_settings_changed(page: str) -> bool:
    """Whether the teacher saved the class's settings (on any replica) since page was drawn: a fragment of page asks
    for a run of the whole page, which draws what the settings decide (the rules, the class model)."""
    now = classroom.settings_stamp(default_runs_dir())
    return now != st.session_state.get(f"settings_drawn.{page}", now)


def my_session_tag() -> str:
    """This session's tag as job views show it ("session 3f2a"), so a student can find their own runs."""
    return session_tag(owner_id())


class DataHolder:
    """Loads one dataset once per server, for every session; remembers a failure's sentence."""

    def __init__(self, dataset: str = "mnist"):
        self._lock = threading.Lock()
        self.spec = dataset_spec(dataset)
        self.data: ImageDataset | None = None
        self.error: str = ""

    def load(self, progress=None) -> ImageDataset | None:
        with self._lock:
            if self.data is None:
                try:
                    self.data = load_dataset(self.spec.name, progress=progress)
                    self.error = ""
                except DataError as exc:
                    self.error = str(exc)
            return self.data

    def require(self) -> ImageDataset:
        """For the training worker: the data, or DataError with the sentence."""
        data = self.load()
        if data is None:
            raise DataError(self.error)
        return data


@st.cache_resource
def data_holder(dataset: str = "mnist") -> DataHolder:
    """The server's one holder of dataset (a DATASETS key: check it before calling; the cache keeps one per key)."""
    return DataHolder(dataset)


def require_data(dataset: str) -> ImageDataset:
    """The job manager's loader: dataset's data, or DataError with the sentence."""
    return data_holder(dataset_spec(dataset).name).require()


def session_connected(session_id: str) -> bool:
    """Whether a browser session is connected now: Streamlit's Runtime.is_active_session (thread-safe).

    A closed tab is inactive at once (kept a while for a reconnect, which reuses the id). Outside a running
    server (the CLI, a unit test) nothing can be told, so every session counts as connected.
    """
    from streamlit import runtime  # not in Streamlit's documented API: pinned and checked by tests/test_app_pages.py

    return not runtime.exists() or bool(runtime.get_instance().is_active_session(session_id))


def current_session_id() -> str | None:
    """The id of the Streamlit session this script run serves, or None outside a run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx  # pinned and checked like session_connected

    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else None


@st.cache_resource
def session_registry() -> SessionRegistry:
    return SessionRegistry(connected=session_connected)


@st.cache_resource
def job_manager() -> JobManager:
    """The server's one job manager, with the class server's caps; queued runs of a closed session are dropped."""
    return JobManager(require_data, runs_dir=default_runs_dir(), settings=server_startup(),
                      session_alive=session_registry().alive)


@st.cache_resource(max_entries=16)
def _cached_checkpoint(path: str, modified: float):
    """(model, card) per checkpoint file and version; shared and never mutated (eval mode, inference only)."""
    return load_checkpoint(path)


def cached_checkpoint(path: str | Path):
    """(model, card) of a checkpoint file, cached per file version."""
    return _cached_checkpoint(str(path), os.stat(path).st_mtime)


def owner_id() -> str:
    """This browser session's id: it owns the runs it starts (registered with its Streamlit session)."""
    if "owner" not in st.session_state:
        st.session_state.owner = uuid.uuid4().hex
        session_id = current_session_id()
        if session_id is not None:
            session_registry().register(st.session_state.owner, session_id)
    return st.session_state.owner


def browser_key() -> str:
    """This browser's key for the per-browser run cap (see browser_key_from)."""
    try:
        cookies = st.context.cookies
    except Exception:  # no client context (e.g. a bare run): fall back to the session
        cookies = {}
    return browser_key_from(cookies, owner_id())


def client_address() -> str | None:
    """The network address this session connects from, for the per-computer run cap (None on the server's own
    loopback, where the one user is the teacher). Streamlit reads it from the socket, or (its uvicorn trusts a
    proxy on 127.0.0.1) from the X-Forwarded-For a proxy there sets: scripts/replicas.py's nginx sets the socket's."""
    try:
        address, headers = st.context.ip_address, st.context.headers
    except Exception:  # no client context (e.g. a bare run)
        return None
    if not isinstance(address, str):  # no socket address (loopback), or a test harness's stand-in
        address = None
    if address is None and classroom.forwarded(headers):
        # A client on the server's machine that came through the proxy: Streamlit says None, which turned the
        # per-computer cap off for it. The proxy's own record of the client counts instead.
        return classroom.proxied_client(headers)
    return address


# The slow part of the Draw page's answer (its chart, explanation, pictures and buttons), run by one session at a
# time per core. Twenty light load-test students, each drawing a digit every 2 s, left both cores ~70% idle while a
# stroke's answer waited 287 ms (p50; p95 691 ms) in the server's queue before the event loop sent it: every session's
# thread ran its explanation's torch operations at once, each hands the GIL over on every operation, and the thread
# that sends every session's messages waited its turn among them all. With two sessions at a time in this part the
# answer left the queue in 5 ms (p50; p95 58 ms). README, "How much one server holds", has the load tests.
ANSWER_TAIL_SLOTS = max(1, os.cpu_count() or 1)
_ANSWER_TAILS = threading.BoundedSemaphore(ANSWER_TAIL_SLOTS)


@contextlib.contextmanager
def answer_tail_slot():
    """Hold one of ANSWER_TAIL_SLOTS while drawing what follows an answer; released however the block ends (a newer
    stroke stops a run at its next element, by an exception)."""
    _ANSWER_TAILS.acquire()
    try:
        yield
    finally:
        _ANSWER_TAILS.release()


def progress_place():
    """The place of a slow first measurement's progress bar (and of the spinner while it waits its turn), drawn on
    every run of its page: empty when nothing is measured. A bar drawn only in the runs that measure moved every
    element after it by one place, and the browser drew those anew (a value being typed was lost; a chart flickered)."""
    return st.empty()


def show_progress(place, fraction: float, text: str):
    """place's bar at fraction (clamped to [0, 1]: a measure's rounding can report 1.0000001, which st.progress
    refuses) with text; returns the bar."""
    return place.progress(min(max(float(fraction), 0.0), 1.0), text=text)


def load_data_with_progress(dataset: str = "mnist") -> ImageDataset | None:
    """The dataset, showing a progress bar the first time; shows the clear sentence and returns None on failure.

    The bar has its place on every run, empty once the data is there. A bar drawn in one run and not in the next moved
    every element after it up by one, and the browser drew those widgets anew: a value being typed in one was lost
    (test_browser_train: a batch size typed just after Fashion-MNIST's first load came back as 128, 1 run in 3)."""
    holder = data_holder(dataset_spec(dataset).name)
    place = progress_place()
    if holder.data is None and not holder.error:
        bar = place.progress(0.0, text=f"Preparing {holder.spec.title} (first use only)...")
        holder.load(progress=lambda fraction, message: show_progress(bar, fraction, message))
        place.empty()
    if holder.data is None:
        st.error(f"{holder.spec.title} is not available: {holder.error}")
    return holder.data


def checkpoint_for(run: str) -> Path:
    """The model.pt of run: a bundled model's file ("bundled", "bundled-fashion") or runs/<run>/model.pt."""
    return BUNDLED_MODELS[run] if run in BUNDLED_MODELS else run_dir(run, default_runs_dir()) / "model.pt"


def loaded_checkpoint(run: str):
    """(model, card) of a run's model.pt through the shared cache, or the sentence saying why it cannot be used.

    Any error counts (not only CheckpointError): an odd file in runs/ must never end a page with Streamlit's
    redacted error, for this session or any other.
    """
    try:
        path = checkpoint_for(run)
        return _cached_checkpoint(str(path), path.stat().st_mtime)
    except Exception as exc:  # noqa: BLE001 - the sentence below is what the user needs; the log keeps the rest
        return checkpoint_problem(run, exc)


def checkpoint_problem(run: str, exc: BaseException) -> str:
    """Our sentence for a run whose model cannot be loaded: the checkpoint's own sentence, or a plain one.

    Only CheckpointError carries a sentence of ours; any other message (a library's, a server path) stays out.
    A forged name is shown cut to 60 characters: a browser can send 100 kB.
    """
    run = run if not isinstance(run, str) or len(run) <= 64 else run[:60] + "..."
    if isinstance(exc, CheckpointError) and str(exc):
        return f"The model of run {run!r} cannot be used: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"The model of run {run!r} cannot be used: it has no model.pt yet."
    return f"The model of run {run!r} cannot be used: its model.pt is not a checkpoint this app can read."


def active_run() -> str:
    """The run this session uses: its own choice if it made one, else the class model (which may not load)."""
    own = st.session_state.get("active_run")
    return own if isinstance(own, str) else class_settings().class_model


def set_active_run(run: str) -> None:
    st.session_state.active_run = run


MODEL_SOURCES = ("your choice", "the class model", "the bundled model")


def resolved_model():
    """(model, card, run name, source) of this session's model; source is one of MODEL_SOURCES.

    Its own choice if it made one and it loads (else a warning, and the choice is forgotten), else the class
    model the teacher chose if it loads, else the bundled one. Any error of a run falls back, never ends the page.
    """
    own = st.session_state.get("active_run")
    if isinstance(own, str):
        loaded = loaded_checkpoint(own)
        if not isinstance(loaded, str):
            return (*loaded, own, MODEL_SOURCES[0])
        del st.session_state["active_run"]  # the session follows the class's model again
        fallback = class_model()
        st.warning(f"{loaded} Using {fallback[3]} instead.")
        return fallback
    return class_model()


def class_model():
    """(model, card, run name, source): the class model the teacher chose if it loads, else the bundled one."""
    chosen = class_settings().class_model
    if chosen != "bundled":
        loaded = loaded_checkpoint(chosen)
        if not isinstance(loaded, str):
            return (*loaded, chosen, MODEL_SOURCES[1])
    path = BUNDLED_MODEL
    model, card = _cached_checkpoint(str(path), path.stat().st_mtime)
    return model, card, "bundled", MODEL_SOURCES[2]


def active_model():
    """(model, card, run name) of this session's model: see resolved_model."""
    return resolved_model()[:3]


def active_model_source() -> str:
    """Which model the pages use, in words: "your choice", "the class model" or "the bundled model"."""
    return resolved_model()[3]


def send_to_feature_maps(image, label: str, page: str = "pages/features.py") -> None:
    """Make a (side, side) uint8 image the chosen image of Feature maps and Inside the network (they share it), and
    go to page."""
    st.session_state.chosen_image = {"image": image.tolist(), "label": label}
    st.session_state.image_source = "sent"
    st.switch_page(page)


# Streamlit forgets a widget's value when a run does not draw it (a page switch). A choice that must survive a trip
# to another page has a key made by kept() and passes persist_state=PERSIST (Streamlit's own switch; re-assigning
# the value from app.py does not keep it in 1.67). Its default comes from st.session_state.setdefault(key, ...),
# never from value=/index= (Streamlit warns when a widget has both a default and a value set through session state).
KEPT = "kept."
PERSIST = "session"


def kept(name: str) -> str:
    """The widget key for a choice that survives page switches (pass persist_state=PERSIST with it)."""
    return KEPT + name


def uploaded_digit(label: str, key: str | None = None, spec=None) -> tuple[dict, str] | None:
    """A PNG/JPEG upload through the Draw pipeline: (preprocess_steps, file name), or None after saying why.

    spec: the model's DatasetSpec, whose recipe prepares the picture (MNIST's by default)."""
    upload = st.file_uploader(label, type=["png", "jpg", "jpeg"], key=key)
    if upload is None:
        return None
    spec = spec or dataset_spec("mnist")
    try:
        steps = read_upload_steps(upload.getvalue(), upload.name, spec)  # decoded once per file, not on every rerun
    except UploadError as exc:
        st.error(str(exc))
        return None
    if steps is None:
        st.warning(no_ink_in_photo(spec))
        return None
    return steps, upload.name


# Charts are plain Vega-Lite specs, not altair objects: altair validates every chart against its schema,
# ~17 ms of Python per chart (measured), which every stroke and every second of the live Train page paid
# while holding the GIL that all students' sessions share.

def field(name: str, kind: str, **extra) -> dict:
    """One Vega-Lite encoding channel: kind is quantitative, nominal, ..."""
    return {"field": name, "type": kind, **extra}


def chart_spec(values: list[dict], mark: str | dict, encoding: dict, *, title: str | None = None,
               height: int | None = None) -> dict:
    spec = {"data": {"values": values}, "mark": mark, "encoding": encoding}
    if title:
        spec["title"] = title
    if height:
        spec["height"] = height
    return spec


NAME_ROOM = 90  # px that class names standing on end under their bars take ("Ankle boot"): added to the height


def probability_chart(probabilities, height: int = 200, class_names=None, class_word: str = "digit") -> dict:
    """The softmax probabilities as bars on a fixed 0-1 scale, in the classes' order (a Vega-Lite spec for
    st.vega_lite_chart); class_names: the model's dataset's ("0"-"9" by default), class_word: the axis's title.

    height: for the bars and short names; names longer than two characters stand on end below and get NAME_ROOM
    more (without it Fashion-MNIST's squashed every chart of this height to a 15 px plot)."""
    names = [str(n) for n in class_names] if class_names is not None else [str(d) for d in range(len(probabilities))]
    if max((len(name) for name in names), default=0) > 2:
        height += NAME_ROOM
    data = [{class_word: name, "probability": float(p)} for name, p in zip(names, probabilities)]
    return chart_spec(data, "bar", {
        "x": field(class_word, "nominal", sort=None),
        "y": field("probability", "quantitative", scale={"domain": [0, 1]}),
        "tooltip": [field(class_word, "nominal"), field("probability", "quantitative", format=".1%")]}, height=height)
