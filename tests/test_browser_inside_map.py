"""The hidden layer's map (Inside the network) on a classroom projector (1024x768), in Debian's Chromium: the
bundled model's 10,000 test points coloured by class with the page's image as a star, a click on a point that makes
its test image the page's image (the star moves onto it), t-SNE from the shipped map, time travel to an epoch."""
import math
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import wait_for
from tests.test_browser_app import go_to, open_app, wait_for_images, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

CHART = "[data-testid='stVegaLiteChart']"
POINTS = f"{CHART} g.mark-symbol.role-mark path"  # Vega draws the circles and the star as symbol paths
SOME_IMAGES_LOADED_JS = """() => { const images = [...document.querySelectorAll("[data-testid='stMain'] img")];
  return images.length > 0 && images.every(i => i.complete); }"""
SEPARATION = re.compile(r"Class separation (for this model|after epoch \d+): for (\d+\.\d)% of the test images")


def open_map(page: Page, app_url: str) -> list[str]:
    errors = open_app(page, app_url)
    go_to(page, "Inside the network")
    # The first view (the overview) drawn to its end and its images loaded: a click while one loads orphans it
    # (a /media 404 in the console). Its images come in a run after its text does, so wait for them to be there.
    expect(page.get_by_text("One neuron, end to end")).to_be_visible(timeout=120_000)
    page.wait_for_function(SOME_IMAGES_LOADED_JS, timeout=60_000)
    wait_for_images(page)
    page.get_by_test_id("stButtonGroup").get_by_text("The hidden layer's map", exact=True).click()
    expect(page.get_by_text(SEPARATION)).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    return errors


def separation(page: Page) -> tuple[str, float]:
    found = SEPARATION.search(page.get_by_text(SEPARATION).inner_text())
    return found.group(1), float(found.group(2))


def point_of(page: Page, index: int):
    """The circle of test image #index, found by its Vega aria-label (its tooltip's fields)."""
    return page.locator(f"{POINTS}[aria-label$='test image #: {index}']")


def centre(locator) -> tuple[float, float]:
    """The middle of an element on the screen; (nan, nan) while Vega redraws it (no element, or a detached one)."""
    box = locator.bounding_box() if locator.count() == 1 else None
    return (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2) if box else (math.nan, math.nan)


def test_a_clicked_point_becomes_the_star_and_the_page_image(projector_page: Page, app_url):
    page = projector_page
    errors = open_map(page, app_url)
    expect(page.locator(POINTS)).to_have_count(10_001, timeout=60_000)  # 10,000 test images and the star
    when, accuracy = separation(page)
    assert when == "for this model" and 80 < accuracy < 100  # PCA of the bundled model: 86.9% measured
    star = page.locator(f"{POINTS}[aria-label*='; the star: ']")
    expect(star).to_have_count(1)
    index = 9_999  # drawn last, so no other circle covers it
    expect(page.get_by_text(f"test image #{index}")).to_have_count(0)
    point = point_of(page, index)
    expect(point).to_have_count(1)
    point.scroll_into_view_if_needed()
    point.click()
    expect(page.get_by_text(re.compile(rf"the star is the page's image \(test image #{index} "))).to_be_visible(
        timeout=60_000)
    wait_until_idle(page)
    # A test image placed in the PCA map lands on its own point: the star now covers the clicked circle (Vega
    # redraws the chart after the script run has ended, so wait for it).
    def star_on_point() -> bool:
        (star_x, star_y), (point_x, point_y) = centre(star), centre(point_of(page, index))
        return abs(star_x - point_x) < 2 and abs(star_y - point_y) < 2

    assert wait_for(star_on_point), (centre(star), centre(point_of(page, index)))
    assert errors == []


def test_tsne_opens_from_the_shipped_map_and_time_travel_keeps_a_map(projector_page: Page, app_url):
    page = projector_page
    errors = open_map(page, app_url)
    page.get_by_text("t-SNE", exact=True).click()
    expect(page.get_by_text(re.compile(r"t-SNE \(from openTSNE\)"))).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    when, final_accuracy = separation(page)
    assert when == "for this model" and final_accuracy > 97  # 99.4% measured: the classes far apart
    slider = page.get_by_role("slider")
    slider.focus()
    slider.press("Home")  # the first epoch the bundled model kept
    expect(page.get_by_text(re.compile(r"Class separation after epoch 1:"))).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    expect(page.locator(POINTS)).to_have_count(10_001)
    assert separation(page)[1] < final_accuracy  # less apart after one epoch than after ten
    assert errors == []
