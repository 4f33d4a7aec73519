"""What one class server allows: caps that keep one student from taking it over, read once from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class ServerSettings:
    max_trainings: int = 1  # CNN_MAX_TRAININGS: trainings that run at once; later ones queue
    train_threads: int = max(1, (os.cpu_count() or 2) - 1)  # CNN_TRAIN_THREADS: one core stays for the strokes
    max_runs_per_browser: int = 2  # CNN_MAX_RUNS_PER_BROWSER: runs one browser may have queued or training
    max_runs_per_address: int = 4  # CNN_MAX_RUNS_PER_ADDRESS: runs one computer (network address) may have queued or
    # training: a browser's key comes from a cookie a forged client can mint anew, its address it cannot
    max_queued: int = 20  # CNN_MAX_QUEUED: the whole server's queue
    max_steps_per_run: int = 10_000  # CNN_MAX_STEPS_PER_RUN: ARTICLE's 10 epochs are 4,690 steps
    class_samples_per_session: int = 100  # CNN_CLASS_SAMPLES_PER_SESSION: drawings one session may save
    class_samples_total: int = 5_000  # CNN_CLASS_SAMPLES_TOTAL: the class set's size on disk
    keep_finished_jobs: int = 50  # CNN_KEEP_FINISHED_JOBS: ended runs the job manager still lists in memory


ENVIRONMENT = {f.name: "CNN_" + f.name.upper() for f in fields(ServerSettings)}


def server_settings(environ: dict | None = None) -> ServerSettings:
    """The settings from CNN_* variables; a variable that is not a whole number >= 1 is a ValueError with a sentence."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, variable in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{variable} must be a whole number of at least 1, not {raw!r}.")
        values[name] = value
    return ServerSettings(**values)


def cli_threads(settings: ServerSettings, environ: dict | None = None) -> int:
    """The CLI's CPU threads: settings.train_threads when CNN_TRAIN_THREADS is set in environ, else every core.

    settings: server_settings(environ), already read (and checked) by the caller. The app keeps a core free for the
    students' strokes (ServerSettings.train_threads); a training from the command line serves no one, and on this
    2-core machine one thread made FAST's 30,000-image run take 15.2-16.8 s against 8.8-11.3 s with two (alternated)."""
    environ = os.environ if environ is None else environ
    if (environ.get(ENVIRONMENT["train_threads"]) or "").strip():
        return settings.train_threads
    return max(1, os.cpu_count() or 1)


def configure_threads(settings: ServerSettings | None = None, threads: int | None = None) -> int:
    """Set torch's CPU threads once at start-up: threads, else settings' train_threads; returns the number set."""
    threads = threads or (settings or server_settings()).train_threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
