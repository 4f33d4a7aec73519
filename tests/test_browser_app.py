"""Browser tests: the real app in Debian's Chromium through Playwright."""
import math
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import INK_JS

pytestmark = pytest.mark.browser

PAGES = {"Home": "The CNN classroom", "Train": "Train", "Draw": "Draw a digit", "Feature maps": "Feature maps and filters"}
# Streamlit logs nothing to the console on a healthy page; these are the browser's own offline notes.
IGNORED_CONSOLE = ("favicon", "net::ERR_INTERNET_DISCONNECTED", "net::ERR_NAME_NOT_RESOLVED")


def open_app(page: Page, url: str) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not any(
        ignored in msg.text for ignored in IGNORED_CONSOLE) else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    expect(page.get_by_role("heading", name="The CNN classroom")).to_be_visible(timeout=60_000)
    return errors


def go_to(page: Page, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(label, exact=True).click()
    expect(page.get_by_role("heading", name=PAGES.get(label, label), exact=True).first).to_be_visible(timeout=60_000)


def test_every_page_opens_without_errors(page: Page, app_url):
    errors = open_app(page, app_url)
    for label in PAGES:
        go_to(page, label)
        page.wait_for_timeout(1500)
        expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def current_step(page: Page) -> int:
    text = page.get_by_text(re.compile(r"step [\d,]+ of")).first.inner_text()
    return int(re.search(r"step ([\d,]+) of", text).group(1).replace(",", ""))


def test_training_chart_grows_across_pages_and_stop_stops_it(page: Page, app_url):
    errors = open_app(page, app_url)
    go_to(page, "Train")
    page.get_by_label("Run name").fill("browser-run")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text(re.compile(r"Running: epoch 1 of"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text("training loss (smoothed)").first).to_be_attached(timeout=30_000)
    page.wait_for_timeout(3000)
    before = current_step(page)
    go_to(page, "Home")  # leave: the run goes on in the background
    page.wait_for_timeout(4000)
    go_to(page, "Train")
    expect(page.get_by_text(re.compile(r"step [\d,]+ of"))).to_be_visible(timeout=30_000)
    after = current_step(page)
    assert after > before + 5, (before, after)
    charts = page.locator("[data-testid='stVegaLiteChart']")
    expect(charts.first).to_be_visible()
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped: epoch"))).to_be_visible(timeout=10_000)
    stopped_at = current_step(page)
    page.wait_for_timeout(2500)
    assert current_step(page) == stopped_at
    assert errors == []


def test_a_finished_run_can_be_chosen_without_reloading(page: Page, app_url):
    errors = open_app(page, app_url)
    go_to(page, "Train")
    expect(page.get_by_role("heading", name="Run history")).to_be_visible(timeout=60_000)
    page.get_by_label("Preset").click()
    page.get_by_text("Softmax baseline").click()
    epochs = page.get_by_label("Epochs").first
    expect(epochs).to_have_value("5", timeout=20_000)  # the softmax preset's form is in
    epochs.fill("1")
    page.get_by_label("Run name").fill("softmax-browser")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text(re.compile(r"Finished: epoch 1 of 1"))).to_be_visible(timeout=60_000)
    # The live panel is a fragment; the history and the model choice below it must follow it, without a reload.
    # (The page redraws them just after "Finished" appears; a click during that redraw opens the old list.)
    option = page.get_by_role("option", name="softmax-browser")
    for _ in range(10):
        page.get_by_label("Active model (used by the other pages)").click()
        page.wait_for_timeout(1000)
        if option.is_visible():
            break
        page.keyboard.press("Escape")
    expect(option).to_be_visible()
    assert errors == []


def stroke(page: Page, canvas, points: list[tuple[float, float]]) -> None:
    """One pen stroke through points given as fractions of the canvas, with the mouse as a person would."""
    box = canvas.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()


DIGITS = {
    "1": [[(0.50, 0.12), (0.50, 0.50), (0.50, 0.88)]],
    "0": [[(0.5 + 0.25 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.36 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]],
    "7": [[(0.25, 0.18), (0.5, 0.18), (0.75, 0.18), (0.62, 0.5), (0.48, 0.85)]],
}


def canvas_of(page: Page):
    """The drawing surface, once it has settled at its full size (after Clear it is mounted anew)."""
    canvas = page.locator("canvas.upper-canvas").last
    expect(canvas).to_be_visible(timeout=30_000)
    previous = None
    for _ in range(150):
        box = canvas.bounding_box()
        alone = page.locator("canvas.upper-canvas").count() == 1  # after Clear, the old canvas is gone
        if alone and box and abs(box["width"] - 280) < 2 and box == previous:
            return canvas
        previous = box
        page.wait_for_timeout(100)
    raise AssertionError(f"the canvas never settled at 280 px: {previous}")


def draw_and_read(page: Page, app_url: str, digit: str) -> list[str]:
    """Open the Draw page, draw digit with the mouse and see it read; returns the page's error list."""
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    stroke(page, canvas_of(page), DIGITS[digit][0])
    expect(page.get_by_text(f"It's a {digit} (")).to_be_visible(timeout=20_000)
    return errors


def test_drawn_digits_are_read_and_clear_empties(page: Page, app_url):
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=30_000)
    canvas = canvas_of(page)
    canvas.evaluate("c => c.dataset.first = '1'")
    for digit, strokes in DIGITS.items():
        for points in strokes:
            stroke(page, canvas_of(page), points)
        assert canvas.evaluate(INK_JS) > 500
        expect(page.get_by_text(f"It's a {digit} (")).to_be_visible(timeout=20_000)
        page.get_by_role("button", name="Clear").click()
        expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=20_000)
        expect(page.get_by_text("It's a ")).to_have_count(0)
        for _ in range(100):  # the canvas itself is emptied, not just the answer
            if canvas.evaluate(INK_JS) == 0:
                break
            page.wait_for_timeout(100)
        assert canvas.evaluate(INK_JS) == 0
    # Clear empties the same canvas: a remounted one would jump on the page while a student draws.
    expect(page.locator("canvas.upper-canvas[data-first]")).to_have_count(1)
    assert errors == []


def test_a_drawing_labelled_by_its_student_joins_the_class_set(page: Page, app_url):
    errors = draw_and_read(page, app_url, "1")
    page.get_by_role("radiogroup", name="Teach us your handwriting").get_by_role("radio", name="1").click()
    expect(page.get_by_text("Saved as a 1 to the class's handwriting set.")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Active model on the class's drawings")).to_be_visible(timeout=20_000)
    assert errors == []


def test_a_drawing_and_an_upload_are_read_side_by_side(page: Page, app_url):
    from tests.test_app_pages import _png_of_a_one

    errors = draw_and_read(page, app_url, "7")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": _png_of_a_one()}])
    expect(page.get_by_text("It's a 1 (")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("It's a 7 (")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_upload_of_a_non_image_gets_a_message(page: Page, app_url):
    open_app(page, app_url)
    go_to(page, "Draw")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "homework.png", "mimeType": "image/png", "buffer": b"this is not a picture"}])
    expect(page.get_by_text("homework.png is not an image this app can read")).to_be_visible(timeout=20_000)


def test_a_drawing_sent_from_draw_appears_on_the_feature_page(page: Page, app_url):
    errors = draw_and_read(page, app_url, "7")
    page.get_by_role("button", name="Look inside").click()
    expect(page.get_by_role("heading", name="Feature maps and filters")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Input: your drawing, read as 7.")).to_be_visible(timeout=30_000)
    assert errors == []
