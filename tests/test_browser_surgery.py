"""Filter surgery (Experiments) on a classroom projector (1024x768), in Debian's Chromium: a Sobel kernel set on
conv1's filter 0 changes the edited network's accuracy on the 10,000 test images, read from the page beside the
original's."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser_app import choose_from_list, open_app, open_experiment, wait_for_images, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.mnist]


def accuracy(page: Page, which: str) -> str:
    """The value ("99.28%") of the metric "<which>, 10,000 test images"."""
    metric = page.get_by_test_id("stMetric").filter(has_text=f"{which}, 10,000 test images")
    expect(metric).to_be_visible(timeout=120_000)
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def test_a_sobel_kernel_on_a_conv1_filter_changes_the_accuracy(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    open_experiment(page, "Filter surgery")
    expect(page.get_by_role("heading", name="Filter surgery")).to_be_visible(timeout=60_000)
    original = accuracy(page, "Original")
    assert re.fullmatch(r"\d+\.\d\d%", original) and accuracy(page, "Edited") == original  # nothing edited yet
    source = page.get_by_role("combobox", name="Start from")
    option = page.get_by_role("option", name="Sobel x", exact=True)
    source.scroll_into_view_if_needed()  # a click that scrolls the page first lands before the list can open
    choose_from_list(page, source, option)
    expect(source).to_have_value("Sobel x", timeout=60_000)
    expect(page.get_by_text("Vertical edges:", exact=False)).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    expect(page.get_by_label("Row 2")).to_have_value("-2  0  2", timeout=60_000)  # Sobel's middle row, as text
    page.get_by_role("button", name="Apply to filter 0").click()
    sentence = page.get_by_text(re.compile(r"^Setting filter 0 of conv1 by hand"))
    expect(sentence).to_be_visible(timeout=180_000)  # measured on the 10,000: seconds on a busy machine
    wait_for_images(page)
    edited = accuracy(page, "Edited")
    assert accuracy(page, "Original") == original
    assert float(edited.rstrip("%")) < float(original.rstrip("%")) - 1  # a Sobel is no trained filter
    assert f"(from {original} to {edited})" in sentence.inner_text()
    expect(page.get_by_text("map 0: edited", exact=False)).to_be_visible(timeout=60_000)  # filter 0, enlarged
    maps = page.get_by_text("first-layer maps before ReLU", exact=False)
    expect(maps).to_have_count(2)
    for caption in maps.all():
        box = caption.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1024  # original and edited maps fit side by side
    assert errors == []
