"""What a unit wants to see (Inside the network) on a classroom projector (1024x768), in Debian's Chromium: it opens
on a class output with its picture and the 9 test images that excite it most, draws every class output's picture
on request, and opens on the map clicked in the overview."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser_app import go_to, open_app, wait_for_images, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

OVERVIEW = ".st-key-glance_overview"  # the overview chart's container (st-key-<key>)
REACHES = re.compile(r"It reaches -?\d+\.\d{3}; the strongest of the 10,000 test images reaches -?\d+\.\d{3}\.")


def open_wants(page: Page) -> None:
    """Switch Inside the network to this view and wait until its picture and patches are drawn."""
    page.get_by_test_id("stButtonGroup").get_by_text("What a unit wants to see", exact=True).click()
    expect(page.get_by_text(REACHES)).to_be_visible(timeout=180_000)  # a first picture renders: seconds here
    wait_for_images(page)


def test_a_class_output_shows_its_picture_its_patches_and_all_classes_on_request(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Inside the network")
    wait_until_idle(page)
    open_wants(page)
    # No unit chosen on another view yet: it opens on the first class output.
    expect(page.get_by_text(re.compile(r"in the direction that raises the output for 0 "))).to_be_visible()
    expect(page.get_by_text("What the output for 0 wants to see", exact=False)).to_be_visible()
    expect(page.get_by_text("The 9 test images that excite it most", exact=False)).to_be_visible()
    page.get_by_role("button", name="Draw all 10").click()
    expect(page.get_by_text("Each picture raises one class output", exact=False)).to_be_visible(timeout=300_000)
    wait_for_images(page)
    grid = page.get_by_role("img").last  # the ten pictures, side by side, fit the projector's main area
    box = grid.bounding_box()
    assert box["width"] > 300 and box["x"] + box["width"] <= 1024
    assert errors == []


def test_it_opens_on_the_map_clicked_in_the_overview(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Inside the network")
    expect(page.get_by_text("One neuron, end to end")).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    tile = page.locator(f"{OVERVIEW} image[aria-label='conv2 map 35']")
    tile.scroll_into_view_if_needed()
    tile.click()
    expect(page.get_by_text("conv2 map 35 enlarged", exact=False)).to_be_visible(timeout=60_000)
    wait_for_images(page)
    open_wants(page)
    expect(page.get_by_text(re.compile(r"in the direction that raises unit 35 of conv2 "))).to_be_visible()
    expect(page.get_by_label("Unit (0 to 63)")).to_have_value("35")
    assert errors == []
