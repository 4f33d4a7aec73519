"""A student's first stroke lands, with a mouse or a finger, wherever on the canvas it begins.

The canvas component keeps its toolbar transparent over the canvas's top-right corner until a mouse has hovered
the canvas for ~0.2 s (a finger never does): a stroke begun there, at once, fell on the hidden toolbar and was
lost. Each test draws its stroke the moment the canvas has appeared, with no hover first, starting in that corner.
"""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import INK_AT_JS, wait_for_ink_at
from tests.test_browser_app import canvas_of, watch_errors

pytestmark = pytest.mark.browser

# A "5" in one stroke, begun in the top-right corner (canvas pixels ~(238, 11)) and drawn right to left.
FIVE = [(0.85, 0.04), (0.32, 0.06), (0.30, 0.45), (0.60, 0.42), (0.74, 0.62), (0.60, 0.85), (0.28, 0.82)]
ANSWER = re.compile(r"It's an? \d|Not sure")  # "an 8"


def path(canvas, points: list[tuple[float, float]], substeps: int = 3) -> list[tuple[float, float]]:
    """Points given as fractions of the canvas -> page coordinates, with substeps points per segment."""
    box = canvas.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    out = [xy[0]]
    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
        out += [(x0 + (x1 - x0) * k / substeps, y0 + (y1 - y0) * k / substeps) for k in range(1, substeps + 1)]
    return out


def mouse_stroke(page: Page, xy: list[tuple[float, float]]) -> None:
    page.mouse.move(*xy[0])  # straight from outside the canvas: no hover before the pen goes down
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y)
    page.mouse.up()


def finger_stroke(page: Page, xy: list[tuple[float, float]]) -> None:
    """A one-finger drag, sent as the touchscreen sends it (touchstart, touchmove..., touchend) through Chromium's
    input pipeline, which hit-tests it like a real finger: whatever lies on top at that point receives it."""
    cdp = page.context.new_cdp_session(page)

    def finger(x, y):
        return [{"x": x, "y": y, "id": 1, "radiusX": 5, "radiusY": 5, "force": 1}]

    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": finger(*xy[0])})
    for x, y in xy[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": finger(x, y)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def first_stroke_on_a_fresh_draw_page(page: Page, app_url: str, draw) -> None:
    """Open Draw, draw FIVE with draw the moment the canvas is there, and check its ink and its answer."""
    errors = watch_errors(page)
    page.goto(app_url + "/draw")
    expect(page.get_by_role("heading", name="Draw a digit")).to_be_visible(timeout=60_000)
    canvas = canvas_of(page)
    box = canvas.bounding_box()
    draw(page, path(canvas, FIVE))
    start_x, start_y = FIVE[0][0] * box["width"], FIVE[0][1] * box["height"]
    wait_for_ink_at(page, canvas, start_x, start_y)  # the stroke's very beginning is on the canvas
    expect(page.get_by_text(ANSWER).first).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_a_first_mouse_stroke_begun_in_the_corner_lands(page: Page, app_url):
    first_stroke_on_a_fresh_draw_page(page, app_url, mouse_stroke)


@pytest.fixture
def touch_page(new_context):
    """A page in a touch-screen context (hasTouch): no hover, ever."""
    context = new_context(has_touch=True, viewport={"width": 1280, "height": 1000})
    return context.new_page()


def test_a_first_finger_stroke_begun_in_the_corner_lands(touch_page: Page, app_url):
    assert touch_page.evaluate("() => matchMedia('(hover: none)').matches")  # a device without hover
    first_stroke_on_a_fresh_draw_page(touch_page, app_url, finger_stroke)


def test_a_finger_tick_in_the_corner_adds_ink_and_erases_nothing(touch_page: Page, app_url):
    """The hidden toolbar's last button resets the canvas: a finger's tick there used to wipe the drawing."""
    page = touch_page
    errors = watch_errors(page)
    page.goto(app_url + "/draw")
    canvas = canvas_of(page)
    box = canvas.bounding_box()
    finger_stroke(page, path(canvas, [(0.5, 0.25), (0.5, 0.55), (0.5, 0.85)]))  # a "1"
    wait_for_ink_at(page, canvas, 0.5 * box["width"], 0.55 * box["height"])
    expect(page.get_by_text(ANSWER).first).to_be_visible(timeout=60_000)
    corner = (0.94, 0.03)  # canvas pixels ~(263, 8)
    finger_stroke(page, path(canvas, [corner, (corner[0] - 0.02, corner[1] + 0.01)], substeps=2))
    wait_for_ink_at(page, canvas, corner[0] * box["width"], corner[1] * box["height"])
    one = [canvas.element_handle(), 0.5 * box["width"], 0.55 * box["height"]]
    assert page.evaluate(f"args => ({INK_AT_JS})(args)", one), "the tick erased the drawing"
    assert errors == []
