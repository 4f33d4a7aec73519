"""The Train and Home pages on a classroom projector (1024x768, sidebar open), in Debian's Chromium: the Train
form's Start is whole without scrolling, the form keeps its preset across a trip to Draw and Start launches what it
shows; an MLP on Fashion-MNIST trains to its end, is labelled so and becomes the active model; Home's numbers and
layer table are whole, not cut with an ellipsis or inside a scrolling grid."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PROJECTOR
from tests.test_browser_app import choose_from_list, go_to, open_app, wait_until_idle

pytestmark = pytest.mark.browser

# Elements (the given ones and everything inside them) whose text is wider than their box: cut, or scrolled.
OVERFLOWING_JS = """els => els.flatMap(el => [el, ...el.querySelectorAll('*')])
  .filter(e => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0).map(e => e.innerText || e.tagName)"""


# True once an element's box has stayed put for 10 animation frames in a row (polled every frame).
STEADY_JS = """el => { const box = JSON.stringify(el.getBoundingClientRect());
  el._steadyFrames = el._lastBox === box ? (el._steadyFrames || 0) + 1 : 0; el._lastBox = box;
  return el._steadyFrames >= 10; }"""


def overlaps(a: dict, b: dict) -> bool:
    """Whether two bounding boxes (Playwright's x, y, width, height) share any area."""
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.get_by_role("combobox", name=label)).to_have_value(option, timeout=60_000)


def test_fast_is_still_chosen_after_a_trip_to_draw_and_start_launches_fast(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Train")
    choose(page, "Preset", "FAST (Adam, one cycle)")
    epochs = page.get_by_label("Epochs").first
    expect(epochs).to_have_value("1", timeout=60_000)  # FAST's form is in
    # Start whole on the projector, nothing scrolled: Streamlit's 6rem above the title put it on the bottom edge.
    assert page.evaluate("[document.scrollingElement, ...document.querySelectorAll('*')].every(e => !e.scrollTop)")
    expect(page.get_by_role("button", name="Start")).to_be_in_viewport(ratio=1.0)
    name = page.get_by_label("Run name")
    name.fill("projector-fast")
    name.press("Enter")
    expect(page.get_by_text("Press Enter to apply")).to_have_count(0, timeout=60_000)  # the name reached the server
    wait_until_idle(page)

    go_to(page, "Draw")
    expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=60_000)
    go_to(page, "Train")
    expect(page.get_by_role("combobox", name="Preset")).to_have_value("FAST (Adam, one cycle)", timeout=60_000)
    expect(epochs).to_have_value("1", timeout=60_000)
    expect(name).to_have_value("projector-fast", timeout=60_000)

    page.get_by_role("button", name="Start").click()
    watched = page.get_by_role("combobox", name="Watch run")
    expect(watched).to_have_value(re.compile(r"^projector-fast \("), timeout=60_000)
    # The run's own recipe, read from the server's job: FAST, not the ARTICLE x 10 a lost choice used to start.
    recipe = page.get_by_text("FAST: 1 epoch of 30,000 images, batch 96, learning rate 0.01")
    expect(recipe).to_be_visible(timeout=60_000)
    # Paused, so the run waits with its charts drawn: a chart's hover toolbar must not cover Stop (it covered it
    # when Stop sat mid-page above the left chart's top-right corner).
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=60_000)  # after the first step
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible(timeout=60_000)
    stop = page.get_by_role("button", name="Stop")
    for chart in page.get_by_test_id("stVegaLiteChart").all()[:2]:  # the top row, just below the buttons
        chart.hover()
        toolbar = page.locator("[data-testid=stElementContainer]:hover [data-testid=stElementToolbar]")
        expect(toolbar).to_be_visible(timeout=60_000)
        page.wait_for_function(STEADY_JS, arg=toolbar.element_handle(), polling="raf")  # it slides in
        for button in toolbar.get_by_test_id("stElementToolbarButton").all():
            assert not overlaps(button.bounding_box(), stop.bounding_box())
    stop.click()  # the shared test server's training slot is free again
    expect(page.get_by_text(re.compile(r"^Stopped "))).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []  # among them Vega's "Infinite extent" of an empty chart


def test_an_mlp_on_fashion_mnist_trains_from_the_train_page_is_listed_as_such_and_becomes_the_active_model(
        projector_page: Page, app_url):
    """The issue's Train page: dataset and network chosen, a 1-epoch run (batch 1,024: 59 steps of an MLP) to its
    end, the run labelled with what it trained wherever it is listed, then the model every page uses."""
    page = projector_page
    errors = open_app(page, app_url)
    go_to(page, "Train")
    choose(page, "Dataset", "Fashion-MNIST")
    expect(page.get_by_text(re.compile(r"Its classes: T-shirt/top, Trouser, .*Ankle boot"))).to_be_visible(
        timeout=60_000)
    choose(page, "Network", "An MLP")
    expect(page.get_by_text("what the convolutions add", exact=False)).to_be_visible(timeout=60_000)  # its lesson
    # The network's default recipe, on a laptop's teacher: ARTICLE's (10 epochs at batch 128).
    expect(page.get_by_role("combobox", name="Preset")).to_have_value("ARTICLE (the tutorial)", timeout=60_000)
    epochs = page.get_by_label("Epochs").first
    expect(epochs).to_have_value("10", timeout=60_000)
    name = page.get_by_label("Run name")
    expect(name).to_have_value(re.compile(r"^fashion-mlp-article-"), timeout=60_000)  # the default name says what it trains
    # One field at a time, each once the page has run with the last: a value typed while a run still draws can
    # come back as the old one (a fresh-clone run started batch 128 after 1024 was typed).
    epochs.fill("1")
    epochs.press("Enter")
    wait_until_idle(page)
    expect(epochs).to_have_value("1", timeout=60_000)
    batch = page.get_by_label("Batch size").first
    batch.fill("1024")
    batch.press("Enter")
    wait_until_idle(page)
    expect(batch).to_have_value("1024", timeout=60_000)
    name.fill("projector-mlp")
    name.press("Enter")
    expect(page.get_by_text("Press Enter to apply")).to_have_count(0, timeout=60_000)  # every value reached the server
    wait_until_idle(page)
    page.get_by_role("button", name="Start").click()

    watched = page.get_by_role("combobox", name="Watch run")
    expect(watched).to_have_value(re.compile(r"^projector-mlp \("), timeout=60_000)
    expect(page.get_by_text(re.compile(r"^Finished: [\d.]+% after 1 epoch, "))).to_be_visible(timeout=300_000)
    expect(watched).to_have_value("projector-mlp (finished, an MLP on Fashion-MNIST)", timeout=60_000)
    expect(page.get_by_text(re.compile(r"^An MLP on Fashion-MNIST \(its 10 classes"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text("ARTICLE: 1 epoch, batch 1024, learning rate 0.001")).to_be_visible(timeout=60_000)

    # The model choice, below the live panel, follows once the page has run again after the run ended.
    choice = page.get_by_role("combobox", name="Active model (used by the other pages)")
    option = page.get_by_role("option", name="projector-mlp (an MLP on Fashion-MNIST)", exact=True)
    choose_from_list(page, choice, option)
    expect(choice).to_have_value("projector-mlp (an MLP on Fashion-MNIST)", timeout=60_000)
    expect(page.get_by_text("projector-mlp: an MLP on Fashion-MNIST.")).to_be_visible(timeout=60_000)  # downloads
    go_to(page, "Home")
    expect(page.get_by_text(re.compile(r"Active model: projector-mlp, your own choice"))).to_be_visible(
        timeout=60_000)
    wait_until_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_home_numbers_and_layer_table_are_whole_on_a_projector(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    wait_until_idle(page)
    assert page.get_by_test_id("stSidebar").bounding_box()["width"] > 150  # the sidebar is open
    metrics = page.get_by_test_id("stMetric")
    expect(metrics).to_have_count(3, timeout=60_000)
    cut = page.locator("[data-testid='stMetricValue'], [data-testid='stMetricLabel']").evaluate_all(OVERFLOWING_JS)
    assert cut == [], f"metric text cut at 1024 px: {cut}"
    for index in range(metrics.count()):
        expect(metrics.nth(index)).to_be_in_viewport(ratio=1.0)

    table = page.locator("table").filter(has_text="what it does")
    expect(table).to_have_count(1, timeout=60_000)  # a real table (a data grid draws its cells on a canvas)
    explanation = table.get_by_text("ReLU keeps positive responses", exact=False)
    expect(explanation).to_be_visible()
    cut = table.evaluate_all(OVERFLOWING_JS)
    assert cut == [], f"layer table text cut or scrolled at 1024 px: {cut[:3]}"
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PROJECTOR["width"], box
    # The longest explanation is whole: its cell is as tall as the wrapped text needs.
    cell = table.locator("td").filter(has_text="softmax turns them into probabilities")
    assert cell.evaluate("td => td.scrollHeight <= td.clientHeight + 1 && td.innerText.includes('true label')")
    # Each output shape on one line (the walk saw "64 x 7 x" above "7").
    lines = table.locator("td").filter(has_text=re.compile(r"^\d+(\s+x\s+\d+)*$")).evaluate_all(
        "cells => cells.map(c => { const r = document.createRange(); r.selectNodeContents(c);"
        " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; })")
    assert len(lines) >= 10 and set(lines) == {1}, lines
    assert errors == []
