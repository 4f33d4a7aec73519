"""Browser tests: the real app in Debian's Chromium through Playwright.

Nothing here waits a fixed time: each step waits for what it needs (an element, the app's own "no script is
running" flag, ink on the canvas's pixels) with a deadline generous enough for a loaded 2-core machine.
"""
import math
import re
import time

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import APP_IDLE, INK_JS, wait_for_ink, wait_for_no_ink

pytestmark = pytest.mark.browser

PAGES = {"Home": "The CNN classroom", "Train": "Train", "Draw": "Draw a digit", "Feature maps": "Feature maps and filters",
         "Inside the network": "Inside the network", "Experiments": "Experiments",
         "Compare": "Compare"}
# Streamlit logs nothing to the console on a healthy page; these are the browser's own offline notes.
IGNORED_CONSOLE = ()  # offline, any request off this machine would log an error here: none is expected
STEP = re.compile(r"step ([\d,]+) of")
# The number after "step" in the first "step N of" on the page; -1 while there is none.
STEP_JS = r"""() => { const m = document.body.innerText.match(/step ([\d,]+) of/);
  return m ? Number(m[1].replace(/,/g, '')) : -1; }"""


# Opened at a page's URL (/draw), Streamlit's front end first looks for its server under that path, then at /.
BASE_PATH_PROBE = re.compile(r"/[^/]+/_stcore/(health|host-config)$")


# Vega's warning for a chart whose scale has no data to span: the issue asks for none, so it counts as an error.
VEGA_WARNINGS = ("Infinite extent",)


def is_error(msg) -> bool:
    """A console message that means something went wrong on the page (not a note of the browser's own)."""
    if msg.type == "warning" and any(warning in msg.text for warning in VEGA_WARNINGS):
        return True
    if msg.type != "error" or any(ignored in msg.text for ignored in IGNORED_CONSOLE):
        return False
    return not BASE_PATH_PROBE.search(msg.location.get("url", ""))


def watch_errors(page: Page) -> list[str]:
    """The page's console errors and uncaught exceptions, collected from now on."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"{msg.text} ({msg.location.get('url')})") if is_error(msg) else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def open_app(page: Page, url: str) -> list[str]:
    errors = watch_errors(page)
    page.goto(url)
    expect(page.get_by_role("heading", name="The CNN classroom")).to_be_visible(timeout=60_000)
    return errors


def go_to(page: Page, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    expect(page.get_by_role("heading", name=PAGES.get(label, label), exact=True).first).to_be_visible(timeout=60_000)


def wait_until_idle(page: Page) -> None:
    """Until the app's script run has ended (every element it draws is on the page)."""
    expect(page.locator(APP_IDLE)).to_have_count(1, timeout=60_000)


def open_experiment(page: Page, name: str) -> None:
    """Go to Experiments (the sidebar link) and, once it is drawn and its images have loaded, choose the experiment
    called name. (The first experiment draws dozens of images: a click while the browser still fetches them makes
    Streamlit drop them, a /media 404 in the console; two fresh-clone runs failed so.)"""
    go_to(page, "Experiments")
    wait_for_images(page)
    page.get_by_test_id("stButtonGroup").get_by_text(name, exact=True).click()


# Installed while no script runs: any change of Streamlit's run-state flag after that is a new run starting.
WATCH_RUNS_JS = """() => { window.sawScriptRun = false; const app = document.querySelector("[data-testid='stApp']");
  new MutationObserver((records, observer) => { window.sawScriptRun = true; observer.disconnect(); })
    .observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]}); }"""
NEXT_RUN_ENDED_JS = """() => window.sawScriptRun &&
  document.querySelector("[data-testid='stApp']").dataset.testScriptState === "notRunning" """


def wait_for_next_run(page: Page) -> None:
    """Until the app has started and ended one more script run (of the page or of a fragment)."""
    wait_until_idle(page)
    page.evaluate(WATCH_RUNS_JS)
    page.wait_for_function(NEXT_RUN_ENDED_JS, timeout=60_000)


# Every image of the page has loaded (or failed): a rerun that replaces an image while the browser still fetches it
# makes Streamlit drop the file, and the browser logs a /media 404 for it.
IMAGES_LOADED_JS = """() => [...document.querySelectorAll("[data-testid='stMain'] img")].every(i => i.complete)"""


def wait_for_images(page: Page) -> None:
    """Until the script run has ended and every image it drew has loaded: then a click cannot orphan one."""
    wait_until_idle(page)
    page.wait_for_function(IMAGES_LOADED_JS, timeout=60_000)


def open_list_until_listed(page: Page, choice, option, timeout: float = 120) -> None:
    """Open the select box choice until its list holds option (a run that just ended joins it a run or two later).

    A list opened while a script run draws is the old one: open it when no script runs, and else after the next run.
    Returns with the list open and option in it.
    """
    deadline = time.monotonic() + timeout
    while True:
        wait_until_idle(page)
        choice.click()
        try:
            expect(page.get_by_role("option").first).to_be_visible(timeout=30_000)  # the list is open
        except AssertionError:
            pass  # a run of the whole page redrew the choice just then, and closed its list
        if option.count():
            return
        assert time.monotonic() < deadline, f"{option} never became a choice"
        page.keyboard.press("Escape")
        wait_for_next_run(page)


def choose_from_list(page: Page, choice, option, timeout: float = 120) -> None:
    """Choose option in the select box choice. A run of the page can close the open list between its opening and
    the click (the Teacher page redraws its run list every 2 s: a CI run's click waited 30 s for an option that had
    gone with its list), so the list is opened again and the option clicked again until a click lands."""
    deadline = time.monotonic() + timeout
    while True:
        open_list_until_listed(page, choice, option, timeout=max(1.0, deadline - time.monotonic()))
        try:
            option.first.click(timeout=5_000)
            return
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"{option} could not be chosen"
            page.keyboard.press("Escape")  # a list still open (the option covered) is closed before the next try


def test_every_page_opens_without_errors(page: Page, app_url):
    errors = open_app(page, app_url)
    for label in PAGES:
        go_to(page, label)
        wait_until_idle(page)
        expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def current_step(page: Page) -> int:
    text = page.get_by_text(STEP).first.inner_text()
    return int(STEP.search(text).group(1).replace(",", ""))


def wait_for_step_above(page: Page, step: int) -> int:
    """Wait until the page shows a training step greater than step; returns the step shown."""
    return page.wait_for_function(f"() => {{ const s = ({STEP_JS})(); return s > {step} ? s : 0; }}",
                                  timeout=120_000).json_value()


def test_training_chart_grows_across_pages_and_stop_stops_it(page: Page, app_url, context):
    errors = open_app(page, app_url)
    go_to(page, "Train")
    page.get_by_label("Run name").fill("browser-run")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text(re.compile(r"Running: epoch 1 of"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text("training loss (smoothed)").first).to_be_attached(timeout=60_000)
    before = wait_for_step_above(page, 0)
    go_to(page, "Home")  # the student leaves: the run must go on without them
    # Another session watches the run while its owner is on Home, and sees it grow.
    watcher = context.new_page()
    watcher_errors = open_app(watcher, app_url)
    go_to(watcher, "Train")
    expect(watcher.get_by_role("combobox", name="Watch run")).to_have_value("browser-run (running)", timeout=60_000)
    grown = wait_for_step_above(watcher, before + 5)
    expect(page.get_by_role("heading", name="The CNN classroom")).to_be_visible()  # the owner is still away
    go_to(page, "Train")
    assert wait_for_step_above(page, grown - 1) >= grown
    expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped (after|before) "))).to_be_visible(timeout=60_000)
    stopped_at = current_step(page)
    # "Stopped" is set when the training thread has left its loop; the watcher's panel, refreshed after that,
    # and a fresh session both see the same last step.
    expect(watcher.get_by_text(re.compile(r"Stopped (after|before) "))).to_be_visible(timeout=60_000)
    assert current_step(watcher) == stopped_at
    page.reload()
    expect(page.get_by_text(re.compile(r"Stopped (after|before) "))).to_be_visible(timeout=60_000)
    assert current_step(page) == stopped_at
    assert errors == [] and watcher_errors == []


def test_a_finished_run_can_be_chosen_without_reloading(page: Page, app_url):
    errors = open_app(page, app_url)
    go_to(page, "Train")
    expect(page.get_by_role("heading", name="Run history")).to_be_visible(timeout=60_000)
    page.get_by_role("combobox", name="Preset").click()
    page.get_by_role("option", name="Softmax baseline", exact=True).click()  # not a watched run's recipe line
    expect(page.get_by_label("Epochs").first).to_have_value("5", timeout=60_000)  # the softmax preset's form is in
    wait_until_idle(page)  # the run that filled it has ended
    # The preset's 5 epochs (~4 s): this test is about the history following a run's end. The typed name below is
    # what CI runs lost when a live tick carried the preset first (pages/train_form.py; tests/test_browser_form_race.py).
    page.get_by_label("Run name").fill("softmax-browser")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text(re.compile(r"Finished: [\d.]+% after 5 epochs, "))).to_be_visible(timeout=120_000)
    # The live panel is a fragment; the history and the model choice below it must follow it, without a reload.
    # The fragment asks for a run of the whole page when it sees the run end: on this tick or the next one. A list
    # opened while that run draws is the old one; so open it when no script runs, and else after the next run.
    choice = page.get_by_label("Active model (used by the other pages)")
    option = page.get_by_role("option", name="softmax-browser")
    open_list_until_listed(page, choice, option)
    expect(option).to_be_visible()
    assert errors == []


def stroke(page: Page, canvas, points: list[tuple[float, float]]) -> None:
    """One pen stroke through points given as fractions of the canvas, with the mouse as a person would;
    returns once the stroke's ink is on the canvas's pixels."""
    ink_before = canvas.evaluate(INK_JS)
    box = canvas.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()
    wait_for_ink(page, canvas, more_than=ink_before)


DIGITS = {
    "1": [[(0.50, 0.12), (0.50, 0.50), (0.50, 0.88)]],
    "0": [[(0.5 + 0.25 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.36 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]],
    "7": [[(0.25, 0.18), (0.5, 0.18), (0.75, 0.18), (0.62, 0.5), (0.48, 0.85)]],
}
# Same size and place for SETTLED_FRAMES animation frames in a row: a stroke drawn while the canvas still moves
# (the page around it is being drawn) would land beside it.
SETTLED_FRAMES = 10
SETTLED_JS = f"""c => {{ const r = c.getBoundingClientRect(), box = [r.x, r.y, r.width, r.height].join();
  c.settledFrames = box === c.lastBox ? (c.settledFrames || 0) + 1 : 0; c.lastBox = box;
  return Math.abs(r.width - 280) < 2 && c.settledFrames >= {SETTLED_FRAMES}; }}"""


def canvas_of(page: Page):
    """The drawing surface, once it has settled at its full size."""
    canvas = page.locator("canvas.upper-canvas")
    expect(canvas).to_have_count(1, timeout=60_000)  # one canvas: Clear empties it, it is never mounted anew
    expect(canvas).to_be_visible(timeout=60_000)
    page.wait_for_function(SETTLED_JS, arg=canvas.element_handle(), polling="raf", timeout=60_000)
    return canvas


def draw_and_read(page: Page, app_url: str, digit: str) -> list[str]:
    """Open the Draw page, draw digit with the mouse and see it read; returns the page's error list."""
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    stroke(page, canvas_of(page), DIGITS[digit][0])
    expect(page.get_by_text(f"It's a {digit} (")).to_be_visible(timeout=60_000)
    return errors


def test_drawn_digits_are_read_and_clear_empties(page: Page, app_url):
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=60_000)
    canvas = canvas_of(page)
    canvas.evaluate("c => c.dataset.first = '1'")
    for digit, strokes in DIGITS.items():
        for points in strokes:
            stroke(page, canvas_of(page), points)
        wait_for_ink(page, canvas, more_than=500)
        expect(page.get_by_text(f"It's a {digit} (")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Clear").click()
        expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("It's a ")).to_have_count(0, timeout=60_000)
        wait_for_no_ink(page, canvas)  # the canvas itself is emptied, not just the answer
    # Clear empties the same canvas: a remounted one would jump on the page while a student draws.
    expect(page.locator("canvas.upper-canvas[data-first]")).to_have_count(1)
    assert errors == []


def test_a_drawing_labelled_by_its_student_joins_the_class_set(page: Page, app_url):
    errors = draw_and_read(page, app_url, "1")
    page.get_by_role("radiogroup", name="Teach us your handwriting").get_by_role("radio", name="1").click()
    expect(page.get_by_text("Saved as a 1 to the class's handwriting set.")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Active model on the class's drawings")).to_be_visible(timeout=60_000)
    assert errors == []


def test_a_drawing_and_an_upload_are_read_side_by_side(page: Page, app_url):
    from tests.test_app_pages import _png_of_a_one

    errors = draw_and_read(page, app_url, "7")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": _png_of_a_one()}])
    expect(page.get_by_text("It's a 1 (")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("It's a 7 (")).to_be_visible()
    wait_until_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_upload_of_a_non_image_gets_a_message(page: Page, app_url):
    open_app(page, app_url)
    go_to(page, "Draw")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "homework.png", "mimeType": "image/png", "buffer": b"this is not a picture"}])
    expect(page.get_by_text("homework.png is not an image this app can read")).to_be_visible(timeout=60_000)


def test_a_drawing_sent_from_draw_appears_on_the_feature_page(page: Page, app_url):
    errors = draw_and_read(page, app_url, "7")
    page.get_by_role("button", name="Look inside").click()
    expect(page.get_by_role("heading", name="Feature maps and filters")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Input: your drawing, read as 7.")).to_be_visible(timeout=60_000)
    assert errors == []


def test_a_scribble_on_the_real_canvas_is_not_read_as_a_digit(page: Page, app_url):
    """One long back-and-forth stroke: its pixels may look like a digit, its pen path does not."""
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    zigzag = [(0.25 + 0.5 * (i % 2), 0.2 + 0.6 * i / 13) for i in range(14)]
    stroke(page, canvas_of(page), zigzag)
    expect(page.get_by_text("the pen went back and forth like a scribble")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("It's a ")).to_have_count(0)
    expect(page.get_by_text('The network must always answer with one of 0-9')).to_be_visible()
    assert errors == []
