"""Shared fixtures. Unit tests use small SYNTHETIC data (fast, says so); tests marked `mnist` need real MNIST."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cnn.data import ImageDataset

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 60.0, every: float = 0.02) -> bool:
    """Poll predicate until it holds or the (generous) deadline passes; True when it held. Tests assert the result."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def synthetic_mnist(n_train: int = 512, n_test: int = 256, seed: int = 0, dataset: str = "mnist") -> ImageDataset:
    """SYNTHETIC stand-in for MNIST: each class is a bright bar at its own position plus noise.

    Learnable in a few dozen steps, so the loop's behaviour can be tested in seconds. dataset: whose spec it
    claims (its class names and sizes); the pixels are the same synthetic bars.
    """
    from cnn.data import dataset_spec

    generator = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 40, (n, 28, 28), generator=generator, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return ImageDataset(train_images, train_labels, test_images, test_labels, source="synthetic",
                        spec=dataset_spec(dataset))


# Where the tests of the training paths run: the CPU always, and a CUDA GPU too where the machine has one (the
# same tests, once per device; on a CPU-only machine they run once, nothing is skipped).
TRAIN_DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


@pytest.fixture(params=TRAIN_DEVICES)
def train_device(request) -> torch.device:
    """Each device this machine trains on (not `device`: pytest-playwright's fixture of that name is a phone)."""
    return torch.device(request.param)


@pytest.fixture
def tiny_data() -> ImageDataset:
    return synthetic_mnist()


@pytest.fixture(scope="session")
def real_mnist() -> ImageDataset:
    """Real MNIST through the project's own chain (the cache after the first load)."""
    from cnn.data import load_mnist

    return load_mnist(os.environ.get("CNN_DATA_DIR", ROOT / "data"))


# ---------------------------------------------------------------- the real app in a real browser

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
INK_JS = """c => { const lower = c.parentElement.querySelector('canvas.lower-canvas');
  const d = lower.getContext('2d').getImageData(0, 0, lower.width, lower.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n; }"""  # white pixels on the drawing canvas
INK_AT_JS = """([c, x, y]) => { const lower = c.parentElement.querySelector('canvas.lower-canvas');
  const d = lower.getContext('2d').getImageData(x - 3, y - 3, 7, 7).data;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 128) return true; return false; }"""  # ink near (x, y), canvas px
APP_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"  # Streamlit's own flag: no script runs


def wait_for_ink(page, canvas, more_than: int = 0, timeout: float = 60_000) -> None:
    """Wait until the canvas's pixels hold more than more_than white pixels.

    Fabric paints a finished stroke onto the lower canvas on a later animation frame, not during mouse.up().
    """
    page.wait_for_function(f"([c, n]) => ({INK_JS})(c) > n", arg=[canvas.element_handle(), more_than],
                           timeout=timeout)


def wait_for_no_ink(page, canvas, timeout: float = 60_000) -> None:
    page.wait_for_function(f"c => ({INK_JS})(c) === 0", arg=canvas.element_handle(), timeout=timeout)


def wait_for_ink_at(page, canvas, x: float, y: float, timeout: float = 60_000) -> None:
    """Wait until there is ink within 3 px of (x, y), in the canvas's own pixels; AssertionError if none comes."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(INK_AT_JS, arg=[canvas.element_handle(), x, y], timeout=timeout)
    except PlaywrightTimeout:
        raise AssertionError(f"no ink at ({x:.0f}, {y:.0f}) on the canvas after {timeout / 1000:.0f} s: "
                             f"the stroke there was lost") from None


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("No Chromium found: `make test` installs Debian's chromium package (apt-get install chromium).")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, headless, with the flags a machine with no internet needs."""
    return {**browser_type_launch_args, "executable_path": chromium_path(), "headless": True,
            "args": list(CHROMIUM_ARGS)}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(workdir: Path, port: int = 0, env: dict | None = None):
    """`streamlit run app.py` on loopback with its runs and class folders under workdir, once it answers.

    env: more variables for the app (e.g. CNN_TEACHER_TOKEN for a class server).

    Returns (process, url); the log is workdir/streamlit.log. Shared by the browser tests and scripts/loadtest.py.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    port = port or free_port()
    env = {**os.environ, "CNN_RUNS_DIR": str(workdir / "runs"), "CNN_CLASS_DIR": str(workdir / "class"), **(env or {})}
    with open(workdir / "streamlit.log", "w") as log:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180  # torch and MNIST load slowly on a busy 2-core machine
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return process, url
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError("streamlit did not start: " + (workdir / "streamlit.log").read_text()[-2000:])
        time.sleep(0.3)


def stop_app(process, timeout: float = 30) -> None:
    """Stop an app start_app started: ask, then kill if it does not end within timeout seconds."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()


PROJECTOR = {"width": 1024, "height": 768}  # a classroom projector: the size the issues' page checks are made at


@pytest.fixture
def projector_page(new_context):
    """A page at projector size, in a browser context of its own."""
    return new_context(viewport=PROJECTOR).new_page()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app on a free loopback port, with its own runs folder; stopped afterwards."""
    process, url = start_app(tmp_path_factory.mktemp("browser-runs"))
    yield url
    stop_app(process)
