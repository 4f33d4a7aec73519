"""The Draw page on a classroom projector (1024x768, sidebar open), in Debian's Chromium: everything in view,
a refused drawing gets no answer, and the student's choices survive a trip to another page."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PROJECTOR
from tests.test_browser_app import DIGITS, canvas_of, go_to, open_app, stroke, wait_until_idle

pytestmark = pytest.mark.browser

ANSWER = re.compile(r"It's an? \d|Not sure")
# Words of an element's text that the browser broke across two lines: a word whose box has more than one line.
BROKEN_WORDS_JS = r"""el => { const broken = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/\S+/g)) {
      const range = document.createRange(); range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    } }
  return broken; }"""
# The right edge of the page column an element is in (the canvas lives in its component's shadow root).
COLUMN_RIGHT_JS = """el => { let e = el;
  while (e && !(e.getAttribute && e.getAttribute('data-testid') === 'stColumn')) e = e.parentElement || e.getRootNode().host;
  return e ? e.getBoundingClientRect().right : null; }"""


def draw_a_one(page: Page, app_url: str) -> list[str]:
    """Open Draw, draw a 1 and wait for its answer; returns the page's error list."""
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    stroke(page, canvas_of(page), DIGITS["1"][0])
    expect(page.get_by_text("It's a 1 (")).to_be_visible(timeout=60_000)
    return errors


def test_all_ten_labels_and_readable_steps_are_in_view_on_a_projector(projector_page: Page, app_url):
    page = projector_page
    errors = draw_a_one(page, app_url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_be_visible()
    assert sidebar.bounding_box()["width"] > 150  # the sidebar is open, taking its share of the 1024 px
    # The whole black square is in view: its column clips what passes its edge (half the page hid 14 px of it).
    canvas = canvas_of(page)
    box, column_right = canvas.bounding_box(), canvas.evaluate(COLUMN_RIGHT_JS)
    assert column_right is not None and box["x"] + box["width"] <= column_right + 0.5, \
        f"the canvas ends at x={box['x'] + box['width']:.0f} px and its column at {column_right:.0f} px"
    labels = page.get_by_role("radiogroup", name="Teach us your handwriting")
    expect(labels).to_be_visible(timeout=60_000)
    labels.scroll_into_view_if_needed()
    for digit in range(10):
        button = labels.get_by_role("radio", name=str(digit), exact=True)
        expect(button).to_be_in_viewport(ratio=1.0)  # wholly inside the 1024x768 viewport
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PROJECTOR["width"], (digit, box)

    steps = page.get_by_test_id("stExpander").filter(has_text="How your drawing becomes")
    steps.get_by_text("How your drawing becomes").click()
    images = steps.get_by_test_id("stImage")
    expect(images.first).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    assert images.count() >= 4
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        width = image.locator("img").bounding_box()["width"]
        assert width >= 90, f"step {i + 1} is {width:.0f} px wide"
        caption = image.get_by_test_id("stImageCaption")
        assert caption.evaluate(BROKEN_WORDS_JS) == [], f"step {i + 1}'s caption is broken mid-word"
    assert errors == []


def test_a_tiny_stroke_is_refused_with_no_answer(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Draw")
    stroke(page, canvas_of(page), [(0.50, 0.50), (0.51, 0.51), (0.52, 0.52)])  # a 5 px drag
    expect(page.get_by_text("That doesn't look like one digit")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("The network must always answer with one of 0-9")).to_be_visible()
    wait_until_idle(page)
    expect(page.get_by_text(ANSWER)).to_have_count(0)
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(0)  # no probabilities
    expect(page.get_by_role("radiogroup", name="Teach us your handwriting")).to_have_count(0)
    assert errors == []


def test_the_attribution_method_survives_a_trip_to_train(projector_page: Page, app_url):
    page = projector_page
    errors = draw_a_one(page, app_url)
    method = page.get_by_role("radiogroup", name="Why this answer?")
    method.get_by_text("Occlusion", exact=True).click()  # not the default (Integrated Gradients)
    expect(page.get_by_text("Occlusion for a 1:")).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    go_to(page, "Train")
    wait_until_idle(page)
    go_to(page, "Draw")
    stroke(page, canvas_of(page), DIGITS["1"][0])
    expect(page.get_by_text("It's a 1 (")).to_be_visible(timeout=60_000)
    expect(method.get_by_role("radio", name="Occlusion")).to_be_checked()
    expect(page.get_by_text("Occlusion for a 1:")).to_be_visible()
    expect(page.get_by_text("Integrated Gradients for a 1:")).to_have_count(0)
    assert errors == []
