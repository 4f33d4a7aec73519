"""scripts/loadtest.py's light students: Streamlit's own WebSocket protocol against the real app, no browser."""
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402


def test_websocket_students_draw_are_read_and_clear(app_url):
    latencies, answers, errors = [], [], []

    async def class_of_two():
        await asyncio.gather(*(loadtest.websocket_student(app_url, 3, latencies, answers, errors, index, 0.0)
                               for index in range(2)))

    # A thread of its own: pytest-playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(class_of_two(), 180)).result()
    assert errors == []
    assert len(latencies) == 6 and all(seconds > 0 for seconds in latencies)
    assert sorted(digit for digit, _ in answers) == ["1", "1", "4", "4", "7", "7"]
    assert all(f"It's a {digit} " in text for digit, text in answers), answers
