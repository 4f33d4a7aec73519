"""AppTest: every page renders with the bundled model and no exception; the Train form starts and refuses.

Tests of pages that load MNIST (Home, Train, Feature maps) are marked `mnist`: they need the real data set.
"""
import ast
import io
import json
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")
PAGE_SOURCES = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()  # a fresh job manager that uses this test's runs folder
    from streamlit import config
    address = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")  # a laptop: its one user is the teacher (test_classroom.py
    # sets CNN_TEACHER_TOKEN for a class server)
    yield AppTest.from_file(APP, default_timeout=120)
    config.set_option("server.address", address)
    from pages.shared import job_manager
    try:
        job_manager().stop_all()
    except ValueError:  # a test that set a bad CNN_* variable: no job manager could be built
        pass
    st.cache_resource.clear()


def save_run(runs, name: str, status: str = "finished", config=None, **card_fields):
    """A run folder with a real, loadable model.pt (fresh weights) and its card, as training leaves it."""
    from cnn.checkpoint import make_card, save_checkpoint
    from cnn.config import ARTICLE
    from cnn.model import build_model

    config = config or ARTICLE
    model = build_model(config)
    card = make_card(config, model, status=status, epochs=1, steps=10, accuracy=0.5, run=name, **card_fields)
    save_checkpoint(runs / name / "model.pt", model, card)
    return model


def bundled_model_predictions(real_mnist) -> torch.Tensor:
    """(10000,) digits the bundled model predicts for the test images, computed here with the model called
    directly: the reference the pages' numbers are checked against, independent of the card and of cnn.train."""
    from cnn.checkpoint import BUNDLED_MODEL, load_checkpoint

    model, _ = load_checkpoint(BUNDLED_MODEL)
    with torch.no_grad():
        return torch.cat([model(batch.float().div(255).unsqueeze(1)).argmax(1)
                          for batch in real_mnist.test_images.split(1000)])


# ---------------------------------------------------------------- Home

@pytest.mark.mnist
def test_home_page_accuracy_is_the_bundled_models_measured_accuracy(app, real_mnist):
    # Measured here, independently of the card the page reads: the bundled model on all 10,000 test images.
    predicted = bundled_model_predictions(real_mnist)
    measured = 100 * (predicted == real_mnist.test_labels).double().mean().item()
    assert len(real_mnist.test_labels) == 10_000

    app.run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert any(m.value.startswith("Active model: the bundled ARTICLE model") for m in app.markdown)
    shown = float(metrics["Test accuracy"].rstrip("%"))
    assert shown == pytest.approx(measured, abs=0.005 + 1e-9), (shown, measured)
    assert shown >= 99.0
    assert metrics["Trained for"] == "10 epochs"  # short enough for a projector; the time has its own metric
    table = layer_rows(app)
    assert [row["layer"] for row in table][:4] == ["input", "conv1", "relu1", "pool1"]
    assert sum(int(row["weights"].replace(",", "")) for row in table) == 1_378_698
    from cnn.model import layer_table  # each explanation whole, in a cell that wraps
    assert [row["what it does"] for row in table] == [layer["explanation"] for layer in layer_table()]
    sees = {row["layer"]: row["sees"] for row in table}  # receptive fields, worked out by hand for the article
    assert (sees["input"], sees["conv1"], sees["pool1"], sees["pool2"], sees["pool3"], sees["fc"]) == (
        "1x1", "3x3", "4x4", "10x10", "22x22", "28x28")


def layer_rows(app) -> list[dict]:
    """The Home page's layer table, read back from its Markdown (a table whose cells wrap, not a data grid)."""
    text = next(m.value for m in app.markdown if m.value.startswith("| layer |"))
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]
    return [dict(zip(lines[0], cells)) for cells in lines[2:]]


def test_home_page_glossary_explains_the_words_of_training(app):
    app.run()
    assert not app.exception
    terms = [m.value.split(".**")[0].lstrip("*") for m in app.markdown if m.value.startswith("**")]
    for term in ("Epoch", "Batch", "Step", "Learning rate", "Loss", "Label smoothing"):
        assert term in terms, term


# ---------------------------------------------------------------- Train: the form

@pytest.mark.mnist
def test_train_page_renders_and_refuses_a_bad_run_name(app):
    app.switch_page("pages/train.py").run()
    assert not app.exception
    app.text_input(key="kept.run_name").set_value("../../etc")  # sent with the click below
    app.button[0].click().run()  # Start
    assert not app.exception
    assert any("not a valid run name" in e.value for e in app.error)


@pytest.mark.mnist
def test_train_page_starts_a_run_in_the_background(app):
    from pages.shared import job_manager

    app.switch_page("pages/train.py").run()
    app.selectbox(key="kept.preset").set_value("fast").run()
    assert app.text_input(key="kept.run_name").value.startswith("fast-")  # the default follows the preset
    app.text_input(key="kept.run_name").set_value("apptest-run")
    app.button[0].click().run()
    assert not app.exception and not app.error
    jobs = job_manager().jobs()
    assert [job["name"] for job in jobs] == ["apptest-run"] and jobs[0]["preset"] == "fast"
    assert jobs[0]["status"] in ("queued", "running")
    assert app.text_input(key="kept.run_name").value != "apptest-run"  # a fresh default for the next run
    # The run's owner is this session's id, registered with the Streamlit session that started it.
    from pages.shared import session_registry
    assert jobs[0]["owner"] == app.session_state["owner"]
    assert session_registry().session_of(jobs[0]["owner"]) == "test session id"  # AppTest's one session


@pytest.mark.mnist
def test_a_default_run_name_carries_the_session_tag_the_teacher_page_shows(app):
    from cnn.sessions import session_tag
    from pages.shared import job_manager

    app.switch_page("pages/train.py").run()
    tag = session_tag(app.session_state["owner"])  # "session 3f2a", by the Teacher page's run and in job views
    assert re.fullmatch(r"session [0-9a-f]{4}", tag)
    assert app.text_input(key="kept.run_name").value == f"article-{tag.split()[-1]}-1"
    app.button[0].click().run()  # Start
    started = next(job for job in job_manager().jobs() if job["name"] == f"article-{tag.split()[-1]}-1")
    assert started["session"] == tag
    assert app.text_input(key="kept.run_name").value == f"article-{tag.split()[-1]}-2"  # the next default


@pytest.mark.mnist
def test_run_name_is_kept_when_another_session_starts_a_run(app):
    from cnn.config import SOFTMAX
    from pages.shared import job_manager

    app.switch_page("pages/train.py").run()
    default = app.text_input(key="kept.run_name").value
    job_manager().submit(SOFTMAX.replace(epochs=1), "someone-else", "another-session")  # another student's Start
    app.run()
    assert app.text_input(key="kept.run_name").value == default  # the field did not reset under the student's hands
    app.text_input(key="kept.run_name").set_value("my-own-name")
    job_manager().submit(SOFTMAX.replace(epochs=1), "someone-else-2", "another-session")
    app.button[0].click().run()  # Start, after yet another session started a run
    assert not app.exception and not app.error
    assert "my-own-name" in [job["name"] for job in job_manager().jobs()]  # Start used what the student typed


@pytest.mark.mnist
def test_the_live_view_follows_the_teachers_new_run_until_the_session_picks_one(app):
    """A class watching the teacher's run: each new run the teacher starts takes over the view, another student's
    does not, and a run the session picked from the list itself stays (walk: the view stayed on a finished run)."""
    from cnn.config import FAST
    from pages.shared import job_manager

    manager = job_manager()
    fast = FAST.replace(epochs=2)  # what a student may start; ~25 s a run here, and one trains at a time
    app.switch_page("pages/train.py").run()
    first = manager.submit(fast, "a-student-run", "student-1", teacher=False)
    app.run()
    watch = app.selectbox(key="kept.watch")
    assert watch.value == first  # nothing of its own or the teacher's: the only run there is
    teachers = manager.submit(fast, "teachers-run", "teacher-tab", teacher=True)
    app.run()
    assert app.selectbox(key="kept.watch").value == teachers
    manager.submit(fast, "another-student-run", "student-2", teacher=False)
    app.run()
    assert app.selectbox(key="kept.watch").value == teachers  # another student's new run does not take the view
    app.selectbox(key="kept.watch").set_value(first).run()  # the session picks a run itself
    assert not app.exception
    newer = manager.submit(fast, "teachers-next-run", "teacher-tab", teacher=True)
    assert {job["id"]: job["status"] for job in manager.jobs()}[newer] in ("queued", "running")
    app.run()
    assert app.selectbox(key="kept.watch").value == first  # the pick holds
    assert not app.exception and not app.error


def is_layout_style(element) -> bool:
    """app.py's layout style (a hidden markdown element). AppTest ran app.py only in the first run after a
    switch_page (the next ran the page alone), so it is there in one run and not the next; a browser's run always has
    it. Tests that compare runs leave it out."""
    return type(element).__name__ == "Markdown" and str(element.value).startswith("<style id='classroom-layout'>")


def element_path(node, key: str, path: tuple = ()) -> tuple | None:
    """Where the widget with this key sits in AppTest's element tree: its index in each block down to it, app.py's
    layout style not counted."""
    children = getattr(node, "children", {})
    styles = [index for index, child in children.items() if is_layout_style(child)]
    for index, child in children.items():
        if index in styles:
            continue
        index -= sum(1 for style in styles if style < index)
        if getattr(child, "key", None) == key:
            return path + (index,)
        found = element_path(child, key, path + (index,))
        if found is not None:
            return found
    return None


@pytest.mark.mnist
def test_the_train_forms_widgets_keep_their_place_when_the_data_has_loaded(app):
    """The first run of a page that loads a dataset draws its progress bar; the next has the data. The form's
    widgets must sit at the same place in both: a bar in one run and not the next moved them, the browser drew them
    anew, and a batch size typed meanwhile was lost (test_browser_train, 1 run in 3 when Fashion-MNIST loaded)."""
    from pages.shared import data_holder

    assert data_holder("mnist").data is None  # a fresh server's holder (the fixture cleared Streamlit's cache)
    app.switch_page("pages/train.py").run()
    first = element_path(app.main, "kept.batch")
    assert data_holder("mnist").data is not None  # the first run loaded it, with its bar
    app.run()
    assert first is not None and element_path(app.main, "kept.batch") == first
    assert not app.exception and not app.error


def test_a_late_tick_carrying_the_old_run_does_not_pin_the_view_after_a_second_start(app):
    """A student's second Start moves the Watch run box to the new run; a live tick the browser sent before it saw
    that carries the first run back as if picked, and the view stayed pinned on the first run (2 of ~14 runs of a
    browser test). The echo is undone once; a pick of the first run after it holds."""
    from pages.shared import job_manager

    app.switch_page("pages/train.py").run()
    app.selectbox(key="kept.preset").set_value("fast").run()
    app.number_input(key="kept.epochs").set_value(3).run()  # long enough to still train when the second queues
    app.button[0].click().run()  # Start
    first = job_manager().jobs()[0]["id"]
    assert app.selectbox(key="kept.watch").value == first
    app.button[0].click().run()  # Start again: queued behind the first
    second = job_manager().jobs()[0]["id"]
    assert second != first and app.selectbox(key="kept.watch").value == second
    app.selectbox(key="kept.watch").set_value(first).run()  # the late tick's echo, within a second of the Start
    assert app.selectbox(key="kept.watch").value == second
    app.run()  # the next tick: the box stays on the new run
    assert app.selectbox(key="kept.watch").value == second
    app.selectbox(key="kept.watch").set_value(first).run()  # the student picks the first run: it holds
    app.run()
    assert app.selectbox(key="kept.watch").value == first
    assert not app.exception and not app.error


@pytest.mark.mnist
def test_opening_draw_starts_the_not_a_digit_fit_before_any_stroke(app, monkeypatch):
    """The check's ~5 s fit starts when the page is drawn, in the background, for the page's model and its data;
    it used to start at the first stroke, competing with the first answers. (The fit itself: tests/test_novelty.py.)"""
    import cnn.novelty

    asked = []
    monkeypatch.setattr(cnn.novelty, "cached_novelty_model",
                        lambda model, data, wait=True: asked.append((model, data, wait)))
    app.switch_page("pages/draw.py").run()
    assert not app.exception
    assert app.session_state["canvas"]["drawing"]["data"] is None  # the empty canvas: no stroke was sent
    assert len(asked) == 1
    model, data, wait = asked[0]
    assert wait is False  # the page is never held up by the fit
    assert data.spec.name == "mnist" and len(data.train_images) == 60_000 and model.dataset == "mnist"


def test_opening_draw_does_not_try_again_a_dataset_that_failed_to_load(app, monkeypatch):
    """Offline, a dataset's load can take seconds to fail: the page's opening does not repeat it (a stroke's check
    still tries). The holder is the page's own: the one cache_resource gives every run in this process."""
    import cnn.novelty
    from pages.shared import data_holder

    holder = data_holder("mnist")
    holder.error = "MNIST could not be found or downloaded."
    tries, asked = [], []
    monkeypatch.setattr(holder, "load", lambda progress=None: tries.append(1))
    monkeypatch.setattr(cnn.novelty, "cached_novelty_model", lambda *args, **kwargs: asked.append(1))
    app.switch_page("pages/draw.py").run()
    assert not app.exception
    assert tries == [] and asked == []


@pytest.mark.mnist
def test_the_train_form_keeps_its_choices_across_a_trip_to_draw(app):
    """Streamlit drops an undrawn widget's value: the preset, the form and the overlay must survive a page switch."""
    from pages.shared import job_manager

    save_run(app_runs(app), "earlier")
    app.switch_page("pages/train.py").run()
    app.selectbox(key="kept.preset").set_value("fast").run()
    app.number_input(key="kept.epochs").set_value(2)
    app.text_input(key="kept.run_name").set_value("kept-fast")
    app.multiselect(key="kept.overlay").set_value(["earlier"]).run()
    app.switch_page("pages/draw.py").run()
    app.switch_page("pages/train.py").run()
    assert not app.exception
    assert app.selectbox(key="kept.preset").value == "fast"
    assert app.number_input(key="kept.epochs").value == 2 and app.text_input(key="kept.run_name").value == "kept-fast"
    assert app.multiselect(key="kept.overlay").value == ["earlier"]
    app.button[0].click().run()  # Start, after the trip
    assert not app.exception and not app.error
    job = job_manager().jobs()[0]
    assert (job["name"], job["preset"], job["config"]["epochs"]) == ("kept-fast", "fast", 2)


@pytest.mark.mnist
def test_a_students_start_form_offers_only_what_the_class_allows(app, monkeypatch):
    from cnn.classroom import ClassSettings, write_class_settings

    monkeypatch.setenv("CNN_TEACHER_TOKEN", "a-class-server-token")  # a class server: this session is a student
    app.switch_page("pages/train.py").run()
    assert not app.exception
    preset = app.selectbox(key="kept.preset")
    assert preset.value == "fast" and len(preset.options) == 2 and "ARTICLE" not in " ".join(preset.options)
    assert app.number_input(key="kept.epochs").value <= 2  # the class's default: FAST or softmax, at most 2 epochs
    assert any(c.value.startswith("On this class server students may start FAST or the softmax baseline, at most 2")
               for c in app.caption)
    assert not any("steps per run" in c.value for c in app.caption)  # the server's cap would say "up to 10 epochs"
    # Typing more epochs than the class allows is not silently undone: Start says why, and nothing is queued.
    app.number_input(key="kept.epochs").set_value(10).run()
    assert app.number_input(key="kept.epochs").value == 10
    next(b for b in app.button if b.label == "Start").click().run()
    assert not app.exception
    assert any("at most 2 epochs" in e.value for e in app.error), [e.value for e in app.error]
    assert not (app_runs(app)).exists() or not any(app_runs(app).glob("*/model.json"))
    write_class_settings(app_runs(app), ClassSettings(student_training="none"))
    app.run()
    assert not app.exception
    assert "kept.preset" not in [box.key for box in app.selectbox]  # no form at all, a sentence instead
    assert "Start" not in [b.label for b in app.button]
    assert any("only the teacher starts trainings" in i.value for i in app.info)


def app_runs(app):
    import os
    from pathlib import Path

    return Path(os.environ["CNN_RUNS_DIR"])


@pytest.mark.mnist
def test_train_form_shows_the_step_cap_and_refuses_a_run_over_it(app, monkeypatch):
    from pages.shared import job_manager

    monkeypatch.setenv("CNN_MAX_STEPS_PER_RUN", "1000")
    app.switch_page("pages/train.py").run()
    assert any("at most 1,000 steps per run" in c.value for c in app.caption)
    # ARTICLE's 10 epochs at batch 128 are 10 x ceil(60,000 / 128) = 4,690 steps.
    app.button[0].click().run()
    assert not app.exception
    refusals = [e.value for e in app.error]
    assert any("4,690" in e and "1,000" in e and "fewer epochs or a larger batch" in e for e in refusals), refusals
    assert job_manager().jobs() == []


# ---------------------------------------------------------------- Train: the model choice and downloads

@pytest.mark.mnist
def test_a_failed_run_with_a_valid_model_can_be_made_active(app, tmp_path):
    save_run(tmp_path / "runs", "crashed-at-epoch-2", status="failed", error="the disk was full")
    app.switch_page("pages/train.py").run()
    assert not app.exception
    choice = app.selectbox[-1]
    assert choice.label.startswith("Active model")
    assert "crashed-at-epoch-2" in choice.options
    choice.set_value("crashed-at-epoch-2").run()
    app.switch_page("pages/home.py").run()
    assert not app.exception and not app.warning
    assert any(m.value.startswith("Active model: **crashed-at-epoch-2**") for m in app.markdown)


def _download_labels(app) -> list[str]:
    return [button.proto.label for button in app.get("download_button")]


@pytest.mark.mnist
def test_download_is_offered_only_for_a_checkpoint_that_loads(app, tmp_path):
    runs = tmp_path / "runs"
    save_run(runs, "good")
    save_run(runs, "junk")
    (runs / "junk" / "model.pt").write_bytes(b"\0" * 4096)  # the card beside it still reads fine
    app.switch_page("pages/train.py").run()
    app.selectbox[-1].set_value("good").run()
    assert not app.exception
    assert _download_labels(app) == ["Download the model (.pt)", "Download its card (.json)"]
    app.selectbox[-1].set_value("junk").run()
    assert not app.exception
    assert _download_labels(app) == []
    assert any(c.value.startswith("Nothing to download: The model of run 'junk' cannot be used") for c in app.caption)
    assert not any(str(tmp_path) in c.value for c in app.caption)  # no server path in the sentence


def test_the_downloaded_model_is_the_checked_model_and_loads(tmp_path):
    from cnn.checkpoint import load_checkpoint
    from cnn.checkpoint import checkpoint_bytes

    original = save_run(tmp_path, "good")
    model, card = load_checkpoint(tmp_path / "good" / "model.pt")
    download = tmp_path / "downloaded.pt"
    download.write_bytes(checkpoint_bytes(model, card))
    again, again_card = load_checkpoint(download)  # the app's own checks: SHA-256, layers, dtypes
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(images), original.eval()(images))
    assert again_card["run"] == "good"


# ---------------------------------------------------------------- the active model never ends a page

def test_an_odd_run_falls_back_to_the_bundled_model_with_a_sentence(app, tmp_path):
    # A card whose config is a string ("config": "fast"), inside a model.pt whose checksum is right.
    save_run(tmp_path / "runs", "odd")
    from cnn.checkpoint import read_checkpoint, state_digest
    state, card = read_checkpoint(tmp_path / "runs" / "odd" / "model.pt")
    card = dict(card, config="fast", weights_sha256=state_digest(state))
    torch.save({"state_dict": state, "card": json.dumps(card)}, tmp_path / "runs" / "odd" / "model.pt")

    app.session_state["active_run"] = "odd"
    app.switch_page("pages/draw.py").run()
    assert not app.exception
    assert any("'odd' cannot be used" in w.value and "bundled model" in w.value for w in app.warning)
    assert not any(str(tmp_path) in w.value for w in app.warning)
    assert "active_run" not in app.session_state  # the broken choice is forgotten: the class's model is used


# ---------------------------------------------------------------- routing

def test_a_cold_first_request_for_a_page_goes_through_app_py(app):
    # Before app.py ever ran, Streamlit treats pages/ as old-style pages and would run /draw alone.
    app.switch_page("pages/draw.py")  # the first request of a new session, after a restart
    app.run()
    assert not app.exception
    assert app.session_state["routed_by_app"] is True  # app.py ran: only it sets this
    assert [t.value for t in app.title] == ["Draw a digit"]  # and it showed the page that was asked for


def test_every_page_reroutes_a_cold_request_before_it_imports_pytorch():
    """A cold request for /draw ran the page's imports (PyTorch, ~5 s) before it was rerouted through app.py, which
    says that the server is starting: the visitor saw a white page meanwhile (walk). Each routed page now calls
    pages.routing's guard first, and that module loads nothing heavy."""
    from pages.routing import PAGE_FILES, TEACHER_PAGE

    for path, _title in (*PAGE_FILES, TEACHER_PAGE):
        body = ast.parse((ROOT / path).read_text()).body
        first = next(i for i, node in enumerate(body) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                     and getattr(node.value.func, "id", None) == "require_app_navigation")
        before = {node.module for node in body[:first] if isinstance(node, ast.ImportFrom)}
        before |= {alias.name for node in body[:first] if isinstance(node, ast.Import) for alias in node.names}
        assert before <= {"__future__", "pages.routing"}, (path, before)
    loaded = subprocess.run([sys.executable, "-c", "import sys, pages.routing; print(sorted(m for m in sys.modules "
                             "if m.split('.')[0] in ('torch', 'cnn', 'numpy', 'PIL', 'matplotlib')))"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def imported_modules(path) -> set[str]:
    """Every module a source file imports, by its full dotted name."""
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_no_page_uses_streamlits_private_pages_manager():
    for path in PAGE_SOURCES:
        assert not any("pages_manager" in name for name in imported_modules(path)), path.name


def test_no_page_imports_altair():
    # altair is not in requirements.txt, and validating its charts cost ~17 ms per chart (README).
    for path in PAGE_SOURCES:
        assert not any(name.split(".")[0] == "altair" for name in imported_modules(path)), path.name


def test_streamlit_is_pinned_to_the_version_whose_runtime_the_app_uses():
    # pages/shared.py asks Streamlit's runtime (not its documented API) whether a session is connected and
    # which session a run serves; a new Streamlit must fail here, loudly, not quietly keep dead runs queued.
    import inspect

    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    pins = re.findall(r"^streamlit==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pins == [st.__version__] == ["1.67.0"]
    assert list(inspect.signature(runtime.Runtime.is_active_session).parameters) == ["self", "session_id"]
    assert callable(runtime.exists) and callable(runtime.get_instance)
    assert "suppress_warning" in inspect.signature(get_script_run_ctx).parameters


# ---------------------------------------------------------------- server settings, owners and browsers

def threads_of_a_new_thread() -> int:
    """torch's thread count as a thread started now sees it (a training worker is one): the last set, from any thread."""
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()  # no timeout: it only reads a number
    return seen[0]


def test_app_start_sets_torch_threads_from_the_settings(app, monkeypatch):
    before = threads_of_a_new_thread()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv("CNN_TRAIN_THREADS", str(wanted))
    try:
        app.switch_page("pages/draw.py").run()  # a page that never builds the job manager
        assert not app.exception
        assert threads_of_a_new_thread() == wanted
    finally:
        torch.set_num_threads(before)


def test_a_bad_setting_is_a_sentence_not_a_traceback(app, monkeypatch):
    monkeypatch.setenv("CNN_MAX_QUEUED", "lots")
    app.run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "The class server is not set up right: CNN_MAX_QUEUED must be a whole number of at least 1, not 'lots'."]


def test_draw_page_renders_with_a_hint_and_no_prediction(app):
    app.switch_page("pages/draw.py").run()
    assert not app.exception
    assert any("Draw a digit" in info.value for info in app.info)


# ---------------------------------------------------------------- Feature maps (they load MNIST)

@pytest.mark.mnist
def test_feature_page_renders_for_a_test_image(app):
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any("Input: test image #0 (label 7), read as 7." in c.value for c in app.caption)
    app.radio(key="kept.layer").set_value("conv3").run()
    app.radio(key="kept.stage").set_value("pool").run()
    assert not app.exception
    assert any("sums are added" in m.value for m in app.markdown)


@pytest.mark.mnist
def test_feature_page_confusion_matrix_counts_the_bundled_models_errors(app, real_mnist):
    predicted = bundled_model_predictions(real_mnist)
    right = int((predicted == real_mnist.test_labels).sum())
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any(c.value.startswith(f"{right:,} of 10,000 right") for c in app.caption)
    import pyarrow

    charts = [chart for chart in app.get("vega_lite_chart") if "layer" in json.loads(chart.proto.spec)]
    assert len(charts) == 1, "the confusion matrix: a heat map with its counts written on top, as a Vega-Lite spec"
    cells = pyarrow.ipc.open_stream(charts[0].proto.data.data).read_all().to_pylist()  # Streamlit sends the values as Arrow
    assert len(cells) == 100 and sum(c["count"] for c in cells) == 10_000
    assert sum(c["count"] for c in cells if c["true"] == c["predicted"]) == right


@pytest.mark.mnist
def test_feature_page_confusion_matrix_uses_the_predictions_training_kept(app, tmp_path, real_mnist):
    # The run's weights are fresh (about 10% right): only the kept predictions can give these counts.
    from cnn.checkpoint import load_checkpoint, save_checkpoint
    from cnn.runs import predictions_file

    folder = tmp_path / "runs" / "kept"
    save_run(tmp_path / "runs", "kept")
    model, card = load_checkpoint(folder / "model.pt")
    save_checkpoint(folder / "epoch-1.pt", model, card)
    labels = real_mnist.test_labels.numpy()
    for epoch, wrong in ((None, 25), (1, 300)):  # as training writes them: (10000,) digits per checkpoint
        predicted = labels.copy()
        predicted[:wrong] = (labels[:wrong] + 1) % 10
        np.save(folder / predictions_file(epoch), predicted)

    app.session_state["active_run"] = "kept"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any(c.value.startswith("9,975 of 10,000 right") for c in app.caption)
    app.select_slider[0].set_value(1).run()  # time travel to epoch 1
    assert not app.exception
    assert any(c.value.startswith("9,700 of 10,000 right") for c in app.caption)


@pytest.mark.mnist
def test_feature_page_shows_a_drawing_sent_from_draw(app):
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 13:15] = 255
    app.session_state["chosen_image"] = {"image": image.tolist(), "label": "your drawing"}
    app.session_state["image_source"] = "sent"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any(c.value.startswith("Input: your drawing, read as 1") for c in app.caption)


@pytest.mark.mnist
def test_feature_page_convolution_by_hand_starts_on_the_digit_and_adds_up(app, real_mnist):
    """Test image 0 (a 7): the pixel the page opens on reads ink (the image's centre is blank paper), and the
    products the page writes add up to the sum it writes, at the one precision it writes them all."""
    app.switch_page("pages/features.py").run()
    assert not app.exception
    inputs = {number.label: int(number.value) for number in app.number_input}
    row, col = inputs["Row"], inputs["Column"]
    image = np.pad(real_mnist.test_images[0].numpy(), 1)  # the 'SAME' zero border
    assert image[row:row + 3, col:col + 3].any(), f"the patch around ({row}, {col}) is blank paper"
    table = next(m.value for m in app.markdown if "| **sum** |" in m.value)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    decimals = len(rows[0][-1].split(".")[1])
    numbers = [cell for cells in rows[:9] for cell in cells[1:]] + [rows[9][-1].strip("*")]
    assert all(len(n.split(".")[1]) == decimals for n in numbers), "one precision for inputs, weights, products, sum"
    assert [float(cells[1]) for cells in rows[:9]] == [round(float(v) / 255, decimals) + 0.0 for v in
                                                      image[row:row + 3, col:col + 3].flat]
    written_sum = float(rows[9][-1].strip("*"))
    assert round(sum(float(cells[3]) for cells in rows[:9]), decimals) == written_sum
    assert any(f"add up to **{rows[9][-1].strip('*')}**" in m.value for m in app.markdown)


def test_feature_page_filter_replay_moves_over_steps_from_the_random_start(app, tmp_path):
    save_run(tmp_path / "runs", "replay")
    filters = np.random.default_rng(0).normal(0, 0.1, (3, 32, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "runs" / "replay" / "filters.npz", steps=np.array([0, 100, 200]), filters=filters)
    app.session_state["active_run"] = "replay"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    replay = next(s for s in app.select_slider if "filters at step" in s.label)
    assert list(replay.options) == ["0", "100", "200"]  # steps, not snapshot numbers
    assert replay.value == 200
    replay.set_value(0).run()
    assert not app.exception
    captions = [img.caption for image in app.get("image") for img in image.proto.imgs]
    assert "step 0: the random start, before any training" in captions


def _png_of_a_one() -> bytes:
    from PIL import Image

    paper = np.full((120, 90), 250, dtype=np.uint8)
    paper[15:105, 40:52] = 10  # dark ink on light paper, as a phone photo of a "1"
    buffer = io.BytesIO()
    Image.fromarray(paper).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.mnist
def test_feature_page_renders_for_an_upload_and_rejects_a_non_image(app):
    app.switch_page("pages/features.py").run()
    app.radio(key="kept.image_source").set_value("Upload").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception
    assert any(c.value.startswith("Input: upload one.png, read as 1") for c in app.caption)
    app.file_uploader[0].set_value(("notes.png", b"these are my notes", "image/png")).run()
    assert not app.exception
    assert any("not an image this app can read" in e.value for e in app.error)


def test_draw_page_upload_predicts_and_rejects(app):
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception
    assert any("It's a 1" in m.value for m in app.markdown)
    app.file_uploader[0].set_value(("fake.jpg", b"\xff\xd8\xff garbage", "image/jpeg")).run()
    assert any("could not be read" in e.value or "not an image" in e.value for e in app.error)


def test_draw_page_answers_first_and_takes_a_slot_only_for_what_follows(app, monkeypatch):
    """The answer never waits for another session: the page takes one of the few answer-tail slots after it, for the
    explanation and the rest, and gives the slot back however that part ends (here: the explanation fails)."""
    import cnn.explain
    import pages.shared

    events = []

    class RecordingSlots:
        def __init__(self):
            self.slots = threading.BoundedSemaphore(1)

        def acquire(self):
            events.append("slot taken")
            return self.slots.acquire()

        def release(self):
            events.append("slot given back")
            self.slots.release()

    slots = RecordingSlots()
    monkeypatch.setattr(pages.shared, "_ANSWER_TAILS", slots)
    answer_html, explain = cnn.explain.answer_html, cnn.explain.explain
    monkeypatch.setattr(cnn.explain, "answer_html", lambda *a, **k: events.append("answer") or answer_html(*a, **k))
    monkeypatch.setattr(cnn.explain, "explain", lambda *a, **k: events.append("why") or explain(*a, **k))
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception and any("It's a 1" in m.value for m in app.markdown)
    assert events == ["answer", "slot taken", "why", "slot given back"]
    assert app.get("image") and app.pills  # what the slot is for was drawn: the explanation, the label pills

    def failing(*args, **kwargs):
        events.append("why")
        raise RuntimeError("an explanation that fails")

    events.clear()
    monkeypatch.setattr(cnn.explain, "explain", failing)
    app.file_uploader[0].set_value(("one-again.png", _png_of_a_one(), "image/png")).run()
    assert events == ["answer", "slot taken", "why", "slot given back"]
    assert slots.slots.acquire(blocking=False)  # free again: the next stroke is not kept waiting


def test_answer_tail_slots_let_that_many_sessions_in_and_the_next_waits():
    import pages.shared
    from pages.shared import ANSWER_TAIL_SLOTS, answer_tail_slot
    from tests.conftest import wait_for

    assert ANSWER_TAIL_SLOTS >= 1
    leave, inside = threading.Event(), []

    def session(name):
        with answer_tail_slot():
            inside.append(name)
            leave.wait(60)

    holders = [threading.Thread(target=session, args=(i,)) for i in range(ANSWER_TAIL_SLOTS)]
    for holder in holders:
        holder.start()
    assert wait_for(lambda: len(inside) == ANSWER_TAIL_SLOTS, timeout=30)  # that many at once
    assert not pages.shared._ANSWER_TAILS.acquire(blocking=False)  # and no more: the next session would wait
    late = threading.Thread(target=session, args=("late",))
    late.start()
    leave.set()  # the holders leave: the late session gets in
    for thread in (*holders, late):
        thread.join(30)
    assert inside[-1] == "late" and len(inside) == ANSWER_TAIL_SLOTS + 1
    assert all(pages.shared._ANSWER_TAILS.acquire(blocking=False) for _ in range(ANSWER_TAIL_SLOTS))  # all free
    for _ in range(ANSWER_TAIL_SLOTS):
        pages.shared._ANSWER_TAILS.release()


def test_draw_page_saves_a_labelled_upload_to_the_class_set(app, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_CLASS_DIR", str(tmp_path / "class"))
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert any(caption == "No class drawings saved yet: draw a digit, then press its number." for caption in
               (c.value for c in app.caption))
    app.pills[0].set_value(1).run()
    assert not app.exception
    assert [t.value for t in app.toast] == ["Saved as a 1 to the class's handwriting set."]
    assert len(list((tmp_path / "class" / "1").glob("*.png"))) == 1
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Active model on the class's drawings"] == "100%"


def test_draw_page_offers_the_softmax_model_no_grad_cam_and_captions_what_it_shows(app, tmp_path):
    from cnn.checkpoint import make_card, save_checkpoint
    from cnn.config import SOFTMAX
    from cnn.model import SoftmaxRegression

    model = SoftmaxRegression(init_std=0.1, generator=torch.Generator().manual_seed(0))  # not zeros: a map to show
    card = make_card(SOFTMAX, model, status="finished", epochs=1, steps=10, accuracy=0.5, run="baseline")
    save_checkpoint(tmp_path / "runs" / "baseline" / "model.pt", model, card)
    app.session_state["active_run"] = "baseline"
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception
    method = app.radio[0]
    assert method.options == ["Integrated Gradients", "Occlusion"] and method.value == "integrated_gradients"
    assert method.key == "kept.draw_method_upload"  # kept across pages
    assert any(c.value.startswith("Read by your run baseline") for c in app.caption)
    read_as = re.search(r"It's an? (\d)|Not sure: (\d)", " ".join(m.value for m in app.markdown))
    digit = int(read_as.group(1) or read_as.group(2))
    captions = [image.proto.imgs[0].caption for image in app.get("image")]
    assert f"Integrated Gradients for {'an' if digit == 8 else 'a'} {digit}: " in " ".join(captions), captions


def test_draw_page_label_can_be_changed_taken_back_and_undone(app, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_CLASS_DIR", str(tmp_path / "class"))

    def on_disk():
        return sorted(int(p.parent.name) for p in (tmp_path / "class").glob("*/*.png"))

    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    app.pills[0].set_value(1).run()
    app.pills[0].set_value(1).run()  # chosen again (a double click): still one sample
    assert on_disk() == [1]
    app.pills[0].set_value(7).run()  # the student meant 7: the 1 is replaced
    assert on_disk() == [7] and not app.exception
    assert "instead of a 1" in " ".join(t.value for t in app.toast)
    app.pills[0].set_value(None).run()  # un-choosing the pill takes it back
    assert on_disk() == []
    app.pills[0].set_value(4).run()
    undo = [b for b in app.button if b.label.startswith("Undo")]
    assert [b.label for b in undo] == ["Undo: take back the 4 I saved last"]
    undo[0].click().run()
    assert on_disk() == [] and app.pills[0].value is None and not app.exception
    assert not [b for b in app.button if b.label.startswith("Undo")]


def _preset_twice_script():
    """The form filled for a preset, then typed into, then asked to fill for the same choice again."""
    import streamlit as st

    from pages.shared import kept
    from pages.train_form import _preset_changed, form_is_behind

    st.session_state[kept("network")], st.session_state[kept("preset")] = "cnn", "softmax"  # a preset bringing its network
    st.session_state.form_applied = ("cnn", "article")
    behind_before = form_is_behind()
    _preset_changed()
    filled = (st.session_state[kept("network")], st.session_state[kept("epochs")])
    st.session_state[kept("epochs")] = 2  # typed
    _preset_changed()  # the same choice, again
    st.write(f"{behind_before} {filled} {st.session_state[kept('epochs')]} {form_is_behind()}")


def test_filling_the_form_twice_for_one_choice_keeps_what_was_typed_and_a_choice_not_yet_filled_is_seen():
    """A CI run's softmax form went back to 5 epochs after the student typed 1 and pressed Start: filling for the
    choice the form already holds leaves it alone; and a choice the form was not filled for is noticed (the live
    view then holds back its own requests for a run of the whole page: pages/train_form.py)."""
    at = AppTest.from_function(_preset_twice_script).run()
    assert not at.exception
    assert at.markdown[0].value == "True ('softmax', 5) 2 False"


@pytest.mark.parametrize("lost, expected", [
    ({"kept.preset": "fast"}, ("cnn", "fast", 1)),  # FAST's one epoch, not ARTICLE's ten
    ({"kept.network": "lenet"}, ("lenet", "fast", 1)),  # LeNet brings its default preset, FAST
])
def test_a_choice_that_reached_the_server_before_its_own_run_still_fills_the_form(app, lost, expected):
    """A preset or network chosen in the same moment as the live charts' timed rerun reaches the server in that
    fragment run, before its own run of the page (a fresh-clone browser run chose FAST and kept ARTICLE's 10 epochs):
    the next full run fills the form for it. In a browser: tests/test_browser_form_race.py."""
    app.switch_page("pages/train.py").run()
    assert app.number_input(key="kept.epochs").value == 10  # ARTICLE's form
    for key, value in lost.items():  # already in the session when the full run starts
        app.session_state[key] = value
    app.run()
    assert not app.exception
    network, preset, epochs = expected
    assert app.selectbox(key="kept.network").value == network and app.selectbox(key="kept.preset").value == preset
    assert app.number_input(key="kept.epochs").value == epochs


def test_a_progress_fraction_past_either_end_is_drawn_at_that_end():
    """A measure's rounding can report 1.0000001 (or a hair under 0), which st.progress refuses with an exception:
    every slow measurement's bar goes through show_progress, which draws it at the end instead."""
    from pages.shared import show_progress

    drawn = []

    class Place:  # the bar's place: what a page's st.empty() is asked to draw
        def progress(self, value, text):
            drawn.append((value, text))
            return self

    for fraction in (1.0000001, -1e-9, 0.25, 1):
        show_progress(Place(), fraction, "measuring")
    assert drawn == [(1.0, "measuring"), (0.0, "measuring"), (0.25, "measuring"), (1.0, "measuring")]
    assert all(isinstance(value, float) for value, _ in drawn)


def test_the_app_parses_python_one_thread_at_a_time(monkeypatch):
    """CPython 3.11's ast.parse in two threads at once can raise "AST constructor recursion depth mismatch" (a fresh
    clone's Train page did, as Streamlit compiled it): the app makes ast.parse take one lock. While one thread is
    inside a parse, the lock is held; after it, it is free; a second install does not wrap the wrapper.

    The parse is held open at its compile() until the lock has been looked at: a real parse holds the GIL, so a
    second thread polling the lock could miss it (fresh clone 66 saw it free all through a 60,000-line parse)."""
    import ast

    from pages import parsing

    parsing.serialise_ast_parse()
    parsing.serialise_ast_parse()
    assert ast.parse.serialised and not getattr(ast.parse.__wrapped__, "serialised", False)
    inside, go_on = threading.Event(), threading.Event()

    def held_compile(*args, **kwargs):  # ast.parse calls compile() from the ast module's globals
        inside.set()
        assert go_on.wait(timeout=60)
        return compile(*args, **kwargs)

    monkeypatch.setattr(ast, "compile", held_compile, raising=False)
    parsed = []
    parser = threading.Thread(target=lambda: parsed.append(ast.parse("x = [1, 2]")))
    parser.start()
    assert inside.wait(timeout=60)
    free = parsing._LOCK.acquire(blocking=False)  # False: the parsing thread owns it
    if free:
        parsing._LOCK.release()
    go_on.set()
    parser.join(timeout=60)
    assert not free  # the parse held the lock
    assert isinstance(parsed[0], ast.Module)
    monkeypatch.undo()
    assert parsing._LOCK.acquire(blocking=False)
    parsing._LOCK.release()
    assert isinstance(ast.parse("a = 1"), ast.Module)
