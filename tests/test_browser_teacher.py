"""Browser test of a class server (CNN_TEACHER_TOKEN set) at the projector's 1024x768: a teacher and a student.

Two browser contexts are two computers: the teacher opens the link with the token, the student the plain address.
Every step waits for what it needs, never for a fixed time.
"""
import re
import shutil

import pytest
from playwright.sync_api import Page, expect

from cnn.classroom import read_class_settings
from tests.conftest import PROJECTOR, ROOT, start_app, stop_app, wait_for, wait_for_no_ink
from tests.test_browser_app import (DIGITS, canvas_of, choose_from_list, go_to, stroke, wait_until_idle,
                                    watch_errors)

pytestmark = pytest.mark.browser

TOKEN = "browser-test-teacher-token"
RULES = re.compile(r"students may start FAST or the softmax baseline, at most 2 epochs")


@pytest.fixture(scope="module")
def class_server(tmp_path_factory):
    """The app as a class server: a teacher token, one training thread (the run lasts while the teacher acts).
    Yields its address and its folder (runs/, class/)."""
    workdir = tmp_path_factory.mktemp("class-server")
    process, url = start_app(workdir, env={"CNN_TEACHER_TOKEN": TOKEN, "CNN_TRAIN_THREADS": "1"})
    yield url, workdir
    stop_app(process)


@pytest.fixture(scope="module")
def class_url(class_server):
    return class_server[0]


def open_as(page: Page, url: str) -> list[str]:
    errors = watch_errors(page)
    page.goto(url)
    expect(page.get_by_role("heading", name="The CNN classroom")).to_be_visible(timeout=60_000)
    return errors


def choose_preset(page: Page, name: re.Pattern) -> bool:
    """Pick a preset in the Train form; False when the form does not offer it (the list is closed again)."""
    page.get_by_label("Preset").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible(timeout=60_000)
    option = options.filter(has_text=name)
    if option.count() == 0:
        page.keyboard.press("Escape")
        return False
    option.first.click()
    return True


def test_the_teacher_stops_a_students_run_and_the_student_cannot_start_article(browser, class_url):
    teacher = browser.new_context(viewport=PROJECTOR).new_page()
    student_context = browser.new_context(viewport=PROJECTOR)
    student = student_context.new_page()
    teacher_errors = open_as(teacher, f"{class_url}/?teacher={TOKEN}")
    student_errors = open_as(student, class_url)

    # The teacher link made a teacher, and the token left the address bar (a projector shows it).
    expect(teacher.get_by_test_id("stSidebarNav").get_by_text("Teacher", exact=True)).to_be_visible(timeout=60_000)
    expect(teacher).not_to_have_url(re.compile("teacher="), timeout=60_000)
    wait_until_idle(student)
    expect(student.get_by_test_id("stSidebarNav").get_by_text("Train", exact=True)).to_be_visible()
    expect(student.get_by_test_id("stSidebarNav").get_by_text("Teacher", exact=True)).to_have_count(0)

    # The student's ARTICLE x 10 (the old default Start) is refused with the class's rule, or not offered at all.
    go_to(student, "Train")
    wait_until_idle(student)
    if choose_preset(student, re.compile("ARTICLE")):
        student.get_by_label("Epochs").first.fill("10")
        student.get_by_label("Run name").fill("student-article")
        student.get_by_role("button", name="Start").click()
    expect(student.get_by_text(RULES).first).to_be_visible(timeout=60_000)
    go_to(teacher, "Teacher")
    expect(teacher.get_by_text("No run has been started on this server yet.")).to_be_visible(timeout=60_000)

    # An allowed run: FAST, 2 epochs.
    assert choose_preset(student, re.compile("FAST"))
    student.get_by_label("Epochs").first.fill("2")
    student.get_by_label("Run name").fill("student-fast")
    student.get_by_role("button", name="Start").click()

    # The teacher sees it with the session that started it, and stops it.
    expect(teacher.get_by_text("student-fast", exact=False).first).to_be_visible(timeout=60_000)
    expect(teacher.get_by_text(re.compile(r"student-fast.*started by session [0-9a-f]{4}")).first).to_be_visible()
    teacher.get_by_role("button", name="Stop").click()
    expect(teacher.get_by_role("button", name="Stop")).to_have_count(0, timeout=60_000)

    # The student's Train page shows it stopped, by the teacher.
    expect(student.get_by_text("Stopped by the teacher.").first).to_be_visible(timeout=120_000)
    assert TOKEN not in teacher.url

    # A student who types the Teacher page's address gets a sentence, no controls.
    sneaky = student_context.new_page()
    sneaky_errors = watch_errors(sneaky)
    sneaky.goto(f"{class_url}/teacher")
    expect(sneaky.get_by_text("This page is for the teacher.")).to_be_visible(timeout=60_000)
    wait_until_idle(sneaky)
    expect(sneaky.get_by_role("button", name="Stop")).to_have_count(0)
    expect(sneaky.get_by_role("button", name="Clear the queue")).to_have_count(0)
    assert teacher_errors == [] and student_errors == [] and sneaky_errors == []


def test_a_students_train_page_shows_the_rules_the_teacher_just_saved_without_a_touch(browser, class_url):
    """The teacher raises the class's epochs on the Teacher page; the student, who does nothing, sees the new rule
    on the Train form (the live view notices the saved settings and redraws the page), then the old one again."""
    teacher = browser.new_context(viewport=PROJECTOR).new_page()
    student = browser.new_context(viewport=PROJECTOR).new_page()
    teacher_errors = open_as(teacher, f"{class_url}/?teacher={TOKEN}")
    student_errors = open_as(student, class_url)
    go_to(student, "Train")
    expect(student.get_by_text(RULES).first).to_be_visible(timeout=60_000)
    expect(teacher.get_by_test_id("stSidebarNav").get_by_text("Teacher", exact=True)).to_be_visible(timeout=60_000)
    go_to(teacher, "Teacher")
    for epochs in (3, 2):  # raised, then put back for the other tests of this server
        field = teacher.get_by_label("Most epochs per run")
        expect(field).to_be_visible(timeout=60_000)
        field.fill(str(epochs))
        teacher.get_by_role("button", name="Save").click()
        rule = f"students may start FAST or the softmax baseline, at most {epochs} epochs"
        expect(teacher.get_by_text(rule).first).to_be_visible(timeout=60_000)  # saved
        expect(student.get_by_text(rule).first).to_be_visible(timeout=60_000)  # and on the student's untouched page
    assert teacher_errors == [] and student_errors == []


def test_a_students_next_stroke_is_read_by_the_class_model_the_teacher_just_chose(browser, class_server):
    """A student on Draw has read a 1 with the bundled model; the teacher makes a finished run the class model; the
    student's next stroke is answered by it, and the page says so (a stroke used to keep the old model)."""
    url, workdir = class_server
    lesson = workdir / "runs" / "lesson-run"  # a finished run on the server's disk: the bundled model's files
    lesson.mkdir(parents=True)
    shutil.copy(ROOT / "models" / "article-cnn.pt", lesson / "model.pt")
    shutil.copy(ROOT / "models" / "article-cnn.json", lesson / "model.json")
    teacher = browser.new_context(viewport=PROJECTOR).new_page()
    student = browser.new_context(viewport=PROJECTOR).new_page()
    teacher_errors = open_as(teacher, f"{url}/?teacher={TOKEN}")
    student_errors = open_as(student, url)
    go_to(student, "Draw")
    expect(student.get_by_text("Read by the bundled model").first).to_be_visible(timeout=60_000)
    stroke(student, canvas_of(student), DIGITS["1"][0])
    expect(student.get_by_text("It's a 1 (")).to_be_visible(timeout=60_000)

    expect(teacher.get_by_test_id("stSidebarNav").get_by_text("Teacher", exact=True)).to_be_visible(timeout=60_000)
    go_to(teacher, "Teacher")
    option = teacher.get_by_role("option", name=re.compile("^lesson-run"))
    # The page's run list redraws every 2 s, and a redraw closes an open list: opened and clicked until chosen.
    choose_from_list(teacher, teacher.get_by_label("Every session that has not chosen its own model uses"), option)
    teacher.get_by_role("button", name="Make it the class model").click()
    # Said to the teacher (a toast made right before the page's rerun was dropped now and then), and saved.
    expect(teacher.get_by_text("Saved: every session uses it from now on.")).to_be_visible(timeout=60_000)
    assert wait_for(lambda: read_class_settings(workdir / "runs").class_model == "lesson-run", timeout=60)

    stroke(student, canvas_of(student), [(0.45, 0.30), (0.45, 0.70)])  # a second line beside the 1, on the same page
    expect(student.get_by_text("Read by the class model (run lesson-run, chosen by your teacher)")).to_be_visible(
        timeout=60_000)

    # Back to the bundled model. The student's first Clear since then empties the canvas (the page's run for the new
    # settings used to take the press: the old drawing stayed, read by the new model, until a second Clear).
    option = teacher.get_by_role("option", name=re.compile(r"^bundled \(the article's CNN on MNIST, shipped with"))
    choice = teacher.get_by_label("Every session that has not chosen its own model uses")
    choose_from_list(teacher, choice, option)
    teacher.get_by_role("button", name="Make it the class model").click()
    assert wait_for(lambda: read_class_settings(workdir / "runs").class_model == "bundled", timeout=60)
    student.get_by_role("button", name="Clear").click()
    expect(student.get_by_text("Read by the bundled model").first).to_be_visible(timeout=60_000)
    expect(student.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=60_000)
    expect(student.get_by_text("It's a ")).to_have_count(0, timeout=60_000)
    wait_for_no_ink(student, canvas_of(student))
    assert teacher_errors == [] and student_errors == []
