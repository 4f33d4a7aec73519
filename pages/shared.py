"""Shared app state: MNIST and the job manager are read-only/shared (st.cache_resource); the active model is per session."""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import streamlit as st
import torch

from cnn.checkpoint import BUNDLED_MODEL, CheckpointError, default_runs_dir, load_checkpoint, run_dir
from cnn.data import MNIST, DataError, load_mnist
from cnn.drawing import UploadError, preprocess_steps, read_upload
from cnn.jobs import JobManager


class DataHolder:
    """Loads MNIST once per server, for every session; remembers a failure's sentence."""

    def __init__(self):
        self._lock = threading.Lock()
        self.data: MNIST | None = None
        self.error: str = ""

    def load(self, progress=None) -> MNIST | None:
        with self._lock:
            if self.data is None:
                try:
                    self.data = load_mnist(progress=progress)
                    self.error = ""
                except DataError as exc:
                    self.error = str(exc)
            return self.data

    def require(self) -> MNIST:
        """For the training worker: the data, or DataError with the sentence."""
        data = self.load()
        if data is None:
            raise DataError(self.error)
        return data


@st.cache_resource
def data_holder() -> DataHolder:
    return DataHolder()


@st.cache_resource
def job_manager() -> JobManager:
    # Training would take every core; leave one for the students' strokes (measured by scripts/loadtest.py).
    torch.set_num_threads(int(os.environ.get("CNN_TRAIN_THREADS", max(1, (os.cpu_count() or 2) - 1))))
    holder = data_holder()
    return JobManager(holder.require, runs_dir=default_runs_dir(),
                      max_running=int(os.environ.get("CNN_MAX_TRAININGS", "1")))


@st.cache_resource(max_entries=16)
def _cached_checkpoint(path: str, modified: float):
    """(model, card) per checkpoint file and version; shared and never mutated (eval mode, inference only)."""
    return load_checkpoint(path)


def cached_checkpoint(path: str | Path):
    """(model, card) of a checkpoint file, cached per file version."""
    return _cached_checkpoint(str(path), Path(path).stat().st_mtime)


def owner_id() -> str:
    """This browser session's id: it owns the runs it starts."""
    if "owner" not in st.session_state:
        st.session_state.owner = uuid.uuid4().hex
    return st.session_state.owner


def load_data_with_progress() -> MNIST | None:
    """MNIST, showing a progress bar the first time; shows the clear sentence and returns None on failure."""
    holder = data_holder()
    if holder.data is None and not holder.error:
        bar = st.progress(0.0, text="Preparing MNIST (first start only)...")
        holder.load(progress=lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message))
        bar.empty()
    if holder.data is None:
        st.error(f"MNIST is not available: {holder.error}")
    return holder.data


def checkpoint_for(run: str) -> Path:
    return BUNDLED_MODEL if run == "bundled" else run_dir(run, default_runs_dir()) / "model.pt"


def active_run() -> str:
    return st.session_state.get("active_run", "bundled")


def set_active_run(run: str) -> None:
    st.session_state.active_run = run


def active_model():
    """(model, card, run name) of this session's active model; falls back to the bundled one with a note."""
    run = active_run()
    try:
        path = checkpoint_for(run)
        model, card = _cached_checkpoint(str(path), path.stat().st_mtime)
        return model, card, run
    except (CheckpointError, OSError, ValueError) as exc:
        if run != "bundled":
            st.warning(f"The model of run {run!r} could not be loaded ({exc}); using the bundled model.")
            set_active_run("bundled")
        path = BUNDLED_MODEL
        model, card = _cached_checkpoint(str(path), path.stat().st_mtime)
        return model, card, "bundled"


def send_to_feature_maps(image, label: str) -> None:
    """Make a (28, 28) uint8 image the Feature maps page's chosen image, and go there."""
    st.session_state.chosen_image = {"image": image.tolist(), "label": label}
    st.session_state.image_source = "sent"
    st.switch_page("pages/features.py")


def require_app_navigation() -> None:
    """Send a visitor who opened a page's URL before app.py ever ran back through app.py.

    Streamlit treats a folder named pages/ as old-style pages until app.py calls st.navigation;
    a first request for /draw after a restart would run the page alone, with file names as menu.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get("routed_by_app"):
        PagesManager.uses_pages_directory = False  # what app.py's st.navigation would have set
        st.rerun()  # now app.py runs, routes, and shows the page that was asked for


def uploaded_digit(label: str, key: str | None = None) -> tuple[dict, str] | None:
    """A PNG/JPEG upload through the Draw pipeline: (preprocess_steps, file name), or None after saying why."""
    upload = st.file_uploader(label, type=["png", "jpg", "jpeg"], key=key)
    if upload is None:
        return None
    try:
        steps = preprocess_steps(read_upload(upload.getvalue(), upload.name))
    except UploadError as exc:
        st.error(str(exc))
        return None
    if steps is None:
        st.warning("No digit found in that picture: it looks blank. Try a darker pen or a closer photo.")
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


def probability_chart(probabilities, height: int = 200) -> dict:
    """The ten softmax probabilities as bars on a fixed 0-1 scale (a Vega-Lite spec for st.vega_lite_chart)."""
    data = [{"digit": str(d), "probability": float(p)} for d, p in enumerate(probabilities)]
    return chart_spec(data, "bar", {
        "x": field("digit", "nominal", sort=None),
        "y": field("probability", "quantitative", scale={"domain": [0, 1]}),
        "tooltip": [field("digit", "nominal"), field("probability", "quantitative", format=".1%")]}, height=height)
