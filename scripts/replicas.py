"""A school on one machine: N replicas of the app behind one nginx, with sticky sessions and WebSockets.

    python scripts/replicas.py --replicas 2 --port 8500 [--runs-dir DIR] [--class-dir DIR] [--teacher-token T]

Each replica is `streamlit run app.py` on its own loopback port; nginx listens on 127.0.0.1:PORT only and keeps
each browser on one replica with a cookie it sets itself (cnn_replica): the page, its /_stcore/stream WebSocket,
its /media images and its uploads all live in that replica's memory. Every replica shares models/, ONE runs folder
(the class settings in runs/classroom.json are in it), ONE class handwriting folder and ONE teacher token, so a run
trained on one replica is listed on all and the teacher's settings hold on every replica.

Runs in the foreground until Ctrl-C, then stops nginx and every replica. start_school() does the same for a test
or the load test and returns a School to stop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.conftest import free_port, start_app, stop_app  # noqa: E402

COOKIE = "cnn_replica"  # the sticky cookie nginx sets; its value picks the replica (a consistent hash)
UPLOAD_MB = 2  # .streamlit/config.toml's server.maxUploadSize; nginx adds room for the multipart wrapping
ACCESS_LOG = "access.log"  # one JSON object per request: the upstream (replica) and the cookie it came with

NGINX_CONF = """# Written by scripts/replicas.py: {replicas} replicas of the CNN classroom behind one nginx.
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
# One student's laptop can open tens of thousands of connections (its ephemeral ports): 4,096 let one script fill
# nginx so that no other student got in. As many as the open-file limit allows (a proxied one takes two files).
worker_rlimit_nofile {open_files};
events {{ worker_connections {connections}; }}

http {{
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path       {prefix}/temp/proxy;
    fastcgi_temp_path     {prefix}/temp/fastcgi;
    uwsgi_temp_path       {prefix}/temp/uwsgi;
    scgi_temp_path        {prefix}/temp/scgi;

    # Which replica served each request, and with which cookie: tests/test_replicas.py and the load test read it.
    log_format cnn escape=json '{{"time":"$time_iso8601","request":"$request","status":"$status",'
                               '"upstream":"$upstream_addr","cookie":"$cookie_{cookie}","route":"$cnn_route"}}';
    access_log {prefix}/{access_log} cnn;

    # A client that never finishes its headers or body (slowloris) is hung up on, not held for nginx's default 60 s;
    # an idle keep-alive connection too. An open WebSocket is not affected (proxy_read_timeout below).
    client_header_timeout 10s;
    client_body_timeout   10s;
    keepalive_timeout     15s;

    # The WebSocket upgrade for /_stcore/stream: "upgrade" when the browser asks for it, else a plain request.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    # Sticky sessions: a browser's cookie picks its replica; a browser without one (or with a value we never
    # made) gets a fresh random route, set as its cookie on the same response. ip_hash would put every student
    # of a school behind one NAT (and every loopback client) on one replica.
    map $cookie_{cookie} $cnn_route {{
        "~^[0-9a-f]{{32}}$" $cookie_{cookie};
        default            $request_id;
    }}
    upstream cnn_replicas {{
        hash $cnn_route consistent;
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size {body_mb}m;  # the app's upload cap ({upload_mb} MB) and the form's wrapping

        location / {{
            proxy_pass http://cnn_replicas;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;  # Streamlit checks a WebSocket's Origin against its Host
            # The app counts a forwarded request as a student's (cnn/classroom.py PROXY_HEADERS). The address is the
            # socket's alone: a client's own X-Forwarded-For ("10.0.0.9, 10.9.0.1") passed on, the app's uvicorn
            # (it trusts 127.0.0.1) took its forged last entry for a client on this machine: a new "computer" per
            # session. Forwarded, X-Forwarded-Host and -Proto from a client are dropped (an empty value sends none).
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded "";
            proxy_set_header X-Forwarded-Host "";
            proxy_read_timeout 1d;  # a student's page stays open for the whole lesson
            proxy_send_timeout 1d;
            proxy_buffering off;    # the live Train page streams
            add_header Set-Cookie "{cookie}=$cnn_route; Path=/; HttpOnly; SameSite=Lax" always;
        }}
    }}
}}
"""


def connection_room(most: int = 65_536) -> tuple[int, int]:
    """(open files, connections) for nginx's one worker: up to this process's hard open-file limit (nginx cannot
    raise its own past it), two files per proxied connection, at most `most` connections (~30 MB at 65,536)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 2 * most + 100 if hard == resource.RLIM_INFINITY else min(hard, 2 * most + 100)
    return files, max(1024, min(most, (files - 100) // 2))


def nginx_config(prefix: Path, port: int, replica_ports: list[int]) -> str:
    """nginx.conf for replicas on 127.0.0.1:replica_ports behind 127.0.0.1:port; every path under prefix."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in replica_ports)
    open_files, connections = connection_room()
    return NGINX_CONF.format(prefix=prefix, port=port, servers=servers, replicas=len(replica_ports),
                             cookie=COOKIE, access_log=ACCESS_LOG, upload_mb=UPLOAD_MB, body_mb=UPLOAD_MB + 1,
                             open_files=open_files, connections=connections)


def nginx_binary() -> str:
    """Debian's nginx (`make school` installs nginx-light when there is none)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if Path(p).exists()), None)
    if not found:
        raise RuntimeError("No nginx found: `make school` (or `make test`) installs Debian's nginx-light "
                           "(apt-get install nginx-light).")
    return found


@dataclass
class School:
    """Replicas behind one nginx. url: the address students open; replicas: [(process, port)]."""

    url: str
    replicas: list[tuple[subprocess.Popen, int]]
    nginx: subprocess.Popen
    workdir: Path
    runs_dir: Path
    class_dir: Path
    teacher_token: str
    stopped: bool = field(default=False)

    @property
    def access_log(self) -> Path:
        return self.workdir / "nginx" / ACCESS_LOG

    def upstream(self, port: int) -> str:
        """How the access log names the replica on port."""
        return f"127.0.0.1:{port}"

    def log_entries(self) -> list[dict]:
        """Every request nginx has logged so far, oldest first (see NGINX_CONF's log_format)."""
        try:
            lines = self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line being written just now
                continue
        return entries

    def stop(self) -> None:
        """Stop nginx, then every replica (each asked, then killed if it lingers)."""
        if self.stopped:
            return
        self.stopped = True
        stop_app(self.nginx, timeout=10)  # SIGTERM: nginx's fast shutdown
        for process, _ in self.replicas:
            process.terminate()
        for process, _ in self.replicas:
            stop_app(process)


def start_nginx(prefix: Path, port: int, replica_ports: list[int]) -> subprocess.Popen:
    """nginx in the foreground with its own config, pid, logs and temp paths under prefix, once it answers."""
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / temp).mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(nginx_config(prefix, port, replica_ports))
    log = open(prefix / "nginx.log", "w")
    process = subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", "nginx.conf", "-e", "stderr"],
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
                if response.read().strip() == b"ok":
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError("nginx did not start: " + (prefix / "nginx.log").read_text()[-2000:])
        time.sleep(0.2)


def start_school(workdir: Path, replicas: int = 2, port: int = 0, env: dict | None = None,
                 runs_dir: Path | None = None, class_dir: Path | None = None,
                 teacher_token: str | None = None) -> School:
    """Start replicas of the app (in parallel) and nginx in front of them; returns once all answer.

    workdir holds each replica's log (replica-K/streamlit.log), nginx's files (nginx/) and, unless given, the
    shared runs (runs/) and class (class/) folders. env: more variables for every replica.
    """
    if replicas < 1:
        raise ValueError("A school needs at least one replica.")
    workdir = Path(workdir)
    runs_dir = Path(runs_dir or workdir / "runs").resolve()
    class_dir = Path(class_dir or workdir / "class").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    class_dir.mkdir(parents=True, exist_ok=True)
    token = teacher_token or os.environ.get("CNN_TEACHER_TOKEN") or secrets.token_urlsafe(24)
    shared = {**(env or {}), "CNN_RUNS_DIR": str(runs_dir), "CNN_CLASS_DIR": str(class_dir),
              "CNN_TEACHER_TOKEN": token,
              # One XSRF cookie secret for all: an upload signed by one replica is accepted by any of them.
              "STREAMLIT_SERVER_COOKIE_SECRET": secrets.token_hex(32)}
    ports = [free_port() for _ in range(replicas)]
    started: list = [None] * replicas
    failures: list[str] = []

    def start_one(index: int) -> None:
        folder = workdir / f"replica-{index + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            started[index] = start_app(folder, ports[index], env=shared)[0]
        except Exception as exc:  # noqa: BLE001 - reported with the others below
            failures.append(f"replica {index + 1}: {exc}")

    threads = [threading.Thread(target=start_one, args=(i,)) for i in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        for process in started:
            if process is not None:
                stop_app(process)
        raise RuntimeError("; ".join(failures))
    port = port or free_port()
    try:
        nginx = start_nginx(workdir / "nginx", port, ports)
    except Exception:
        for process in started:
            stop_app(process)
        raise
    return School(f"http://127.0.0.1:{port}", list(zip(started, ports)), nginx, workdir, runs_dir, class_dir, token)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8500, help="nginx's port on 127.0.0.1 (default 8500)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="the runs folder all replicas share")
    parser.add_argument("--class-dir", type=Path, default=ROOT / "class_data",
                        help="the class handwriting folder all replicas share")
    parser.add_argument("--teacher-token", default=None,
                        help="the teacher's token (default: CNN_TEACHER_TOKEN, else a random one, printed)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cnn-school-"))
    print(f"Starting {args.replicas} replicas (logs in {workdir}) ...", flush=True)
    school = start_school(workdir, args.replicas, args.port, runs_dir=args.runs_dir, class_dir=args.class_dir,
                          teacher_token=args.teacher_token)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    try:
        ports = ", ".join(str(port) for _, port in school.replicas)
        print(f"{args.replicas} replicas on 127.0.0.1 ports {ports}, behind nginx at {school.url}/ "
              f"(runs: {school.runs_dir}; class drawings: {school.class_dir}).\n"
              f"Students open {school.url}/ ; the teacher opens {school.url}/?teacher={school.teacher_token} "
              "(keep it off the projector). Ctrl-C stops them all.", flush=True)
        while all(process.poll() is None for process, _ in school.replicas) and school.nginx.poll() is None:
            time.sleep(1)
        print("A replica or nginx ended: stopping the others.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        school.stop()


if __name__ == "__main__":
    sys.exit(main())
