"""Load test for a class server (a benchmark, not a test): N students drawing while one training runs.

    python scripts/loadtest.py [--sessions 20] [--digits 4] [--clients browser|websocket] [--replicas N] [--json]

Starts `streamlit run app.py` on loopback with its own runs folder, starts one FAST training run
from the Train page (unless --no-training), then N students each draw digits, wait for the
prediction and press Clear. Reports errors, how many were read as drawn, the time from the end of
a stroke to the prediction (p50/p95), the server's peak memory and where the cores went.

--clients browser (default): Playwright contexts in Debian's Chromium drawing with the mouse on
the real canvas. On one 2-core machine the 20 browsers take most of the cores themselves.
--clients websocket: each student is a WebSocket client speaking Streamlit's own protocol and
sending what the canvas sends (a PNG of the stroke), so the server is what is measured.
--replicas N: the same test through nginx in front of N replicas (scripts/replicas.py). Each light student first
GETs the page as a browser does, keeps the sticky cookie nginx sets, and sends it with its WebSocket handshake and
every image download; the report gives each replica's memory and how the students were spread (nginx's log).

Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import statistics
import struct
import sys
import tempfile
import threading
import time
import typing
import urllib.request
import zlib
from pathlib import Path

import websockets
from PIL import Image, ImageDraw
from playwright.async_api import TimeoutError as PlaywrightTimeout, async_playwright, expect
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import CHROMIUM_ARGS, INK_JS, chromium_path, start_app, stop_app  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from replicas import COOKIE, start_school  # noqa: E402

STROKES = {  # one pen stroke per digit, as fractions of the canvas
    "1": [(0.50, 0.12), (0.50, 0.50), (0.50, 0.88)],
    "7": [(0.25, 0.18), (0.5, 0.18), (0.75, 0.18), (0.62, 0.5), (0.48, 0.85)],
    "4": [(0.62, 0.85), (0.62, 0.15), (0.22, 0.62), (0.80, 0.62)],
}
# The browsers share the server's machine here: spend as little of it on them as we can.
LAUNCH_ARGS = [*CHROMIUM_ARGS, "--disable-extensions", "--mute-audio"]


def process_tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its children, from /proc (kB)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of one process, or of the whole machine when pid is None."""
    ticks = os.sysconf("SC_CLK_TCK")
    if pid is None:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        return (int(fields[0]) + int(fields[1]) + int(fields[2])) / ticks  # user, nice, system
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / ticks  # utime, stime


class MemoryWatcher(threading.Thread):
    """Samples the server's resident memory every 0.2 s; keeps the peak and the idle baseline."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop_flag = pid, 0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            self.peak_kb = max(self.peak_kb, process_tree_rss_kb(self.pid))
            time.sleep(0.2)


async def settled_canvas(page):
    """The drawing surface once it has its full size and has stopped moving for 0.3 s."""
    canvas = page.locator("canvas.upper-canvas")
    await canvas.wait_for(state="visible")
    previous, stable = None, 0
    for _ in range(600):
        box = await canvas.bounding_box()
        stable = stable + 1 if box and abs(box["width"] - 280) < 2 and box == previous else 0
        if stable >= 3:
            return canvas, box
        previous = box
        await asyncio.sleep(0.1)
    raise TimeoutError("the canvas never settled")


async def draw(page, points) -> float:
    """One mouse stroke, returning when it ended; raises if no ink reached the canvas (the pen missed it), saying where the canvas was."""
    canvas, box = await settled_canvas(page)
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    await page.mouse.move(*xy[0])
    await page.mouse.down()
    for x, y in xy[1:]:
        await page.mouse.move(x, y, steps=3)
    await page.mouse.up()
    ended = time.perf_counter()
    try:  # the pen's path reaches the canvas's pixels on a later animation frame: wait for it, generously
        await page.wait_for_function(f"c => ({INK_JS})(c) > 0", arg=await canvas.element_handle(), timeout=60_000)
        return ended
    except PlaywrightTimeout:
        after = await canvas.bounding_box()
        raise RuntimeError(f"the stroke missed the canvas: it was at y={box['y']:.0f} before, {after['y']:.0f} after") from None


async def emptied(page):
    """After Clear: the canvas itself is empty again (the same canvas; it is not mounted anew)."""
    canvas = page.locator("canvas.upper-canvas")
    for _ in range(600):
        if await canvas.evaluate(INK_JS) == 0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("Clear did not empty the canvas")


async def browser_student(browser, url: str, digits: int, latencies: list, answers: list, errors: list, index: int,
                          workdir: Path):
    """One student in a real Chromium tab: draws with the mouse on the real canvas."""
    await asyncio.sleep(0.5 * index)  # students arrive over ten seconds, then all draw at once
    # Tall enough that the page never scrolls: a scroll between measuring and drawing misses the canvas.
    context = await browser.new_context(viewport={"width": 1100, "height": 1200})
    context.set_default_timeout(60_000)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"session {index}: {exc}"))
    n, step = -1, "opening the page"
    try:
        await page.goto(url + "/draw", timeout=120_000)
        await page.get_by_text("Draw a digit in the black square").wait_for(timeout=120_000)
        for n in range(digits):
            digit = list(STROKES)[(index + n) % len(STROKES)]
            step = "drawing"
            ended = await draw(page, STROKES[digit])
            step = "waiting for the prediction"
            answer = page.get_by_text(re.compile(r"It's an? \d|Not sure")).first
            await answer.wait_for()
            latencies.append(time.perf_counter() - ended)
            answers.append((digit, await answer.inner_text()))
            step = "clearing"
            await page.get_by_role("button", name="Clear").click()
            await page.get_by_text("Draw a digit in the black square").wait_for()
            await emptied(page)
        if await page.get_by_test_id("stException").count():
            errors.append(f"session {index}: an exception was shown")
    except Exception as exc:  # a timeout or a broken page counts as an error, the run goes on
        errors.append(f"session {index}, digit {n + 1}, {step}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}")
        try:
            await page.screenshot(path=str(workdir / f"error-session{index}.png"))
        except Exception:
            pass
    finally:
        await context.close()


def stroke_png(points, size: int = 280, width: int = 22) -> str:
    """The canvas's own payload for one stroke: a data URL of a black RGBA PNG with white round-capped ink."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    pen = ImageDraw.Draw(image)
    xy = [(fx * size, fy * size) for fx, fy in points]
    if len(xy) > 1:
        pen.line(xy, fill=(255, 255, 255, 255), width=width, joint="curve")
    for x, y in xy[:1] + xy[-1:]:
        pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=(255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def canvas_value(data_url: str) -> dict:
    """The canvas component's value after a stroke, as its front end sends it (Fabric's JSON and the PNG)."""
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": data_url}}


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black RGBA PNG of any size, built row by row: 8000x8000 is ~250 KB and costs the sender ~1 MB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\x00" + b"\x00\x00\x00\xff" * width  # filter byte, then opaque black
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


async def forged_canvas_attack(url: str, png: bytes, then_draw: str | None = "7") -> dict:
    """An attacker's session: opens the Draw page, sends png as the canvas's value over the WebSocket (nothing
    in the protocol stops it), then draws then_draw as an honest stroke. Returns the texts and exceptions each
    step showed: {"forged": [...], "forged_exceptions": [...], "after": [...], "after_exceptions": [...]}."""
    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    report = {"forged": [], "forged_exceptions": [], "after": [], "after_exceptions": []}
    async with websockets.connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=None) as ws:
        client = StreamlitClient(ws, url)
        await client.run(first=True)
        data_url = "data:image/png;base64," + base64.b64encode(png).decode()
        _, report["forged"] = await client.run(widgets={client.widgets["canvas"]: canvas_value(data_url)},
                                               exceptions=report["forged_exceptions"])
        if then_draw is not None:
            _, report["after"] = await client.run(
                widgets={client.widgets["canvas"]: canvas_value(stroke_png(STROKES[then_draw]))},
                exceptions=report["after_exceptions"])
    return report


class Wire(typing.NamedTuple):
    """A widget value as the front end sends it: a WidgetState field ("int_value", "double_value", "string_value",
    "bool_value", "string_array_value", ...) and its value. A forged client may send any value in any field."""

    field: str
    value: object


class StreamlitClient:
    """A browser-less Streamlit session over the app's own WebSocket protocol (the same protobuf messages
    Streamlit's frontend sends): light enough that 20-30 of them leave the machine's cores to the server."""

    def __init__(self, ws, url: str, cookie: str | None = None):
        self.ws, self.url, self.widgets, self.fragment, self.page_hash = ws, url, {}, "", ""
        self.cookie = cookie  # the Cookie header a browser would send (a proxy's sticky cookie), or None
        # Every widget the last run drew: its id -> (element type, label, the element's proto), for clients that
        # press other pages' buttons (tests/test_attacks.py); ids of keyed widgets end with "-" + their key.
        self.drawn: dict[str, tuple] = {}
        self.captions: list[str] = []  # the captions of the images the last run showed (what a map number says)

    def widget_id(self, *, key: str | None = None, label: str | None = None) -> str:
        """The id of a widget the last run drew, by its key or its label; KeyError if it drew none."""
        for widget_id, (_, widget_label, _) in self.drawn.items():
            if (key is not None and widget_id.endswith("-" + key)) or (label is not None and widget_label == label):
                return widget_id
        raise KeyError(f"no widget with key {key!r} / label {label!r} was drawn; drawn: {list(self.drawn)}")

    async def run(self, *, widgets: dict | None = None, first: bool = False, wanted: re.Pattern | None = None,
                  exceptions: list | None = None, page: str = "draw", query: str = "", whole_page: bool = False):
        """One rerun (of the whole page when first, else of the canvas fragment unless whole_page); returns the
        seconds to the first text matching wanted (or to the run's end) and every text the run showed. Then
        downloads the run's images, as a browser does. An exception on the page raises, or is added to exceptions.

        first opens page (a URL path: "draw", "train", "teacher"); query is the address's query string, sent on
        every rerun as a browser does. widgets: id -> True (a button press), a Wire value, or a JSON value."""
        started = time.perf_counter()
        await self.send(widgets=widgets, first=first, page=page, query=query, whole_page=whole_page)
        return await self.receive(wanted=wanted, exceptions=exceptions, started=started)

    async def send(self, *, widgets: dict | None = None, first: bool = False, page: str = "draw", query: str = "",
                   whole_page: bool = False) -> None:
        """Send one rerun request (run()'s arguments) without waiting for it: a forged client may send many before
        the server has run one; receive() reads what the runs show."""
        message = BackMsg()
        state = message.rerun_script
        state.query_string = query
        if first:
            state.page_name = page
            self.drawn = {}
        else:
            state.page_script_hash, state.fragment_id = self.page_hash, "" if whole_page else self.fragment
            for widget_id, value in (widgets or {}).items():
                entry = state.widget_states.widgets.add(id=widget_id)
                if value is True:
                    entry.trigger_value = True
                elif isinstance(value, Wire) and value.field.endswith("_array_value"):  # a slider's double_array_value
                    getattr(entry, value.field).data.extend(value.value)
                elif isinstance(value, Wire):
                    setattr(entry, value.field, value.value)
                else:
                    entry.json_value = json.dumps(value)
        await self.ws.send(message.SerializeToString())

    async def receive(self, *, wanted: re.Pattern | None = None, exceptions: list | None = None,
                      started: float | None = None):
        """Read one run's messages up to its end (see run()): (seconds to wanted or to the end, texts)."""
        started = time.perf_counter() if started is None else started
        seen, texts, images, self.captions = None, [], [], []
        while True:
            forward = ForwardMsg()
            forward.ParseFromString(await asyncio.wait_for(self.ws.recv(), 120))
            kind = forward.WhichOneof("type")
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                which = element.WhichOneof("type")
                if which == "exception":
                    if exceptions is None:
                        raise RuntimeError(f"the page showed an exception: {element.exception.message[:120]}")
                    exceptions.append(element.exception.message[:120])
                widget_id = getattr(getattr(element, which), "id", "")
                self.page_hash = forward.metadata.active_script_hash or self.page_hash
                if widget_id:
                    self.drawn[widget_id] = (which, getattr(getattr(element, which), "label", ""),
                                             getattr(element, which))
                if which == "bidi_component" and widget_id.endswith("-canvas"):
                    self.widgets["canvas"], self.fragment = widget_id, forward.delta.fragment_id
                    self.page_hash = forward.metadata.active_script_hash
                elif which == "button" and element.button.label == "Clear":
                    self.widgets["clear"] = widget_id
                elif which == "imgs":
                    images += [image.url for image in element.imgs.imgs]
                    self.captions += [image.caption for image in element.imgs.imgs if image.caption]
                text = getattr(getattr(element, which), "body", "")
                if isinstance(text, str) and text:
                    texts.append(text)
                    if seen is None and wanted is not None and wanted.search(text):
                        seen = time.perf_counter() - started
            elif kind == "script_finished" and forward.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                images = []  # the run that follows (an st.rerun) draws the page anew; a browser never asks for these
            elif kind == "script_finished":
                seconds = seen if seen is not None else time.perf_counter() - started
                await asyncio.gather(*(asyncio.to_thread(self.download, url) for url in images))
                return seconds, texts

    def download(self, path: str) -> None:
        """GET one of the page's images (a /media/ URL) as the browser would; raises if the server lost it."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=60) as response:
            if response.status != 200 or not response.read():
                raise RuntimeError(f"image {path} came back empty ({response.status})")


def page_cookie(url: str) -> str:
    """GET the page as a browser does first; the Cookie header it would send from then on (nginx's sticky cookie)."""
    with urllib.request.urlopen(url + "/draw", timeout=60) as response:
        response.read()
        cookies = [header.split(";", 1)[0] for header in response.headers.get_all("Set-Cookie") or []]
    if not any(cookie.startswith(COOKIE + "=") for cookie in cookies):
        raise RuntimeError("the proxy set no sticky cookie")
    return "; ".join(cookies)


async def websocket_student(url: str, digits: int, latencies: list, answers: list, errors: list, index: int,
                            draw_seconds: float, cookies: list | None = None):
    """One student as a WebSocket client: sends what the canvas sends after each stroke, and Clear.
    Each digit takes draw_seconds to draw first, as a hand would (0 makes it a stress test).

    cookies: behind a proxy, a list to add this student's Cookie header to; the student first GETs the page for it
    and sends it with the WebSocket handshake and every image download, as a browser does."""
    await asyncio.sleep(0.5 * index)
    answer_text = re.compile(r"It's an? \d|Not sure")
    n, step = -1, "opening the page"
    try:
        cookie = None
        if cookies is not None:
            cookie = await asyncio.to_thread(page_cookie, url)
            cookies.append(cookie)
        ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        async with websockets.connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=None,
                                      additional_headers={"Cookie": cookie} if cookie else None) as ws:
            client = StreamlitClient(ws, url, cookie)
            _, texts = await client.run(first=True)
            if not any("Draw a digit in the black square" in t for t in texts) or "canvas" not in client.widgets:
                raise RuntimeError("the Draw page did not show its canvas")
            drawing = None
            for n in range(digits):
                digit = list(STROKES)[(index + n) % len(STROKES)]
                await asyncio.sleep(draw_seconds)
                step = "waiting for the prediction"
                drawing = canvas_value(stroke_png(STROKES[digit]))
                seconds, texts = await client.run(widgets={client.widgets["canvas"]: drawing}, wanted=answer_text)
                shown = [t for t in texts if answer_text.search(t)]
                if not shown:
                    raise RuntimeError(f"no prediction was shown; the page said {texts[:3]}")
                latencies.append(seconds)
                answers.append((digit, shown[0]))
                step = "clearing"  # Clear, then the canvas sends its emptied drawing, as in the browser
                await client.run(widgets={client.widgets["clear"]: True, client.widgets["canvas"]: drawing})
                empty = {"drawing": {"raw": {"objects": []}, "data": stroke_png([])}}
                _, texts = await client.run(widgets={client.widgets["canvas"]: empty})
                if not any("Draw a digit in the black square" in t for t in texts):
                    raise RuntimeError("after Clear the page did not ask for a new drawing")
    except Exception as exc:
        errors.append(f"session {index}, digit {n + 1}, {step}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}")


async def run(sessions: int, digits: int, port: int, clients: str, draw_seconds: float, training: bool,
              replicas: int = 0) -> dict:
    """The load test against one server, or (replicas > 0) through nginx in front of that many replicas."""
    workdir = Path(tempfile.mkdtemp(prefix="cnn-loadtest-"))
    school = start_school(workdir, replicas, port) if replicas else None
    if school is None:
        server, url = start_app(workdir, port)
        servers = [server]
    else:
        servers, url = [process for process, _ in school.replicas], school.url
    watchers = [MemoryWatcher(process.pid) for process in servers]
    for watcher in watchers:
        watcher.start()
    try:
        chromium = chromium_path()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
            teacher = await (await browser.new_context()).new_page()
            # Behind the proxy every page is a student's unless it opens the teacher's link (the token is shared).
            await teacher.goto(url + "/train" + (f"?teacher={school.teacher_token}" if school else ""),
                               timeout=120_000)
            if training:
                await teacher.get_by_role("combobox", name="Preset").click()
                await teacher.get_by_role("option", name="FAST (Adam, one cycle)", exact=True).click()
                # Start only once the form holds FAST's recipe: a Start sent before the choice reached the server
                # trained ARTICLE x 10 in one run of the proxy's load test.
                await expect(teacher.get_by_label("Epochs").first).to_have_value("1", timeout=120_000)
                # The rerun that redraws the form for FAST shows the old field beside the new one for a moment.
                await expect(teacher.get_by_label("Run name")).to_have_count(1, timeout=120_000)
                await teacher.get_by_label("Run name").fill("loadtest-training")
                await teacher.get_by_role("button", name="Start").click()
                await teacher.get_by_text(re.compile(r"Running: epoch 1")).wait_for(timeout=120_000)
            # The teacher's tab moves on: the training goes on in the background on the server.
            await teacher.goto(url + "/", timeout=120_000)
            if school is not None:  # every replica loads torch, the data and the model before it is measured idle
                await asyncio.gather(*(warm_up(f"http://127.0.0.1:{port}") for _, port in school.replicas))
            idle_kbs = [process_tree_rss_kb(process.pid) for process in servers]
            latencies: list[float] = []
            answers: list[tuple[str, str]] = []
            errors: list[str] = []
            started = time.perf_counter()
            server_cpu, machine_cpu = sum(cpu_seconds(process.pid) for process in servers), cpu_seconds()
            if clients == "browser":
                students = [browser_student(browser, url, digits, latencies, answers, errors, i, workdir)
                            for i in range(sessions)]
            else:
                students = [websocket_student(url, digits, latencies, answers, errors, i, draw_seconds,
                                              cookies=[] if school else None)
                            for i in range(sessions)]
            await asyncio.wait_for(asyncio.gather(*students), timeout=900)
            wall = time.perf_counter() - started
            server_cpu = sum(cpu_seconds(process.pid) for process in servers) - server_cpu
            machine_cpu = cpu_seconds() - machine_cpu
            progress = "no training run"
            if training:
                await teacher.goto(url + "/train", timeout=120_000)
                # Where the run is, or how it ended: FAST's one epoch can end before the students do.
                where = re.compile(r"step [\d,]+ of|Finished: \S+ after|(Stopped|Failed)\b")
                progress = await teacher.get_by_text(where).first.inner_text(timeout=120_000)
            teacher_route = {c["name"]: c["value"] for c in await teacher.context.cookies()}.get(COOKIE)
            await browser.close()
    finally:
        for watcher in watchers:
            watcher.stop_flag.set()
        if school is not None:
            school.stop()
        else:
            stop_app(server)  # asked, then killed if it lingers: a loaded machine took over 15 s to end one
    latencies.sort()
    peak_mb = sum(watcher.peak_kb for watcher in watchers) / 1024
    idle_kb = sum(idle_kbs)
    report = {
        "clients": clients, "draw_seconds": draw_seconds if clients == "websocket" else None, "sessions": sessions,
        "digits_per_session": digits, "predictions": len(latencies),
        "read_as_drawn": sum(f"It's a {digit} " in text for digit, text in answers),
        "errors": len(errors), "error_messages": errors[:10],
        "stroke_to_prediction_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "stroke_to_prediction_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "server_peak_rss_mb": round(peak_mb, 1),  # with replicas: the sum of each one's peak
        "server_rss_before_students_mb": round(idle_kb / 1024, 1),
        "memory_per_session_mb": round((peak_mb - idle_kb / 1024) / max(sessions, 1), 1),
        "wall_seconds": round(wall, 1), "training_progress": progress, "workdir": str(workdir),
        # Where the machine's cores went: the app server (training included) vs. the clients and the rest.
        "cpu_cores_busy": round(machine_cpu / wall, 2), "server_cpu_cores": round(server_cpu / wall, 2),
        "clients_and_rest_cpu_cores": round((machine_cpu - server_cpu) / wall, 2),
    }
    if school is not None:
        report["replicas"] = replica_report(school, watchers, idle_kbs, teacher_route if training else None)
    return report


async def warm_up(url: str) -> None:
    """Open the Draw page on one replica, directly, and draw a 1: the first answer loads what every later
    session shares (torch, the data, the model and its caches), as the teacher's visit does for one server."""
    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    async with websockets.connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=None) as ws:
        client = StreamlitClient(ws, url)
        await client.run(first=True)
        await client.run(widgets={client.widgets["canvas"]: canvas_value(stroke_png(STROKES["1"]))})


def replica_report(school, watchers: list, idle_kbs: list[int], training_route: str | None) -> list[dict]:
    """Per replica: the students nginx sent it (each student's first GET of /draw, by its route), its memory (peak,
    before the students, per student it served) and whether the training ran there."""
    students: dict[str, set] = {}
    for entry in school.log_entries():
        if entry["request"].startswith("GET /draw "):
            students.setdefault(entry["upstream"], set()).add(entry["route"])
    upstream_of = {entry["route"]: entry["upstream"] for entry in school.log_entries()}
    rows = []
    for (_, port), watcher, idle_kb in zip(school.replicas, watchers, idle_kbs):
        upstream = school.upstream(port)
        served = len(students.get(upstream, ()))
        rows.append({"replica": upstream, "students": served, "peak_rss_mb": round(watcher.peak_kb / 1024, 1),
                     "rss_before_students_mb": round(idle_kb / 1024, 1),
                     "memory_per_session_mb": round((watcher.peak_kb - idle_kb) / 1024 / max(served, 1), 1),
                     "training": training_route is not None and upstream_of.get(training_route) == upstream})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clients", choices=("browser", "websocket"), default="browser",
                        help="browser: real Chromium tabs drawing on the real canvas (default); websocket: light "
                             "clients that send what the canvas sends, so the server is measured, not 20 browsers")
    parser.add_argument("--draw-seconds", type=float, default=2.0,
                        help="websocket clients: how long each digit takes to draw before it is sent (default 2)")
    parser.add_argument("--no-training", action="store_true", help="leave out the teacher's training run")
    parser.add_argument("--replicas", type=int, default=0,
                        help="run the test through nginx in front of this many replicas (scripts/replicas.py); "
                             "0 (default): one server, no proxy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.sessions, args.digits, args.port, args.clients, args.draw_seconds,
                             not args.no_training, args.replicas))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>45}: {value}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
