"""A student with a laptop attacks the two-replica school (scripts/replicas.py) through nginx, at the protocol level.

What one student can send to the school's address: forged forwarding headers and Host, forged sticky cookies,
WebSocket BackMsgs (scripts/loadtest.py's client), oversized bodies and frames, many connections, slow headers.
Each attack ends with an honest student drawing a 7 through the same proxy and reading "It's a 7".
"""
import asyncio
import re
import secrets
import socket
import sys
import threading
import time

import pytest
import torch

from cnn.config import ARTICLE
from cnn.jobs import JobManager
from tests.conftest import ROOT, synthetic_mnist, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402
from replicas import COOKIE, start_school  # noqa: E402

TOKEN = "proxy-attacks-teacher-token"
STUDENTS_TEACHER_PAGE = "This page is for the teacher."
PER_COMPUTER = 2  # CNN_MAX_RUNS_PER_ADDRESS of this school (one browser may queue 1): small, so a test reaches it
COMPUTER_FULL = "This computer already has 2 runs queued or training"
SET_COOKIE = re.compile(rf"^Set-Cookie: {COOKIE}=[0-9a-f]{{32}}; Path=/; HttpOnly; SameSite=Lax$")


class Student:
    """One tab over the proxy's WebSocket, with the headers a forged client chooses (the Cookie among them)."""

    def __init__(self, school: "School", page: str = "draw", query: str = "", headers: dict | None = None,
                 url: str | None = None, source: str | None = None):
        self.school, self.exceptions, self.images = school, [], []
        url = url or school.url
        cookie = (headers or {}).get("Cookie")

        async def connect():
            self.ws = await loadtest.websockets.connect(url.replace("http://", "ws://") + "/_stcore/stream",
                                                        subprotocols=["streamlit"], origin=url, max_size=None,
                                                        additional_headers=headers,
                                                        local_addr=(source, 0) if source else None)
            self.client = loadtest.StreamlitClient(self.ws, url, cookie)
            self.client.download = self.downloaded  # keep each image's path: another replica is asked for it
            return (await self.client.run(first=True, page=page, query=query, exceptions=self.exceptions))[1]

        self.texts = school.call(connect())
        school.students.append(self)

    def downloaded(self, path: str) -> None:
        self.images.append(path)
        loadtest.StreamlitClient.download(self.client, path)

    def rerun(self, widgets: dict | None = None, query: str = "") -> list[str]:
        self.client.drawn = {}
        self.texts = self.school.call(self.client.run(widgets=widgets, query=query, whole_page=True,
                                                      exceptions=self.exceptions))[1]
        return self.texts

    def draw(self, digit: str) -> list[str]:
        """One honest stroke on the Draw page; the texts of the answer."""
        value = loadtest.canvas_value(loadtest.stroke_png(loadtest.STROKES[digit]))
        return self.school.call(self.client.run(widgets={self.client.widgets["canvas"]: value},
                                                exceptions=self.exceptions))[1]

    def close(self) -> None:
        self.school.call(self.ws.close())
        self.school.students.remove(self)


class School:
    """The school (2 replicas behind nginx) and the event loop its students' WebSockets live in."""

    def __init__(self, workdir):
        self.school = start_school(workdir, 2, teacher_token=TOKEN, env={
            "CNN_TRAIN_THREADS": "1", "CNN_MAX_TRAININGS": "1", "CNN_MAX_RUNS_PER_BROWSER": "1",
            "CNN_MAX_RUNS_PER_ADDRESS": str(PER_COMPUTER)})
        self.url, self.students = self.school.url, []
        self.port = int(self.url.rsplit(":", 1)[1])
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def call(self, coroutine, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self.loop).result()

    def cookies(self) -> dict[int, str]:
        """{replica port: a sticky cookie value nginx sends to it} (random candidates, read back from its log)."""
        found: dict[int, str] = {}
        for _ in range(64):
            candidate = secrets.token_hex(16)
            assert http(self.port, "/_stcore/health", [f"Cookie: {COOKIE}={candidate}"])[0] == 200
            assert wait_for(lambda: any(e["cookie"] == candidate for e in self.school.log_entries()), timeout=10)
            upstream = next(e["upstream"] for e in self.school.log_entries() if e["cookie"] == candidate)
            found.setdefault(int(upstream.rsplit(":", 1)[1]), candidate)
            if len(found) == 2:
                return found
        raise AssertionError("64 random cookies all went to one replica")

    def alive(self) -> None:
        """Both replicas and nginx still run, and an honest student (on each replica) reads her 7."""
        assert self.school.nginx.poll() is None and all(p.poll() is None for p, _ in self.school.replicas)
        for cookie in self.cookies().values():
            honest = Student(self, headers={"Cookie": f"{COOKIE}={cookie}"})
            try:
                assert any("It's a 7 (" in text for text in honest.draw("7")), honest.texts
                assert honest.exceptions == []
            finally:
                honest.close()

    def close(self) -> None:
        for student in list(self.students):
            student.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.school.stop()


@pytest.fixture(scope="module")
def school(tmp_path_factory):
    room = School(tmp_path_factory.mktemp("proxy-attacks"))
    try:
        yield room
    finally:
        room.close()


def http(port: int, path: str, headers: list[str] | list[bytes] = (), method: str = "GET",
         body: bytes = b"") -> tuple[int, list[str], bytes]:
    """One raw HTTP/1.1 request to nginx, headers sent byte for byte as given: (status, header lines, body)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [h if isinstance(h, bytes) else h.encode("utf-8") for h in headers]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), header_lines, rest


# ---------------------------------------------------------------- 1. becoming the teacher through the proxy

FORGED_FORWARDING = [
    {"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1, 10.0.0.9"}, {"X-Real-IP": "127.0.0.1"},
    {"Forwarded": "for=127.0.0.1;host=localhost"}, {"X-Forwarded-Host": "localhost"},
    {"X-Forwarded-For": "::1", "X-Real-IP": "::1", "Forwarded": 'for="[::1]"'},
]


@pytest.mark.parametrize("query", ["", "teacher=", "teacher=wrong", f"teacher={TOKEN[:-1]}", "teacher=%00"])
def test_forged_forwarding_headers_and_teacher_links_leave_a_student_a_student(school, query):
    for headers in FORGED_FORWARDING:
        student = Student(school, "teacher", query=query, headers=headers)
        try:
            assert STUDENTS_TEACHER_PAGE in " ".join(student.texts) and "Runs" not in student.texts, (headers,
                                                                                                   student.texts)
            assert STUDENTS_TEACHER_PAGE in " ".join(student.rerun(query=query)), student.texts
            assert student.exceptions == []
        finally:
            student.close()
    # The path is live: the same forged headers with the teacher's token do make the teacher.
    teacher = Student(school, "teacher", query=f"teacher={TOKEN}", headers=FORGED_FORWARDING[1])
    try:
        assert "Runs" in teacher.texts, teacher.texts
    finally:
        teacher.close()


def test_a_forged_host_does_not_reach_a_teacher_or_another_site(school):
    for host in ("localhost", "127.0.0.1:1", "evil.example", "a" * 300):
        status, headers, _ = http(school.port, "/?teacher=", [f"X-Forwarded-Host: {host}"])
        assert status == 200 and not any(h.lower().startswith("location:") for h in headers), headers
    # A WebSocket whose Host and Origin both say localhost: Streamlit's Origin check passes, the session is a student.
    student = Student(school, "teacher", url=school.url.replace("127.0.0.1", "localhost"))
    try:
        assert STUDENTS_TEACHER_PAGE in " ".join(student.texts), student.texts
    finally:
        student.close()


# ---------------------------------------------------------------- 2. the sticky cookie

FORGED_COOKIES = [b"", b"x", b"a" * 3000, b"a;b=c", b"a,b", b"a=b=c", b"a b", b"0123456789abcdef0123456789ABCDEF",
                  b"0123456789abcdef0123456789abcdef; evil=1", "\u00e9\u20ac".encode(), b"\xff\xfe\x00",
                  b"0123456789abcdef0123456789abcdef\r\nX-Injected: 1", b"abc\rSet-Cookie: evil=1",
                  b"0123456789abcdef0123456789abcdef%0d%0aSet-Cookie:%20evil=1"]


def test_forged_sticky_cookies_get_a_clean_cookie_and_no_500(school):
    for value in FORGED_COOKIES:
        status, headers, _ = http(school.port, "/draw", [b"Cookie: " + COOKIE.encode() + b"=" + value])
        assert status in (200, 400), (value, status)  # 400: nginx's own, for a CR or NUL in a header
        cookies = [h for h in headers if h.lower().startswith("set-cookie:")]
        assert all(SET_COOKIE.match(cookie) for cookie in cookies), (value, headers)
        assert len(cookies) == (status == 200), (value, headers)
        assert not any(h.lower().startswith(("x-injected", "evil")) for h in headers), headers
    # Over nginx's header buffers: a clear 400, never a replica's 500.
    status, headers, _ = http(school.port, "/draw", [f"Cookie: {COOKIE}={'a' * 20_000}"])
    assert status == 400
    school.alive()


def test_a_replicas_images_are_not_served_to_the_other_replicas_cookie(school):
    cookies = school.cookies()
    (port_a, cookie_a), (port_b, cookie_b) = cookies.items()
    student = Student(school, headers={"Cookie": f"{COOKIE}={cookie_a}"})
    try:
        assert any("It's a 4 (" in text for text in student.draw("4")) and student.images  # a 4 only replica A saw
        elsewhere = [http(school.port, path, [f"Cookie: {COOKIE}={cookie_b}"])[0] for path in student.images]
        # /media names are content hashes: a picture both replicas drew (a 7's) is on both; this 4's are on A alone.
        assert set(elsewhere) <= {200, 404} and 404 in elsewhere, elsewhere
        assert all(http(school.port, path, [f"Cookie: {COOKIE}={cookie_a}"])[0] == 200 for path in student.images)
        # The student switches replica mid-lesson: a new session there, and her first one still answers.
        moved = Student(school, headers={"Cookie": f"{COOKIE}={cookie_b}"})
        assert any("It's a 1 (" in text for text in moved.draw("1"))
        moved.close()
        assert any("It's a 7 (" in text for text in student.draw("7")) and student.exceptions == []
    finally:
        student.close()


# ---------------------------------------------------------------- 3. caps across the replicas

def start_run(student: Student, name: str) -> list[str]:
    """Press Start on the Train page with the run name set; the texts the page then shows."""
    texts = student.rerun({student.client.widget_id(label="Run name"): loadtest.Wire("string_value", name),
                           student.client.widget_id(label="Start"): True})
    return texts + student.rerun()


def forge_runs(school: "School", cookies: dict, source: str) -> tuple[int, int]:
    """A forged client from source that shows no XSRF cookie (a new 'browser' per session) and forges its address
    headers, opening Train tabs on both replicas in turn and pressing Start in each: (runs queued, refused)."""
    queued, refused = 0, 0
    for attempt in range(3 * PER_COMPUTER):
        cookie = list(cookies.values())[attempt % 2]
        forger = Student(school, "train", source=source, headers={
            "Cookie": f"{COOKIE}={cookie}", "X-Forwarded-For": f"10.0.0.9, 10.9.{attempt}.1",
            "X-Real-IP": f"10.8.{attempt}.1", "Forwarded": f"for=10.7.{attempt}.1"})
        texts = start_run(forger, f"forged-{source.replace('.', '-')}-{attempt}")
        assert forger.exceptions == [], forger.exceptions
        queued += any(re.search(r"-stop\d+$", widget) for widget in forger.client.drawn)
        refused += any(COMPUTER_FULL in text for text in texts)
    forgers = [student for student in school.students if student.client.url == school.url]
    for student in forgers:  # closed tabs: their queued runs are dropped, their names given back
        student.close()
    def given_back() -> bool:  # a replica drops an ended session's queued runs when its queue is next looked at
        for cookie in cookies.values():
            Student(school, "train", headers={"Cookie": f"{COOKIE}={cookie}"}).close()
        return not any((school.school.runs_dir / ".claims").glob("forged-*"))

    assert wait_for(given_back, timeout=90)
    return queued, refused


def test_two_job_managers_sharing_a_runs_folder_count_one_computers_runs_together(tmp_path):
    """No server: the per-computer cap of cnn.jobs counts the claims of every replica sharing runs/."""
    data, release = synthetic_mnist(), threading.Event()

    def held_data(dataset):  # each replica's first run holds its training slot until the test ends
        release.wait(60)
        return data

    config = ARTICLE.replace(batch_size=16, epochs=1, eval_every=8, eval_subset=64)
    a, b = (JobManager(held_data, runs_dir=tmp_path, max_running=1, device=torch.device("cpu"),
                       train_set_size=len(data.train_images), max_runs_per_address=2) for _ in range(2))
    try:
        for manager, name in ((a, "holds-a"), (b, "holds-b")):
            manager.submit(config, name, owner="teacher", address=None)  # the teacher's, on the server: not counted
        queued = a.submit(config, "mine-1", owner="s1", browser="minted-1", address="10.0.0.66")
        b.submit(config, "mine-2", owner="s2", browser="minted-2", address="10.0.0.66")
        for manager in (a, b):
            with pytest.raises(ValueError, match=COMPUTER_FULL):
                manager.submit(config, "mine-3", owner="s3", browser="minted-3", address="10.0.0.66")
        b.submit(config, "classmate", owner="s4", browser="bobs", address="10.0.0.7")  # another computer still can
        a.stop(queued, "s1")  # dropped from A's queue: B counts one run fewer at once
        b.submit(config, "mine-3", owner="s3", browser="minted-3", address="10.0.0.66")
    finally:
        release.set()
        a.stop_all()
        b.stop_all()


def test_one_computer_queues_at_most_its_cap_on_the_whole_school(school):
    """The per-computer cap counts one computer's runs on both replicas together (each replica had its own count:
    a student switching the sticky cookie queued the cap twice), and forged address headers do not make a new
    computer, from another machine (127.0.0.2 stands for one) or from the server's own (nginx's loopback)."""
    cookies = school.cookies()
    # The teacher (on the server machine, straight to each replica) holds each replica's one training slot.
    for number, port in enumerate(cookies):
        teacher = Student(school, "train", query=f"teacher={TOKEN}", url=f"http://127.0.0.1:{port}")
        fast = loadtest.Wire("string_value", "FAST (Adam, one cycle)")
        teacher.rerun({teacher.client.widget_id(label="Preset"): fast})
        texts = start_run(teacher, f"teachers-{number}")
        pause = [widget for widget in teacher.client.drawn if re.search(r"-pause\d+$", widget)]
        assert pause, texts
        teacher.rerun({pause[0]: True})
    assert forge_runs(school, cookies, "127.0.0.2") == (PER_COMPUTER, 2 * PER_COMPUTER)
    assert forge_runs(school, cookies, "127.0.0.1") == (PER_COMPUTER, 2 * PER_COMPUTER)


# ---------------------------------------------------------------- 4. sizes through the proxy

def test_a_body_over_the_upload_cap_is_refused_by_the_proxy(school):
    status, _, _ = http(school.port, "/_stcore/upload_file/x/y", ["Content-Length: 50000000",
                                                                  "Content-Type: multipart/form-data; boundary=b"],
                        method="PUT")
    assert status == 413
    school.alive()


def test_a_websocket_frame_over_max_message_size_closes_that_socket_alone(school):
    student = Student(school)
    try:
        async def oversized():
            await student.ws.send(b"\x00" * (3 * 1024 * 1024))
            while True:  # what the server still had on its way, then the close
                await student.ws.recv()

        with pytest.raises(loadtest.websockets.ConnectionClosed) as closed:
            school.call(oversized(), timeout=120)
        # "Message too big" (1009) from the app's server, or the connection dropped while the frame still streamed.
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1009, closed.value
    finally:
        school.students.remove(student)
    school.alive()


def test_a_huge_canvas_png_through_the_proxy_gets_a_sentence(school):
    student = Student(school, headers={"Cookie": f"{COOKIE}={secrets.token_hex(16)}"})
    try:
        png = "data:image/png;base64," + loadtest.base64.b64encode(loadtest.blank_png(8000, 8000)).decode()
        texts = school.call(student.client.run(widgets={student.client.widgets["canvas"]: loadtest.canvas_value(png)},
                                               exceptions=student.exceptions))[1]
        assert student.exceptions == [] and not any("It's a" in text for text in texts), texts
        assert any("It's a 7 (" in text for text in student.draw("7")), student.texts
    finally:
        student.close()
    school.alive()


def test_one_client_opening_thousands_of_connections_or_sending_slow_headers_holds_nothing_for_long(school):
    async def hold(count: int) -> list:
        async def one():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", school.port)
            except OSError:
                return None
            writer.write(b"GET /_stcore/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished: held open
            await writer.drain()
            return writer
        return await asyncio.gather(*(one() for _ in range(count)))

    async def sessions(count: int) -> list:  # finished WebSocket handshakes: a Streamlit session each, on a replica
        return await asyncio.gather(*(loadtest.websockets.connect(
            school.url.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"], origin=school.url,
            additional_headers={"Cookie": f"{COOKIE}={secrets.token_hex(16)}"}) for _ in range(count)))

    opened = school.call(sessions(200))
    try:
        school.alive()
    finally:
        async def close_all():
            await asyncio.gather(*(ws.close() for ws in opened))

        school.call(close_all())
    writers = school.call(hold(4500))  # more than the 4,096 connections nginx used to have room for
    try:
        school.alive()  # hold() returned once its connections were open: an honest student must still get through
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    # And nginx hangs up on a client that never finishes its headers: a slowloris holds nothing for long.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", school.port), timeout=120) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while True:
            slow.sendall(b"X-a: b\r\n")  # one header line every few seconds, never the blank line
            try:
                slow.settimeout(3)
                if slow.recv(4096) == b"":
                    break
            except socket.timeout:
                pass
            except OSError:
                break
            assert time.monotonic() - started < 40, "nginx kept a client that never finished its headers"
