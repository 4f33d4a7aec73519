"""The network at a glance and one neuron end to end, on a classroom projector (1024x768) in Debian's Chromium: the
overview for a test image is one chart with a thumbnail per map, a click on a map opens it, a click on one of its
cells shows that unit's partial sums (their total checked against F.conv2d here); a dense unit and an output show
their strongest inputs."""
import re

import pytest
import torch
import torch.nn.functional as F
from playwright.sync_api import Page, expect

from tests.test_browser_app import go_to, open_app, wait_for_images, wait_until_idle

pytestmark = pytest.mark.browser

OVERVIEW = ".st-key-glance_overview"  # the charts' keys (st-key-<key> on their containers)
CELLS = ".st-key-glance_cell"


def open_glance(page: Page, url: str) -> list[str]:
    """Open the app, go to Inside the network (its first view is the overview), wait until it is drawn."""
    errors = open_app(page, url)
    go_to(page, "Inside the network")
    expect(page.get_by_text("One neuron, end to end")).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    return errors


def click_and_wait(page: Page, target, then) -> None:
    """Click target (a chart mark), then wait for the text `then` and for the rerun to end."""
    target.scroll_into_view_if_needed()
    target.click()
    expect(then).to_be_visible(timeout=60_000)
    wait_until_idle(page)
    wait_for_images(page)


def conv2_before_relu(model, image: torch.Tensor, channel: int, row: int, col: int) -> float:
    """The bundled model's conv2 value before ReLU, computed here with F ops straight from its weights."""
    x = F.max_pool2d(F.relu(F.conv2d(image, model.conv1.weight, padding=1)), 2, 2, ceil_mode=True)
    return F.conv2d(x, model.conv2.weight, padding=1)[0, channel, row, col].item()


@pytest.mark.mnist
def test_a_map_clicked_in_the_overview_opens_and_a_unit_shows_its_partial_sums(projector_page: Page, app_url,
                                                                               real_mnist):
    from cnn.checkpoint import BUNDLED_MODEL, load_checkpoint

    model, _ = load_checkpoint(BUNDLED_MODEL)
    image = real_mnist.test_images[0].float().div(255)[None, None]  # the page opens on test image #0
    with torch.no_grad():
        expected = conv2_before_relu(model, image, 35, 3, 4)
    maps = sum(getattr(model, name).out_channels for name in ("conv1", "conv2", "conv3"))
    page = projector_page
    errors = open_glance(page, app_url)
    tiles = page.locator(f"{OVERVIEW} image")
    expect(tiles).to_have_count(1 + 2 * maps + 1 + 10)  # input, each conv's and pool's maps, the FC strip, outputs
    # Beneath each column its shape, on two lines (maps, then their size): read back line by line
    lines = page.locator(f"{OVERVIEW} text").evaluate_all(
        "texts => texts.map(t => t.querySelectorAll('tspan').length ? "
        "Array.from(t.querySelectorAll('tspan')).map(s => s.textContent).join(' x ') : t.textContent)")
    for shape in ("1 x 28 x 28", "32 x 28 x 28", "64 x 7 x 7", "128 x 4 x 4", "625", "10"):
        assert lines.count(shape) == 1, (shape, lines)
    box = page.locator(OVERVIEW).bounding_box()
    assert box["x"] + box["width"] <= 1024  # the whole network fits the projector's width

    click_and_wait(page, page.locator(f"{OVERVIEW} image[aria-label='conv2 map 35']"),
                   page.get_by_text("conv2 map 35 enlarged: click a cell to follow that unit."))
    cells = page.locator(f"{CELLS} path[aria-label^='row ']")
    expect(cells).to_have_count(14 * 14)  # the enlarged map: one cell per position of conv2's 14x14
    click_and_wait(page, page.locator(f"{CELLS} path[aria-label='row 3, column 4']"),
                   page.get_by_text(re.compile(r"conv2 map 35 at row 3, column 4 before ReLU")))
    expect(page.get_by_text(re.compile(rf"the 32 partial sums add up to {expected:.3f}"))).to_be_visible()
    expect(page.get_by_text(re.compile(rf"at row 3, column 4 before ReLU, {expected:.3f}\."))).to_be_visible()
    expect(page.locator("[data-testid='stVegaLiteChart'] text").filter(
        has_text="Its 32 partial sums, largest first")).to_have_count(1)
    expect(page.get_by_text(re.compile(r"can only see input rows 3-10, columns 5-12"))).to_be_visible()
    assert errors == []


def test_a_dense_unit_and_an_output_show_their_strongest_inputs(projector_page: Page, app_url):
    page = projector_page
    errors = open_glance(page, app_url)
    click_and_wait(page, page.locator(f"{OVERVIEW} image[aria-label='fc: 625 units']"),
                   page.get_by_text("fc: its 625 units, row by row; click one to follow it."))
    click_and_wait(page, page.locator(f"{CELLS} path[aria-label='unit 100']"),
                   page.get_by_text(re.compile(r"^fc unit 100 weighs all 2,048 values of pool3")))
    expect(page.get_by_text("Its 12 strongest inputs (largest |weight x input|) of 2,048:")).to_be_visible()
    outputs = page.locator(f"{OVERVIEW} image[aria-label^='7: ']")  # the class 7's square ("7: 99.9%")
    click_and_wait(page, outputs, page.get_by_text(re.compile(r"^output 7 weighs all 625 values of fc")))
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []
