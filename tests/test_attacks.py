"""What a student's browser can send to the real app, sent at the protocol level (scripts/loadtest.py's client).

The app runs in its own process (tests.conftest.start_app), so its memory can be read from /proc.
"""
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, start_app, stop_app, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402

pytestmark = pytest.mark.browser
MB = 1024  # /proc reports kB


@pytest.fixture(scope="module")
def attacked_app(tmp_path_factory):
    """(process, url, log file) of an app of its own: its memory is the test's measurement, shared with nobody."""
    workdir = tmp_path_factory.mktemp("attacked-app")
    process, url = start_app(workdir)
    yield process, url, workdir / "streamlit.log"
    stop_app(process)


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak since start) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def attack(url: str, png: bytes, then_draw: str | None = "7") -> dict:
    # A thread of its own: pytest-playwright's sync API may keep an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(loadtest.forged_canvas_attack(url, png, then_draw),
                                                         300)).result()


def test_forged_8000px_canvas_value_is_refused_before_decoding(attacked_app):
    process, url, log = attacked_app
    honest = attack(url, loadtest.blank_png(280, 280))  # warm up: page, model and attribution loaded once
    assert honest["forged_exceptions"] == [] and any("It's a 7 " in t for t in honest["after"]), honest
    # The first drawing also starts the not-a-digit check's one fit in the background (~200 MB at its peak):
    # measure the attack after it, not the fit.
    assert wait_for(lambda: "not-a-digit check is ready" in log.read_text(), timeout=600), log.read_text()[-2000:]
    peak_before = memory_kb(process.pid, "VmHWM")

    forged = loadtest.blank_png(8000, 8000)  # ~250 KB on the wire, 256 MB as RGBA pixels
    report = attack(url, forged)

    grown_mb = (memory_kb(process.pid, "VmHWM") - peak_before) / MB
    assert grown_mb < 150, f"the server's peak memory grew by {grown_mb:.0f} MB"
    assert report["forged_exceptions"] == []
    assert any("8000x8000 pixels, but the canvas is 280x280" in text for text in report["forged"]), report["forged"]
    assert not any("It's a" in text or "Not sure" in text for text in report["forged"])
    # The attacker's own next stroke, an honest one, is still read.
    assert report["after_exceptions"] == [] and any("It's a 7 " in text for text in report["after"]), report


@pytest.mark.parametrize("value, sentence", [
    ({"drawing": "not a drawing"}, "did not arrive as a picture from the canvas"),
    ({"drawing": {"raw": {}, "data": 12345}}, "did not arrive as a picture from the canvas"),
    ({"drawing": {"raw": {}, "data": "data:image/png;base64,!!!!"}}, "not a picture this app can read"),
])
def test_canvas_values_of_another_shape_get_a_sentence_not_an_exception(attacked_app, value, sentence):
    _, url, _ = attacked_app

    async def send():
        ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        async with loadtest.websockets.connect(ws_url, subprotocols=["streamlit"], origin=url) as ws:
            client = loadtest.StreamlitClient(ws, url)
            await client.run(first=True)
            exceptions = []
            _, texts = await client.run(widgets={client.widgets["canvas"]: value}, exceptions=exceptions)
            return texts, exceptions

    with ThreadPoolExecutor(1) as pool:
        texts, exceptions = pool.submit(asyncio.run, asyncio.wait_for(send(), 300)).result()
    assert exceptions == []
    assert any(sentence in text for text in texts), texts
