"""Load test for a class server (a benchmark, not a test): N students drawing while one training runs.

    python scripts/loadtest.py [--sessions 20] [--digits 4] [--port 0] [--json]

Starts `streamlit run app.py` on loopback with its own runs folder, starts one FAST training run
from the Train page, then opens N concurrent browser sessions (Playwright contexts in Debian's
Chromium) that each draw digits with the mouse and wait for the prediction. Reports errors, the
time from the end of a stroke to the prediction on screen (p50/p95), and the server's peak memory.
Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import CHROMIUM_CANDIDATES  # noqa: E402

STROKES = {  # one pen stroke per digit, as fractions of the canvas
    "1": [(0.50, 0.12), (0.50, 0.50), (0.50, 0.88)],
    "7": [(0.25, 0.18), (0.5, 0.18), (0.75, 0.18), (0.62, 0.5), (0.48, 0.85)],
    "4": [(0.62, 0.85), (0.62, 0.15), (0.22, 0.62), (0.80, 0.62)],
}
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               # The browsers share the server's machine here: spend as little of it on drawing pixels as we can.
               "--disable-extensions", "--mute-audio"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_server(port: int, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "CNN_RUNS_DIR": str(workdir / "runs"), "CNN_CLASS_DIR": str(workdir / "class")}
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.address", "127.0.0.1", "--server.headless", "true"],
                               cwd=ROOT, env=env, stdout=open(workdir / "server.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the app did not start; see " + str(workdir / "server.log"))


async def settled_canvas(page):
    """The drawing surface once it has its full size and stopped moving (Clear mounts a new one)."""
    canvas = page.locator("canvas.upper-canvas").last
    await canvas.wait_for(state="visible")
    previous, stable = None, 0
    for _ in range(600):
        box = await canvas.bounding_box()
        # The old canvas is gone and this one is new (Clear tags the old one before it is replaced).
        alone = await page.locator("canvas.upper-canvas").count() == 1 and \
            await page.locator("canvas.upper-canvas[data-cleared]").count() == 0
        stable = stable + 1 if alone and box and abs(box["width"] - 280) < 2 and box == previous else 0
        if stable >= 3:  # unmoved for 0.3 s
            return canvas, box
        previous = box
        await asyncio.sleep(0.1)
    raise TimeoutError("the canvas never settled")


async def draw(page, points):
    canvas, box = await settled_canvas(page)
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    await page.mouse.move(*xy[0])
    await page.mouse.down()
    for x, y in xy[1:]:
        await page.mouse.move(x, y, steps=3)
    await page.mouse.up()


async def student(browser, url: str, digits: int, latencies: list, errors: list, index: int, workdir: Path):
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
            await draw(page, STROKES[digit])
            ended = time.perf_counter()
            step = "waiting for the prediction"
            await page.get_by_text(re.compile(r"It's a \d|Not sure")).first.wait_for()
            latencies.append(time.perf_counter() - ended)
            step = "clearing"
            await page.evaluate("document.querySelectorAll('canvas.upper-canvas').forEach(c => c.dataset.cleared = '1')")
            await page.get_by_role("button", name="Clear").click()
            await page.get_by_text("Draw a digit in the black square").wait_for()
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


async def run(sessions: int, digits: int, port: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="cnn-loadtest-"))
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, workdir)
    watcher = MemoryWatcher(server.pid)
    watcher.start()
    try:
        chromium = next(p for p in CHROMIUM_CANDIDATES if Path(p).exists())
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
            teacher = await (await browser.new_context()).new_page()
            await teacher.goto(url + "/train", timeout=120_000)
            await teacher.get_by_label("Preset").click()
            await teacher.get_by_text("FAST (Adam, one cycle)").click()
            await teacher.get_by_label("Run name").fill("loadtest-training")
            await teacher.get_by_role("button", name="Start").click()
            await teacher.get_by_text(re.compile(r"Running: epoch 1")).wait_for(timeout=120_000)
            # The teacher's tab moves on: the training goes on in the background on the server.
            await teacher.goto(url + "/", timeout=120_000)
            idle_kb = process_tree_rss_kb(server.pid)
            latencies: list[float] = []
            errors: list[str] = []
            started = time.perf_counter()
            server_cpu, machine_cpu = cpu_seconds(server.pid), cpu_seconds()
            await asyncio.wait_for(asyncio.gather(*(student(browser, url, digits, latencies, errors, i, workdir)
                                                    for i in range(sessions))), timeout=900)
            wall = time.perf_counter() - started
            server_cpu, machine_cpu = cpu_seconds(server.pid) - server_cpu, cpu_seconds() - machine_cpu
            await teacher.goto(url + "/train", timeout=120_000)
            training = await teacher.get_by_text(re.compile(r"step [\d,]+ of")).first.inner_text()
            await browser.close()
    finally:
        watcher.stop_flag.set()
        server.terminate()
        server.wait(15)
    latencies.sort()
    peak_mb = watcher.peak_kb / 1024
    return {
        "sessions": sessions, "digits_per_session": digits, "predictions": len(latencies),
        "errors": len(errors), "error_messages": errors[:10],
        "stroke_to_prediction_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "stroke_to_prediction_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "server_peak_rss_mb": round(peak_mb, 1),
        "server_rss_with_training_before_students_mb": round(idle_kb / 1024, 1),
        "memory_per_session_mb": round((peak_mb - idle_kb / 1024) / max(sessions, 1), 1),
        "wall_seconds": round(wall, 1), "training_progress": training, "workdir": str(workdir),
        # Where the machine's cores went: the app server (training included) vs. the 20 browsers.
        "cpu_cores_busy": round(machine_cpu / wall, 2), "server_cpu_cores": round(server_cpu / wall, 2),
        "browsers_and_rest_cpu_cores": round((machine_cpu - server_cpu) / wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.sessions, args.digits, args.port))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>45}: {value}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
