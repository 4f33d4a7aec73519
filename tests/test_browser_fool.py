"""Fool the network (Experiments) on a classroom projector (1024x768), in Debian's Chromium: a targeted attack on a
test digit, with epsilon raised, makes the network read the chosen target; both answers are read from the page. At
the slider's end, an image one FGSM step cannot flip is told to try the targeted attack, never to raise epsilon."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser_app import open_app, open_experiment, wait_for_images, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

ORIGINAL = re.compile(r"The original reads (\S+) \(")
CHANGED = re.compile(r"The changed image reads (\S+) \(")


def read(page: Page, pattern: re.Pattern) -> str:
    """The class a "... reads X (p%)" line of the page names."""
    line = page.get_by_text(pattern)
    expect(line).to_be_visible(timeout=120_000)
    return pattern.search(line.inner_text()).group(1)


def open_list(page: Page, choice) -> None:
    """Open a select box's list. A select box that has just appeared (here: when "a chosen target" is picked)
    takes the first click as focus only, and its list stays closed: click until it is open."""
    for _ in range(5):
        wait_until_idle(page)
        choice.click()
        try:
            expect(choice).to_have_attribute("aria-expanded", "true", timeout=5_000)
            return
        except AssertionError:
            continue
    raise AssertionError("the target's list never opened")


def test_a_targeted_attack_flips_a_digit_to_the_chosen_target(projector_page: Page, app_url):
    page = projector_page
    errors = open_app(page, app_url)
    open_experiment(page, "Fool the network")
    expect(page.get_by_role("heading", name="Fool the network")).to_be_visible(timeout=60_000)
    wait_for_images(page)
    page.get_by_text("A chosen target (20 gradient steps)", exact=True).click()
    target_box = page.get_by_role("combobox", name="Target digit")
    expect(target_box).to_be_visible(timeout=60_000)
    wait_for_images(page)
    original = read(page, ORIGINAL)
    target = str((int(original) + 3) % 10)  # not the default (the next digit): a choice made here
    open_list(page, target_box)
    page.get_by_role("option", name=target, exact=True).click()
    expect(target_box).to_have_value(target, timeout=60_000)
    wait_until_idle(page)
    epsilon = page.get_by_test_id("stSlider").filter(has_text="Epsilon").get_by_role("slider")
    epsilon.focus()
    epsilon.press("End")  # 0.5: every pixel may move half the grey range
    expect(page.get_by_text("Epsilon 0.500 = 127 of 255 grey levels.")).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"now reads as .*the target is reached"))).to_be_visible(timeout=120_000)
    wait_for_images(page)
    assert read(page, ORIGINAL) == original
    assert read(page, CHANGED) == target != original
    box = page.get_by_text("Right: the change, amplified", exact=False).bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1024  # the three images fit the projector
    assert errors == []


def test_at_the_sliders_end_an_image_fgsm_cannot_flip_is_never_told_to_raise_epsilon(projector_page: Page, app_url):
    # The walk of issue 14: test image #0 (the page's first image), which no FGSM epsilon up to 0.5 flips, was told
    # "raise epsilon" at 0.5 and "the answer changes" in the paragraph below.
    page = projector_page
    errors = open_app(page, app_url)
    open_experiment(page, "Fool the network")
    expect(page.get_by_role("heading", name="Fool the network")).to_be_visible(timeout=60_000)
    wait_for_images(page)
    epsilon = page.get_by_test_id("stSlider").filter(has_text="Epsilon").get_by_role("slider")
    epsilon.focus()
    epsilon.press("End")
    expect(page.get_by_text("Epsilon 0.500 = 127 of 255 grey levels.")).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"One FGSM step does not change .* try a chosen target"))).to_be_visible(
        timeout=120_000)
    assert read(page, ORIGINAL) == read(page, CHANGED)
    expect(page.get_by_text(re.compile("raise epsilon", re.IGNORECASE))).to_have_count(0)
    expect(page.get_by_text("A change too small for us to notice", exact=False)).to_be_visible()
    assert errors == []
