"""Browser tests: the real app in Debian's Chromium through Playwright."""
import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

PAGES = {"Home": "The CNN classroom", "Train": "Train"}
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
