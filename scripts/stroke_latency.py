"""Mouse-up to the answer on the Draw page, measured in the page itself (a benchmark we keep, not a test).

    python scripts/stroke_latency.py [--strokes 25] [--training] [--students 20] [--url URL] [--json]

Starts `streamlit run app.py` on loopback with its own runs folder (or uses --url), opens Debian's Chromium at
1024x768 and draws --strokes strokes with the mouse on the real canvas, alternating a 1, a 7 and a 4.

How one sample is taken, all in the page's own clock (performance.now()), nothing polled:
- a capture-phase `pointerup` listener on window stamps the stroke's end (`up`), and says whether an answer text
  was on the page at that moment; before each stroke the script presses Clear and waits for the empty canvas's
  hint and an idle app, so no answer is there and the next one to appear can only be this stroke's;
- a MutationObserver on the whole document stamps the first mutation after `up` that puts an answer text
  ("It's a 7 (98% sure).", "Not sure: ...") in the page (`answer`), and the next animation frame (`painted`);
- the page's WebSocket is wrapped: the first message sent after `up` is the canvas's value (`sent`, its size),
  the first received after it (`first_reply`), the one that carries the answer text (`answer_received`), and
  Streamlit's script_finished message (`finished`); /media images are timed by the Resource Timing API.
A stroke whose answer did not appear (a refusal, a missed canvas) is reported, not counted.

--training first starts a training run from the Train page, as a teacher would (FAST by default, --preset
to choose); --students N runs scripts/loadtest.py's light WebSocket students against the same server, each
drawing a digit every --draw-seconds, for the whole measurement.

The JSON has p50/p95/min/max of mouse-up -> answer text in ms, every sample, and each stage's median.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import re
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import CHROMIUM_ARGS, INK_JS, PROJECTOR, chromium_path, start_app, stop_app  # noqa: E402

ANSWER = r"It's an? \d|Not sure"
HINT = "Draw a digit in the black square"
STROKES = {  # one pen stroke per digit, as fractions of the canvas (scripts/loadtest.py's)
    "1": [(0.50, 0.12), (0.50, 0.50), (0.50, 0.88)],
    "7": [(0.25, 0.18), (0.5, 0.18), (0.75, 0.18), (0.62, 0.5), (0.48, 0.85)],
    "4": [(0.62, 0.85), (0.62, 0.15), (0.22, 0.62), (0.80, 0.62)],
}

# Installed before any of the page's own scripts (add_init_script), so the WebSocket Streamlit opens is wrapped.
MEASURE_JS = r"""(() => {
  if (window.cnnLatency) return;
  const answerRe = new RegExp(%(answer)s);
  const state = window.cnnLatency = {strokes: [], messages: []};
  const main = () => document.querySelector("[data-testid='stMain']");
  const answerShown = () => { const m = main(); return !!m && answerRe.test(m.textContent); };
  const pending = () => { const s = state.strokes[state.strokes.length - 1]; return s && s.answer === null ? s : null; };
  window.addEventListener("pointerup", () => {
    const s = pending();
    if (s) s.abandoned = true;  // a stroke whose answer never came: the next one starts a new sample
    state.strokes.push({up: performance.now(), answerBefore: answerShown(), answer: null, painted: null,
                        firstMessage: state.messages.length});
  }, {capture: true});
  new MutationObserver(() => {
    const s = pending();
    if (!s || !answerShown()) return;
    s.answer = performance.now();
    requestAnimationFrame(() => { s.painted = performance.now(); });
  }).observe(document, {childList: true, subtree: true, characterData: true});
  const Native = window.WebSocket;
  const bytes = data => data.byteLength !== undefined ? data.byteLength : (data.size || data.length || 0);
  const keep = data => {  // small messages only: script_finished and the answer's delta, parsed by the script
    if (!(data instanceof ArrayBuffer) || data.byteLength > 8192) return null;
    let text = ""; const view = new Uint8Array(data);
    for (let i = 0; i < view.length; i++) text += String.fromCharCode(view[i]);
    return btoa(text);
  };
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", event => state.messages.push(
        {t: performance.now(), dir: "in", bytes: bytes(event.data), b64: keep(event.data)}));
    }
    send(data) {
      state.messages.push({t: performance.now(), dir: "out", bytes: bytes(data), b64: null});
      return super.send(data);
    }
  };
})();""" % {"answer": json.dumps(ANSWER)}

TAKE_JS = """() => { const s = window.cnnLatency; const out = {strokes: s.strokes, messages: s.messages,
  media: performance.getEntriesByType("resource").filter(e => e.name.includes("/media/"))
    .map(e => ({start: e.startTime, end: e.responseEnd, bytes: e.transferSize || e.encodedBodySize}))};
  s.strokes = []; s.messages = []; performance.clearResourceTimings(); return out; }"""

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def message_kind(b64: str | None) -> tuple[str | None, bool]:
    """(ForwardMsg's type, whether it carries an answer text) for a message the page kept; (None, False) if not."""
    if not b64:
        return None, False
    message = ForwardMsg()
    try:
        message.ParseFromString(base64.b64decode(b64))
    except Exception:  # noqa: BLE001 - a message we cannot read is simply not classified
        return None, False
    kind = message.WhichOneof("type")
    if kind == "script_finished":
        return kind, False
    if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
        element = message.delta.new_element
        body = getattr(getattr(element, element.WhichOneof("type") or "", None), "body", "")
        return kind, isinstance(body, str) and re.search(ANSWER, body) is not None
    return kind, False


def samples_from(taken: dict) -> list[dict]:
    """One sample per stroke whose own answer appeared after its mouse-up: each stage in ms after `up`.

    taken: what TAKE_JS returned for one or more strokes. A stroke with an answer already on the page at its
    mouse-up, an abandoned one or one with no answer is left out (it has no answer of its own).
    """
    messages, media, samples = taken["messages"], taken["media"], []
    strokes = taken["strokes"]
    for i, stroke in enumerate(strokes):
        if stroke["answer"] is None or stroke.get("abandoned") or stroke["answerBefore"]:
            continue
        up, end = stroke["up"], stroke["answer"]
        later = strokes[i + 1]["firstMessage"] if i + 1 < len(strokes) else len(messages)
        mine = [m for m in messages[stroke["firstMessage"]:later] if m["t"] >= up]
        sample = {"answer_ms": round(end - up, 1),
                  "painted_ms": round(stroke["painted"] - up, 1) if stroke["painted"] else None}
        sent = next((m for m in mine if m["dir"] == "out"), None)
        if sent:
            sample["sent_ms"], sample["sent_bytes"] = round(sent["t"] - up, 1), sent["bytes"]
            replies = [m for m in mine if m["dir"] == "in" and m["t"] >= sent["t"]]
            if replies:
                sample["first_reply_ms"] = round(replies[0]["t"] - up, 1)
            for reply in replies:
                kind, has_answer = message_kind(reply["b64"])
                if has_answer and "answer_received_ms" not in sample:
                    sample["answer_received_ms"] = round(reply["t"] - up, 1)
                    sample["messages_before_answer"] = replies.index(reply) + 1
                    sample["bytes_before_answer"] = sum(r["bytes"] for r in replies[:replies.index(reply) + 1])
                if kind == "script_finished" and "finished_ms" not in sample:
                    sample["finished_ms"] = round(reply["t"] - up, 1)
                    # Streamlit's rerun as this page saw it: the value sent -> the script's end (loopback).
                    sample["server_run_ms"] = round(reply["t"] - sent["t"], 1)
                    sample["messages"] = replies.index(reply) + 1
                    sample["bytes_received"] = sum(r["bytes"] for r in replies[:replies.index(reply) + 1])
        until = strokes[i + 1]["up"] if i + 1 < len(strokes) else float("inf")
        images = [m for m in media if up <= m["start"] < until]
        if images:
            sample["images"] = len(images)
            sample["images_done_ms"] = round(max(m["end"] for m in images) - up, 1)
        samples.append(sample)
    return samples


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (p95 of 25 samples is the 24th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(q * len(ordered))) - 1)]


def summary(samples: list[dict]) -> dict:
    """p50/p95/min/max of mouse-up -> answer text, and the median of each stage over the samples that have it."""
    answers = [s["answer_ms"] for s in samples]
    if not answers:
        return {"measured": 0}
    stages = {}
    for key in ("sent_ms", "first_reply_ms", "answer_received_ms", "answer_ms", "painted_ms", "finished_ms",
                "server_run_ms", "images_done_ms", "sent_bytes", "bytes_before_answer", "bytes_received",
                "messages_before_answer", "messages", "images"):
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            stages[key] = round(statistics.median(values), 1)
    return {"measured": len(answers), "p50_ms": round(statistics.median(answers), 1),
            "p95_ms": round(percentile(answers, 0.95), 1), "min_ms": min(answers), "max_ms": max(answers),
            "stage_medians": stages}


def settled_canvas(page: Page):
    """The drawing surface once it stopped moving for 10 animation frames (tests/test_browser_app's check)."""
    from tests.test_browser_app import canvas_of

    return canvas_of(page)


def draw(page: Page, points) -> None:
    """One mouse stroke on the real canvas (as the browser tests draw it); returns once its ink is on the canvas."""
    from tests.test_browser_app import stroke

    stroke(page, settled_canvas(page), points)


def clear(page: Page) -> None:
    """Clear, then wait until the canvas is empty, the hint is back and no script runs: no answer is on the page."""
    page.get_by_role("button", name="Clear").click()
    canvas = page.locator("canvas.upper-canvas")
    page.wait_for_function(f"c => ({INK_JS})(c) === 0", arg=canvas.element_handle(), timeout=60_000)
    expect(page.get_by_text(HINT)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(ANSWER))).to_have_count(0, timeout=60_000)
    page.locator(IDLE).wait_for(timeout=60_000)


def open_draw(page: Page, url: str) -> None:
    page.add_init_script(MEASURE_JS)
    page.goto(url + "/draw", timeout=120_000)
    expect(page.get_by_text(HINT)).to_be_visible(timeout=120_000)
    page.locator(IDLE).wait_for(timeout=60_000)


def measure_strokes(page: Page, strokes: int) -> list[dict]:
    """Draw strokes digits on an open Draw page (open_draw), each on an emptied canvas, and return one sample
    per stroke whose answer appeared (samples_from)."""
    digits = list(STROKES)
    for n in range(strokes):
        if n:
            clear(page)
        draw(page, STROKES[digits[n % len(digits)]])
        # Polled every 100 ms, not every frame: the times are the page's own, and a check run on every frame
        # would take the page's main thread from the render being measured.
        page.wait_for_function("() => { const s = window.cnnLatency.strokes; const last = s[s.length - 1];"
                               " return last && last.painted !== null; }", polling=100, timeout=60_000)
        page.locator(IDLE).wait_for(timeout=60_000)
    return samples_from(page.evaluate(TAKE_JS))


def start_training(browser, url: str, preset: str, epochs: int) -> None:
    """Start a training run of epochs from the Train page, as scripts/loadtest.py's teacher does, and leave it
    running (FAST's one epoch of 30,000 images ends before 25 strokes do: the strokes after it would be quiet)."""
    page = browser.new_context().new_page()
    page.goto(url + "/train", timeout=120_000)
    page.get_by_label("Preset").click()
    page.get_by_text(preset).click()
    # The preset's own epochs reach the form on the rerun its choice starts: fill ours once that rerun is over (the
    # "Running: epoch 1 of N" below checks that ours were the ones that ran).
    expect(page.get_by_label("Preset")).to_have_value(preset, timeout=60_000)
    page.locator(IDLE).wait_for(timeout=60_000)
    page.get_by_label("Epochs").first.fill(str(epochs))
    page.get_by_label("Run name").fill("latency-training")
    page.get_by_label("Run name").press("Enter")
    # Each change reruns the page, and while a rerun redraws the form its old Start can still be on the page beside
    # the new one (a click then found two): the click waits for one Start and an idle app.
    start = page.get_by_role("button", name="Start", exact=True)
    page.locator(IDLE).wait_for(timeout=60_000)
    expect(start).to_have_count(1, timeout=60_000)
    start.click()
    expect(page.get_by_text(re.compile(rf"Running: epoch 1 of {epochs}\b"))).to_be_visible(timeout=120_000)
    page.goto(url + "/", timeout=120_000)  # the training goes on on the server; the teacher's tab moves on
    return page


def training_state(page) -> str:
    """What the Train page says about the run now ("step 310 of 469 ..." or its last line)."""
    page.goto(page.url.rsplit("/", 1)[0] + "/train", timeout=120_000)
    text = page.get_by_text(re.compile(r"step [\d,]+ of|Finished|finished")).first
    text.wait_for(timeout=60_000)
    return text.inner_text()[:120]


class Students(threading.Thread):
    """scripts/loadtest.py's light WebSocket students, drawing against url until stop() (each a digit per
    draw_seconds); their answers' times and errors are kept."""

    def __init__(self, url: str, count: int, draw_seconds: float):
        super().__init__(daemon=True)
        self.url, self.count, self.draw_seconds = url, count, draw_seconds
        self.latencies, self.answers, self.errors = [], [], []
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()

    def run(self):
        from loadtest import websocket_student  # scripts/ is on the path: this script lives there

        asyncio.set_event_loop(self.loop)
        students = [websocket_student(self.url, 1000, self.latencies, self.answers, self.errors, i, self.draw_seconds)
                    for i in range(self.count)]
        self.tasks = [self.loop.create_task(s) for s in students]
        self.loop.call_later(0.5 * self.count + 2, self.started.set)  # loadtest's students arrive 0.5 s apart
        try:
            self.loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
        finally:
            self.loop.close()

    def stop(self):
        for task in self.tasks:
            self.loop.call_soon_threadsafe(task.cancel)
        self.join(30)


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="cnn-latency-"))
    server, url = (None, args.url) if args.url else start_app(workdir)
    students = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
            teacher = start_training(browser, url, args.preset, args.training_epochs) if args.training else None
            if args.students:
                students = Students(url, args.students, args.draw_seconds)
                students.start()
                students.started.wait(120)
            page = browser.new_context(viewport=PROJECTOR).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)[:160]))
            open_draw(page, url)
            samples = measure_strokes(page, args.strokes)
            if students:
                students.stop()
            training = training_state(teacher) if teacher else "no training run"
            browser.close()
    finally:
        if server:
            stop_app(server)
    report = {"url": url if args.url else "started on loopback", "strokes": args.strokes,
              "training": training, "students": args.students, **summary(samples),
              "page_errors": errors, "samples": samples}
    if students:
        ordered = sorted(students.latencies)
        report["students_answers"] = len(ordered)
        report["students_errors"] = students.errors[:5]
        report["students_p50_ms"] = round(1000 * statistics.median(ordered), 1) if ordered else None
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=25)
    parser.add_argument("--url", help="measure a running app instead of starting one")
    parser.add_argument("--training", action="store_true", help="start a training run from the Train page first")
    parser.add_argument("--preset", default="FAST (Adam, one cycle)", help="the Train page's preset for --training")
    parser.add_argument("--training-epochs", type=int, default=4,
                        help="its epochs: enough to outlast the strokes (the report's 'training' says where it was)")
    parser.add_argument("--students", type=int, default=0, help="light WebSocket students drawing meanwhile")
    parser.add_argument("--draw-seconds", type=float, default=2.0, help="each student's seconds per digit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if key != "samples":
                print(f"{key:>20}: {value}")
    return 0 if report.get("measured") else 1


if __name__ == "__main__":
    sys.exit(main())
