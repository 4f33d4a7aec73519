"""Transform the image (Experiments) on a classroom projector (1024x768), in Debian's Chromium: moving test image #0
with the shift slider's keys changes the network's answer; the test-set curves and their sentences are there."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser_app import (NEXT_RUN_ENDED_JS, WATCH_RUNS_JS, draw_and_read, open_app, open_experiment,
                                    wait_for_images)

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

ANSWER = ".st-key-transform_answer"  # the answer's container (st-key-<key>)
TRANSFORMED = re.compile(r"Transformed: .+")


def open_transform(page: Page) -> None:
    open_experiment(page, "Transform the image")
    expect(page.locator(ANSWER).get_by_text(TRANSFORMED)).to_be_visible(timeout=120_000)
    wait_for_images(page)  # a slider moved while its images load would make Streamlit drop them (a 404)


def test_moving_the_image_with_the_shift_slider_changes_the_answer(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    open_transform(page)
    answer = page.locator(ANSWER)
    before = answer.inner_text()
    assert "It's a 7" in before  # test image #0, as it is
    slider = page.get_by_test_id("stSlider").filter(has_text="Right (px)").get_by_role("slider")
    slider.focus()
    slider.press("End")  # 8 px right: the 7's stem leaves the frame
    expect(slider).to_have_value("8", timeout=60_000)
    expect(answer).not_to_have_text(before, timeout=60_000)
    wait_for_images(page)
    assert "It's a 7" not in answer.inner_text()
    page.evaluate(WATCH_RUNS_JS)  # watching for the run the key starts, installed before it can start
    slider.press("Home")  # 8 px left: the answer is read again for the new image
    expect(slider).to_have_value("-8", timeout=60_000)
    page.wait_for_function(NEXT_RUN_ENDED_JS, timeout=60_000)
    wait_for_images(page)  # Reset's rerun must not replace images the browser is still fetching
    page.get_by_role("button", name="Reset").click()
    expect(answer).to_have_text(before, timeout=60_000)
    sentence = page.get_by_text("Moved by 4 pixels, softmax regression falls most", exact=False)
    expect(sentence).to_be_visible(timeout=60_000)  # read from the shipped curves
    chart = page.get_by_test_id("stVegaLiteChart").last
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1024  # the curves fit the projector
    assert errors == []


def test_a_drawing_sent_with_experiment_on_it_opens_transform_the_image(projector_page: Page, app_url):
    """Draw's 'Experiment on it' opens Experiments on Transform the image (what the button promises), with the
    drawing as the image; moving it right changes the answer read for the drawing."""
    page = projector_page
    errors = draw_and_read(page, app_url, "7")
    wait_for_images(page)
    page.get_by_role("button", name=re.compile(r"^Experiment on it")).click()
    expect(page.get_by_role("heading", name="Experiments", exact=True)).to_be_visible(timeout=60_000)
    answer = page.locator(ANSWER)
    expect(answer.get_by_text(TRANSFORMED)).to_be_visible(timeout=120_000)  # Transform the image is the one shown
    expect(page.get_by_role("radio", name="Sent from Draw")).to_be_checked()
    wait_for_images(page)
    assert "It's a 7" in answer.inner_text()
    assert errors == []
