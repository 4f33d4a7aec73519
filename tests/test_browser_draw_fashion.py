"""The Draw page with a Fashion-MNIST model active, on a classroom projector (1024x768), in Debian's Chromium:
it asks for a piece of clothing, prepares the drawing by fitting its box, and answers with a clothing class.

The model is the article's network built for Fashion-MNIST and left untrained (SYNTHETIC weights: what is tested
is that the page speaks of its dataset's classes, not how well it reads), made the class model through the
teacher's saved settings, so every session of this server uses it. The not-a-digit check is fitted on real
Fashion-MNIST in the background after the first stroke.
"""
import re

import pytest
import torch
from playwright.sync_api import Page, expect

from cnn.data import FASHION_SPEC
from tests.conftest import start_app, stop_app
from tests.test_browser_app import canvas_of, open_app, stroke, wait_until_idle

pytestmark = pytest.mark.browser

RUN = "fashion-untrained"
CLASS_NAME = "|".join(re.escape(name) for name in FASHION_SPEC.class_names)
ANSWER = re.compile(rf"^(Read as ({CLASS_NAME}) \(\d+% sure\)\.|Not sure: ({CLASS_NAME}) or ({CLASS_NAME})\?)")
# A pullover coloured in with one stroke, as fractions of the canvas: across the sleeves, then back and forth down
# the body (the digit checks would call it a scribble; clothes are filled shapes). One stroke, one answer: strokes
# in quick succession replace the page's images while the browser still loads them (a /media 404 in the console).
PULLOVER = [(0.15, 0.25), (0.85, 0.25), (0.85, 0.33), (0.15, 0.33)] + [
    (0.3 if (row + side) % 2 == 0 else 0.7, 0.33 + 0.07 * row) for row in range(1, 8) for side in (0, 1)]


@pytest.fixture(scope="module")
def fashion_app_url(tmp_path_factory):
    """The app with a Fashion-MNIST model as the class model, on a free loopback port; stopped afterwards."""
    from cnn.checkpoint import make_card, save_checkpoint
    from cnn.classroom import ClassSettings, write_class_settings
    from cnn.config import ARTICLE
    from cnn.model import build_model

    workdir = tmp_path_factory.mktemp("fashion-draw")
    config = ARTICLE.replace(dataset="fashion")
    model = build_model(config, generator=torch.Generator().manual_seed(0))
    save_checkpoint(workdir / "runs" / RUN / "model.pt", model, make_card(config, model, accuracy=0.1))
    write_class_settings(workdir / "runs", ClassSettings(class_model=RUN))
    process, url = start_app(workdir)
    yield url
    stop_app(process)


def test_a_drawing_for_a_fashion_model_is_fitted_and_read_as_a_clothing_class(projector_page: Page, fashion_app_url):
    page = projector_page
    errors = open_app(page, fashion_app_url)
    page.get_by_test_id("stSidebarNav").get_by_text("Draw", exact=True).click()
    expect(page.get_by_role("heading", name="Draw a piece of clothing", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Fashion-MNIST's 10,000 test images")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Draw a piece of clothing in the black square")).to_be_visible(timeout=60_000)
    canvas = canvas_of(page)
    stroke(page, canvas, PULLOVER)
    answer = page.get_by_text(ANSWER)
    expect(answer).to_be_visible(timeout=90_000)
    expect(answer).to_be_in_viewport()  # beside the canvas, on the projector's first screen
    wait_until_idle(page)
    expect(page.get_by_text("That doesn't look like")).to_have_count(0)  # a filled shape is not refused
    expect(page.get_by_text(re.compile(r"It's an? \d"))).to_have_count(0)  # no digit answer
    chart = page.get_by_test_id("stVegaLiteChart")
    expect(chart).to_have_count(1)
    expect(page.get_by_text("The network must always answer with one of its 10 classes")).to_be_visible()

    steps = page.get_by_test_id("stExpander").filter(has_text="How your drawing becomes a 28x28 Fashion-MNIST-style")
    steps.get_by_text("How your drawing becomes").click()
    expect(steps.get_by_text("longer side made 28 px")).to_be_visible(timeout=60_000)
    expect(steps.get_by_text("its box centred in 28x28")).to_be_visible()
    expect(steps.get_by_text("20 px")).to_have_count(0)  # MNIST's recipe is not the one shown

    expect(page.get_by_role("radiogroup", name="Teach us your handwriting")).to_have_count(0)  # the set holds digits
    expect(page.get_by_text("The class's handwriting set holds digits")).to_be_visible(timeout=60_000)
    assert errors == []
