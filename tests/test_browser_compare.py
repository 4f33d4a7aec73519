"""The Compare page on a classroom projector (1024x768, sidebar open), in Debian's Chromium: from a fresh runs folder
it compares the bundled 1-epoch models, with the table, the shift chart naming the three networks the issue asks
for, and a sentence read from the measured curves; nothing scrolls sideways and the console stays clean."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PROJECTOR
from tests.test_browser_app import go_to, open_app, wait_until_idle

pytestmark = pytest.mark.browser

CHART = "[data-testid='stVegaLiteChart']"
NETWORKS = ("softmax regression", "an MLP", "the article's CNN")  # cnn.model.NETWORKS' titles
# The widest thing on the page: the document, Streamlit's main block, and every chart's drawing.
WIDEST_JS = """() => { const main = document.querySelector("[data-testid='stMain']");
  const charts = [...document.querySelectorAll("[data-testid='stVegaLiteChart'] svg")]
    .map(s => s.getBoundingClientRect().right);
  return Math.max(document.documentElement.scrollWidth, main ? main.scrollWidth : 0, ...charts); }"""


def test_compare_shows_the_bundled_networks_table_and_shift_curves_on_a_projector(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Compare")

    table = page.locator("table").filter(has_text="accuracy")
    expect(table).to_have_count(1, timeout=120_000)
    for title in NETWORKS:
        expect(table.locator("td").filter(has_text=re.compile(f"^{re.escape(title)}$"))).to_have_count(1)

    shift_chart = page.locator(CHART).filter(has_text="Accuracy on shifted test images")
    expect(shift_chart).to_have_count(1, timeout=120_000)
    legend = shift_chart.locator("svg text")  # Vega draws SVG here: the legend's names are text on the page
    for title in NETWORKS:
        expect(legend.filter(has_text=re.compile(f"^{re.escape(title)}$"))).to_have_count(1, timeout=60_000)
    expect(shift_chart.locator("svg text").filter(has_text="pixels shifted")).to_have_count(1)
    # What to see, said from the measured numbers: who falls most from 0 to 4 pixels.
    expect(page.get_by_text(re.compile(r"^Moved by 4 pixels, .+ falls most, from \d"))).to_be_visible()
    expect(page.locator(CHART).filter(has_text="Accuracy per class")).to_have_count(1, timeout=60_000)

    wait_until_idle(page)
    assert page.get_by_test_id("stSidebar").bounding_box()["width"] > 150  # the sidebar is open
    # The table fits its column: 7 columns made it 5 px wider, and the column scrolled sideways under it.
    over = table.evaluate("t => t.getBoundingClientRect().right - t.parentElement.getBoundingClientRect().right")
    assert over <= 0.5, f"the table is {over:.0f} px wider than its column: it scrolls sideways"
    widest = page.evaluate(WIDEST_JS)
    assert widest <= PROJECTOR["width"], f"the page is {widest} px wide at {PROJECTOR['width']} px: it scrolls sideways"
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []  # among them Vega's "Infinite extent" of an empty chart
