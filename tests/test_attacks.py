"""What a student's browser can send to the real app, sent at the protocol level (scripts/loadtest.py's client).

The app runs in its own process (tests.conftest.start_app), so its memory can be read from /proc.
"""
import asyncio
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, start_app, stop_app, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402

pytestmark = pytest.mark.browser
MB = 1024  # /proc reports kB


@pytest.fixture(scope="module")
def attacked_app(tmp_path_factory):
    """(process, url, log file) of an app of its own: its memory is the test's measurement, shared with nobody."""
    workdir = tmp_path_factory.mktemp("attacked-app")
    process, url = start_app(workdir)
    yield process, url, workdir / "streamlit.log"
    stop_app(process)


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak since start) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def attack(url: str, png: bytes, then_draw: str | None = "7") -> dict:
    # A thread of its own: pytest-playwright's sync API may keep an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(loadtest.forged_canvas_attack(url, png, then_draw),
                                                         300)).result()


def test_forged_8000px_canvas_value_is_refused_before_decoding(attacked_app):
    process, url, log = attacked_app
    honest = attack(url, loadtest.blank_png(280, 280))  # warm up: page, model and attribution loaded once
    assert honest["forged_exceptions"] == [] and any("It's a 7 " in t for t in honest["after"]), honest
    # The first drawing also starts the not-a-digit check's one fit in the background (~200 MB at its peak):
    # measure the attack after it, not the fit.
    assert wait_for(lambda: "not-a-digit check is ready" in log.read_text(), timeout=600), log.read_text()[-2000:]
    peak_before = memory_kb(process.pid, "VmHWM")

    forged = loadtest.blank_png(8000, 8000)  # ~250 KB on the wire, 256 MB as RGBA pixels
    report = attack(url, forged)

    grown_mb = (memory_kb(process.pid, "VmHWM") - peak_before) / MB
    assert grown_mb < 150, f"the server's peak memory grew by {grown_mb:.0f} MB"
    assert report["forged_exceptions"] == []
    assert any("8000x8000 pixels, but the canvas is 280x280" in text for text in report["forged"]), report["forged"]
    assert not any("It's a" in text or "Not sure" in text for text in report["forged"])
    # The attacker's own next stroke, an honest one, is still read.
    assert report["after_exceptions"] == [] and any("It's a 7 " in text for text in report["after"]), report


@pytest.mark.parametrize("value, sentence", [
    ({"drawing": "not a drawing"}, "did not arrive as a picture from the canvas"),
    ({"drawing": {"raw": {}, "data": 12345}}, "did not arrive as a picture from the canvas"),
    ({"drawing": {"raw": {}, "data": "data:image/png;base64,!!!!"}}, "not a picture this app can read"),
])
def test_canvas_values_of_another_shape_get_a_sentence_not_an_exception(attacked_app, value, sentence):
    _, url, _ = attacked_app

    async def send():
        ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        async with loadtest.websockets.connect(ws_url, subprotocols=["streamlit"], origin=url) as ws:
            client = loadtest.StreamlitClient(ws, url)
            await client.run(first=True)
            exceptions = []
            _, texts = await client.run(widgets={client.widgets["canvas"]: value}, exceptions=exceptions)
            return texts, exceptions

    with ThreadPoolExecutor(1) as pool:
        texts, exceptions = pool.submit(asyncio.run, asyncio.wait_for(send(), 300)).result()
    assert exceptions == []
    assert any(sentence in text for text in texts), texts


# ---------------------------------------------------------------- one student against the class server's teacher role
# A class server (a teacher token set), attacked by sessions without the token over Streamlit's own WebSocket protocol.
# The sessions live in an event loop of their own, in a thread, from one step to the next: a session that disconnects
# loses its queued runs. The teacher's own paused run holds the one training slot, so every other run waits in the queue
# (no training eats the machine's cores) until a test stops it.

TOKEN = "a-long-teacher-token"
CLASS_RULES = "On this class server students may start FAST or the softmax baseline, at most 2 epochs"
STUDENTS_TEACHER_PAGE = "This page is for the teacher."
WRONG_LINK = "That teacher link is not right: this page works as a student's."
RECIPE = re.compile(r"(\w[\w ]*): (\d+) epochs?, batch (\d+), learning rate (\S+), seed \d+")  # cnn.views.config_summary


class Session:
    """One browser tab over the WebSocket: rerun() sends widget values (ids the server gave this or another session)."""

    def __init__(self, room: "Classroom", page: str, query: str = ""):
        self.room, self.exceptions = room, []

        async def connect():
            ws_url = room.url.replace("http://", "ws://") + "/_stcore/stream"
            self.ws = await loadtest.websockets.connect(ws_url, subprotocols=["streamlit"], origin=room.url,
                                                        max_size=None)
            self.client = loadtest.StreamlitClient(self.ws, room.url)
            return (await self.client.run(first=True, page=page, query=query, exceptions=self.exceptions))[1]

        self.texts = room.call(connect())
        room.sessions.append(self)

    def rerun(self, widgets: dict | None = None, query: str = "") -> list[str]:
        """A rerun of the whole page (as a browser sends one), with widgets {id: value}; the texts it showed."""
        self.client.drawn = {}
        self.texts = self.room.call(self.client.run(widgets=widgets, query=query, whole_page=True,
                                                    exceptions=self.exceptions))[1]
        return self.texts

    def id(self, *, key: str | None = None, label: str | None = None) -> str:
        return self.client.widget_id(key=key, label=label)

    def ids(self, suffix: str) -> list[str]:
        """Ids of the widgets the last run drew whose key ends with suffix (e.g. every Stop button: "-stop")."""
        return [widget_id for widget_id in self.client.drawn if re.search(re.escape(suffix) + r"\d+$", widget_id)]

    def close(self) -> None:
        self.room.call(self.ws.close())
        self.room.sessions.remove(self)


class Classroom:
    """The app as a class server in its own process, and the event loop its sessions live in."""

    def __init__(self, workdir: Path):
        self.workdir, self.log = workdir, workdir / "streamlit.log"
        self.process, self.url = start_app(workdir, env={"CNN_TEACHER_TOKEN": TOKEN, "CNN_TRAIN_THREADS": "1",
                                                         "CNN_MAX_TRAININGS": "1"})
        self.loop, self.sessions = asyncio.new_event_loop(), []
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def call(self, coroutine, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self.loop).result()

    def status(self, run: str) -> str:
        """What the Teacher page says of an active run ("Queued: ...", "Paused: ..."); "ended" once it has ended."""
        texts = self.teacher.rerun()
        assert any(text.startswith("**") for text in texts) or "Runs" in texts, texts
        for index, text in enumerate(texts[:-1]):
            if text.startswith(f"**{run}** ("):
                return texts[index + 1]
        return "ended"

    def close(self) -> None:
        for session in list(self.sessions):
            session.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        stop_app(self.process)


def start_run(session: Session, name: str) -> int:
    """Press Start on a Train page with the run name set; the id of the queued run (from its Stop button's key)."""
    session.rerun({session.id(label="Run name"): loadtest.Wire("string_value", name),
                   session.id(label="Start"): True})
    session.rerun()
    stops = session.ids("-stop")
    assert len(stops) == 1 and not session.exceptions, (session.texts, session.exceptions)
    return int(re.search(r"(\d+)$", stops[0]).group(1))


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """A class server whose teacher started a FAST run and paused it; room.teacher is the teacher on the Teacher page."""
    room = Classroom(tmp_path_factory.mktemp("class-server"))
    try:
        trainer = Session(room, "train", query=f"teacher={TOKEN}")
        trainer.rerun({trainer.id(label="Preset"): loadtest.Wire("string_value", "FAST (Adam, one cycle)")})
        trainer.rerun({trainer.id(label="Epochs"): loadtest.Wire("int_value", 1),
                       trainer.id(label="Run name"): loadtest.Wire("string_value", "teachers-run"),
                       trainer.id(label="Start"): True})
        trainer.rerun()
        room.teachers_run = int(re.search(r"(\d+)$", trainer.ids("-pause")[0]).group(1))
        trainer.rerun({trainer.id(key=f"pause{room.teachers_run}"): True})
        trainer.rerun()
        # The teacher's Train page's own buttons for the run (a student's page must never honour these ids).
        room.teachers_buttons = [trainer.id(key=f"{name}{room.teachers_run}") for name in ("resume", "stop")]
        room.teacher = Session(room, "teacher", query=f"teacher={TOKEN}")
        assert room.status("teachers-run").startswith("Paused"), room.teacher.texts
        yield room
    finally:
        room.close()


FORGED_STARTS = [  # (what a student's forged Train form sends with Start, what must happen: refused, queued or either)
    ("10 epochs of FAST", {"Epochs": ("int_value", 10)}, "refused"),
    ("1,000 epochs", {"Epochs": ("int_value", 1000)}, "either"),
    ("a batch of a million", {"Batch size": ("int_value", 10**6)}, "either"),
    ("a learning rate of 100", {"Learning rate": ("double_value", 100.0)}, "either"),
    ("ARTICLE, by the label the teacher's form shows", {"Preset": ("string_value", "ARTICLE (the tutorial)")}, "either"),
    ("ARTICLE, by its preset name", {"Preset": ("string_value", "article")}, "either"),
    ("a preset that does not exist", {"Preset": ("string_value", "huge")}, "either"),
    ("an honest FAST run of 2 epochs", {"Epochs": ("int_value", 2)}, "queued"),  # the check sees a queued run
]


@pytest.mark.parametrize("values, outcome", [(v, o) for _, v, o in FORGED_STARTS], ids=[n for n, _, _ in FORGED_STARTS])
def test_a_students_forged_train_form_starts_only_what_the_class_allows(classroom, values, outcome):
    student = Session(classroom, "train")
    try:
        assert CLASS_RULES in " ".join(student.texts), student.texts  # a student's form, on a class server
        forged = {student.id(label=label): loadtest.Wire(*value) for label, value in values.items()}
        pressed = student.rerun({**forged, student.id(label="Start"): True})
        texts = pressed + student.rerun()
        assert student.exceptions == [], f"a forged value ended the page in Streamlit's error: {student.exceptions}"
        queued = student.ids("-stop")  # a student's Train page draws Stop only for its own runs
        if outcome == "refused":  # no run, and the class's sentence twice: the form's caption, then Start's refusal
            assert not queued and sum(CLASS_RULES in text for text in pressed) >= 2, texts
        if outcome == "queued":
            assert queued, texts
        if queued:  # the run this session watches is its own new one: its recipe must be one the class allows
            preset, epochs, batch, rate = next(RECIPE.search(t).groups() for t in student.texts if RECIPE.search(t))
            assert preset in ("FAST", "Softmax baseline") and int(epochs) <= 2, student.texts
            assert int(batch) <= 1024 and 1e-5 <= float(rate) <= 1.0, student.texts
        listed = classroom.teacher.rerun()
        assert not any(text.startswith("**") and "(article)" in text for text in listed), listed
        assert classroom.status("teachers-run").startswith("Paused")
    finally:
        student.close()  # a closed tab's queued runs are dropped


@pytest.mark.parametrize("token", [
    "wrong", "a-long-teacher-toke", "A-LONG-TEACHER-TOKEN", "a-long-teacher-token%20", "%20a-long-teacher-token",
    "a-long-teacher-token%00", "%C3%A9%F0%9F%98%80%FF%FE", "a-long-teacher-token" * 500, "x" * 200_000, "",
])
def test_a_wrong_teacher_token_leaves_a_student_in_the_first_link_and_in_a_forged_query_string(classroom, token):
    student = Session(classroom, "teacher", query=f"teacher={token}")
    try:
        assert any(WRONG_LINK in text for text in student.texts) or token == "", student.texts
        assert STUDENTS_TEACHER_PAGE in " ".join(student.texts) and "Runs" not in student.texts, student.texts
        for attempt in range(5):  # the query string a rerun carries, forged mid-session, again and again
            texts = student.rerun(query=f"teacher={token}&teacher={token}{attempt}")
            assert any(WRONG_LINK in text for text in texts), texts
            assert STUDENTS_TEACHER_PAGE in " ".join(texts) and "Runs" not in texts, texts
        assert student.exceptions == []
        assert TOKEN not in classroom.log.read_text()
        # The same forged query string with the right token does make this session the teacher's: the path is live.
        assert "Runs" in student.rerun(query=f"teacher={TOKEN}"), student.texts
    finally:
        student.close()


def test_a_forged_widget_state_named_like_the_teacher_flag_does_not_make_a_teacher(classroom):
    student = Session(classroom, "teacher")
    try:
        for forged in ({"class_teacher": loadtest.Wire("bool_value", True)}, {"class_teacher": True},
                       {"class_teacher": loadtest.Wire("json_value", "true")},
                       {"$$ID-00000000000000000000000000000000-class_teacher": loadtest.Wire("bool_value", True)}):
            texts = student.rerun(forged)
            assert STUDENTS_TEACHER_PAGE in " ".join(texts) and "Runs" not in texts, (forged, texts)
            assert STUDENTS_TEACHER_PAGE in " ".join(student.rerun()), student.texts  # nor on the run after
    finally:
        student.close()


def test_a_student_cannot_use_the_teacher_pages_buttons_with_the_teachers_widget_ids(classroom):
    from cnn.classset import save_sample

    drawing = np.zeros((28, 28), np.uint8)
    drawing[4:24, 12:16] = 255
    sample = save_sample(classroom.workdir / "class", drawing, 0)  # the Teacher page's digit radio starts at 0
    victim = Session(classroom, "train")
    student = Session(classroom, "teacher")
    try:
        victims_run = start_run(victim, "victim-of-the-teacher-page")
        # The teacher's session shows the real ids: every button, the forms' fields and their submit buttons.
        teacher = classroom.teacher
        teacher.rerun()
        ids = dict(teacher.client.drawn)
        teacher.rerun({teacher.id(key="teacher-reset"): True})  # the reset's confirmation buttons appear
        ids.update(teacher.client.drawn)
        assert teacher.id(key=f"teacher-Stop-{victims_run}") and teacher.id(key="teacher-reset-confirm")
        assert teacher.id(key=f"delete-{sample.name}")
        fields = {teacher.id(label="Students may start"): loadtest.Wire("string_value", "Anything within the server's limits"),
                  teacher.id(label="Most epochs per run"): loadtest.Wire("int_value", 50),
                  teacher.id(label="Presets"): loadtest.Wire("string_array_value", ["ARTICLE", "FAST"])}
        teacher.rerun({teacher.id(key="teacher-reset-cancel"): True})  # the teacher cancels; nothing changed

        # One button a message (a press that reruns the page would drop the others), the reset before its
        # confirmation, the forms' submit buttons with their fields; then everything at once.
        buttons = [widget_id for widget_id, (kind, _, _) in ids.items() if kind == "button"]
        shown = [student.rerun({button: True, **fields}) for button in buttons]
        shown.append(student.rerun({**{button: True for button in buttons}, **fields}))
        assert classroom.status("victim-of-the-teacher-page").startswith("Queued")
        assert classroom.status("teachers-run").startswith("Paused")
        assert sample.exists(), "a student's forged Delete or Reset removed a class drawing"
        assert not (classroom.workdir / "runs" / "classroom.json").exists(), "a student saved the class settings"
        for texts in shown:  # and the page drew nothing but its sentence
            assert STUDENTS_TEACHER_PAGE in " ".join(texts) and "Runs" not in texts, texts
        assert student.exceptions == []

        # The teacher's own press of the same Stop id stops the student's run, and the student's page says so.
        teacher.rerun({teacher.id(key=f"teacher-Stop-{victims_run}"): True})
        assert classroom.status("victim-of-the-teacher-page") == "ended", teacher.texts
        assert wait_for(lambda: "Stopped by the teacher." in victim.rerun(), timeout=120), victim.texts
        teacher.rerun({teacher.id(key=f"delete-{sample.name}"): True})
        assert not sample.exists(), "the teacher's Delete (the id the student forged) did not delete"
    finally:
        student.close()
        victim.close()


def test_a_student_cannot_stop_or_resume_another_sessions_run_with_its_button_ids(classroom):
    victim = Session(classroom, "train")
    attacker = Session(classroom, "train")
    try:
        victims_run = start_run(victim, "victim-of-the-train-page")
        victims_stop = victim.id(key=f"stop{victims_run}")
        attacker.rerun()
        watch = attacker.id(label="Watch run")
        options = list(attacker.client.drawn[watch][2].options)
        teachers_stop = classroom.teacher.id(key=f"teacher-Stop-{classroom.teachers_run}")
        shown = []
        for run, buttons in (("victim-of-the-train-page", [victims_stop]),
                             ("teachers-run", [*classroom.teachers_buttons, teachers_stop])):
            label = next(option for option in options if option.startswith(run + " ("))
            for button in buttons:  # one a message: a press that reruns the page would drop the others
                texts = attacker.rerun({watch: loadtest.Wire("string_value", label), button: True})
                shown.append((texts, attacker.ids("-stop") + attacker.ids("-resume") + attacker.ids("-pause")))
        assert classroom.status("victim-of-the-train-page").startswith("Queued")
        assert classroom.status("teachers-run").startswith("Paused")
        for texts, buttons in shown:  # the page let the attacker watch, and drew it no button
            assert any("only that session or the teacher can pause or stop it" in text for text in texts), texts
            assert not buttons, texts
        assert attacker.exceptions == []
        # The victim's own press of the same id stops it: the id the attacker forged was live.
        victim.rerun({victims_stop: True})
        assert classroom.status("victim-of-the-train-page") == "ended"
    finally:
        attacker.close()
        victim.close()


def test_a_student_cannot_take_back_another_students_class_drawing(classroom):
    folder = classroom.workdir / "class"
    victim, attacker = Session(classroom, "draw"), Session(classroom, "draw")
    try:
        canvas = victim.client.widgets["canvas"]
        seven = {canvas: loadtest.canvas_value(loadtest.stroke_png(loadtest.STROKES["7"]))}

        def pills(session: Session) -> str:
            return next(i for i in session.client.drawn if "-label-drawing-" in i)

        assert any("It's a 7 " in text for text in victim.rerun(seven)), victim.texts
        pill = pills(victim)
        victim.rerun({**seven, pill: loadtest.Wire("string_array_value", ["7"])})
        victim.rerun(seven)
        saved = sorted(folder.glob("7/*.png"))
        assert len(saved) == 1, saved
        victims_undo = victim.id(label="Undo: take back the 7 I saved last")

        # The same drawing on another tab: the same pill (its key is the drawing's hash), the victim's Undo id.
        attacker.rerun(seven)
        assert pills(attacker) == pill
        steps = [lambda: {pill: loadtest.Wire("string_array_value", [])},  # un-choose the 7
                 lambda: {victims_undo: True},
                 lambda: {pill: loadtest.Wire("string_array_value", ["1"])},  # relabel it: a sample of its own
                 lambda: {attacker.id(label="Undo: take back the 1 I saved last"): True}]  # its own Undo
        for step in steps:
            forged = step()
            attacker.rerun({**seven, **forged})
            assert saved[0].exists(), f"{forged} removed the victim's drawing"
        assert attacker.exceptions == [] and not list(folder.glob("1/*.png")), "the attacker's own Undo failed"
        # The victim's own Undo (the id the attacker forged) takes it back.
        victim.rerun({**seven, victims_undo: True})
        assert not saved[0].exists()
    finally:
        attacker.close()
        victim.close()
