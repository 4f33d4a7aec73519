"""scripts/stroke_latency.py measures mouse-up -> answer in the page: one sample per stroke, each paired with its own
answer. No time is asserted, only which events a sample is made of and their order."""
import base64
import sys

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import stroke_latency  # noqa: E402


def b64(message: ForwardMsg) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def answer_delta(text: str) -> str:
    """A ForwardMsg as Streamlit sends an st.markdown: a new element with its body."""
    message = ForwardMsg()
    message.delta.new_element.markdown.body = text
    return b64(message)


def finished() -> str:
    message = ForwardMsg()
    message.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
    return b64(message)


def test_message_kind_finds_the_answer_and_the_end_of_the_run():
    assert stroke_latency.message_kind(answer_delta("**It's a 7 (99% sure).**")) == ("delta", True)
    assert stroke_latency.message_kind(answer_delta("Not sure: 4 or 9? (48% vs 40%)")) == ("delta", True)
    assert stroke_latency.message_kind(answer_delta("Draw a digit in the black square")) == ("delta", False)
    assert stroke_latency.message_kind(finished()) == ("script_finished", False)
    assert stroke_latency.message_kind(None) == (None, False)  # a large message the page did not keep


def test_each_sample_is_made_of_its_own_strokes_messages():
    """Three strokes: one answered on an empty page, one drawn while an answer was shown (its 'answer' is the old
    one), one never answered (refused). Only the first is a sample, and its stages come from its own messages."""
    out = {"dir": "out", "b64": None}
    messages = [
        {"t": 1204.0, "bytes": 9000, **out},  # stroke 0's canvas value
        {"t": 1210.0, "dir": "in", "bytes": 800, "b64": None},  # new_session (not kept: say so)
        {"t": 1250.0, "dir": "in", "bytes": 150, "b64": answer_delta("**It's a 1 (100% sure).**")},
        {"t": 1300.0, "dir": "in", "bytes": 78, "b64": finished()},
        {"t": 2204.0, "bytes": 9500, **out},  # stroke 1's
        {"t": 2240.0, "dir": "in", "bytes": 150, "b64": answer_delta("**It's a 7 (98% sure).**")},
        {"t": 3204.0, "bytes": 400, **out},  # stroke 2's
        {"t": 3230.0, "dir": "in", "bytes": 78, "b64": finished()},
    ]
    strokes = [
        {"up": 1000.0, "answerBefore": False, "answer": 1262.0, "painted": 1270.0, "firstMessage": 0},
        {"up": 2000.0, "answerBefore": True, "answer": 2001.0, "painted": 2010.0, "firstMessage": 4},
        {"up": 3000.0, "answerBefore": False, "answer": None, "painted": None, "firstMessage": 6},
    ]
    media = [{"start": 1310.0, "end": 1330.0, "bytes": 700}, {"start": 2250.0, "end": 2400.0, "bytes": 700}]
    samples = stroke_latency.samples_from({"strokes": strokes, "messages": messages, "media": media})
    assert samples == [{"answer_ms": 262.0, "painted_ms": 270.0, "sent_ms": 204.0, "sent_bytes": 9000,
                        "first_reply_ms": 210.0, "answer_received_ms": 250.0, "messages_before_answer": 2,
                        "bytes_before_answer": 950, "finished_ms": 300.0, "server_run_ms": 96.0, "messages": 3,
                        "bytes_received": 1028, "images": 1, "images_done_ms": 330.0}]


def test_a_stroke_abandoned_for_the_next_one_is_not_a_sample():
    strokes = [{"up": 0.0, "answerBefore": False, "answer": None, "painted": None, "firstMessage": 0,
                "abandoned": True},
               {"up": 500.0, "answerBefore": False, "answer": 800.0, "painted": 801.0, "firstMessage": 0}]
    samples = stroke_latency.samples_from({"strokes": strokes, "messages": [], "media": []})
    assert [s["answer_ms"] for s in samples] == [300.0]


@pytest.mark.parametrize("n", [1, 2, 19, 20, 25, 101])
def test_percentile_is_numpys_nearest_rank(n):
    values = list(np.random.default_rng(n).normal(300, 40, n))
    for q in (0.5, 0.95):
        assert stroke_latency.percentile(values, q) == np.percentile(values, 100 * q, method="inverted_cdf")


def wait_for_answer_of_last_stroke(page: Page) -> None:
    page.wait_for_function("() => { const s = window.cnnLatency.strokes; const last = s[s.length - 1];"
                           " return last && last.answer !== null; }", timeout=60_000)
    page.locator(stroke_latency.IDLE).wait_for(timeout=60_000)


@pytest.mark.browser
def test_the_page_gives_one_sample_per_stroke_each_after_its_own_send(projector_page: Page, app_url):
    page = projector_page
    stroke_latency.open_draw(page, app_url)
    samples = stroke_latency.measure_strokes(page, 3)
    assert len(samples) == 3
    for sample in samples:
        # The canvas sends the stroke's PNG, the server answers, the answer's delta arrives, the text appears.
        assert sample["sent_bytes"] > 1000, sample  # a 280x280 PNG, not a click
        assert 0 < sample["sent_ms"] < sample["first_reply_ms"] <= sample["answer_received_ms"], sample
        assert sample["answer_received_ms"] <= sample["answer_ms"] <= sample["painted_ms"], sample
        assert sample["answer_received_ms"] <= sample["finished_ms"], sample
    expect(page.get_by_text(stroke_latency.re.compile(stroke_latency.ANSWER)).first).to_be_visible()


@pytest.mark.browser
def test_a_stroke_drawn_over_a_shown_answer_is_not_counted(projector_page: Page, app_url):
    """Without Clear the last answer is still on the page at the next mouse-up: that stroke has no answer of its
    own to wait for, so it must not become a (too short) sample."""
    page = projector_page
    stroke_latency.open_draw(page, app_url)
    stroke_latency.draw(page, stroke_latency.STROKES["1"])
    wait_for_answer_of_last_stroke(page)
    stroke_latency.draw(page, [(0.3, 0.5), (0.7, 0.5)])  # a bar across the 1: no Clear first
    wait_for_answer_of_last_stroke(page)
    taken = page.evaluate(stroke_latency.TAKE_JS)
    assert [s["answerBefore"] for s in taken["strokes"]] == [False, True]
    assert len(stroke_latency.samples_from(taken)) == 1
