"""Background training for the app: a job manager that outlives reruns, with a queue and per-owner control.

Worker threads never touch Streamlit: they write plain data under a lock, and pages poll ``snapshot()``.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import default_runs_dir, run_dir
from .config import TrainConfig
from .data import MNIST
from .runs import RunRecorder
from .train import Callback, EpochEvent, EvalEvent, StepEvent, TrainControl, pick_device, train

ACTIVE_STATES = ("queued", "running", "paused")


@dataclass
class Job:
    """One training run as the pages see it. Mutated only by the manager, under its lock."""

    id: int
    name: str
    owner: str
    config: TrainConfig
    folder: Path
    status: str = "queued"  # queued, running, paused, finished, stopped, failed
    error: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    steps: list[dict] = field(default_factory=list)  # {"step", "epoch", "loss", "batch_accuracy", "images_per_second"}
    evals: list[dict] = field(default_factory=list)  # {"step", "epoch", "accuracy", "n", "full"}
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "test_accuracy"}
    filter_steps: list[int] = field(default_factory=list)
    filters: list = field(default_factory=list)  # conv1 weights (32, 3, 3) as nested lists of floats
    step: int = 0
    steps_total: int = 0
    epoch: int = 0
    elapsed_seconds: float = 0.0
    test_accuracy: float | None = None
    save_errors: list[str] = field(default_factory=list)
    control: TrainControl = field(default_factory=TrainControl, repr=False)

    def view(self, history: bool = True) -> dict:
        """A plain-data copy for the pages (no locks, no live objects).

        history=False leaves out the per-step, per-evaluation and filter lists (thousands of entries):
        a listing of every job, polled every second by every session, does not need them.
        """
        view = {
            "id": self.id, "name": self.name, "owner": self.owner, "preset": self.config.name,
            "config": self.config.to_dict(), "folder": str(self.folder), "status": self.status,
            "error": self.error, "created": self.created, "started": self.started, "ended": self.ended,
            "epochs": list(self.epochs), "step": self.step, "steps_total": self.steps_total,
            "epoch": self.epoch, "elapsed_seconds": self.elapsed_seconds, "test_accuracy": self.test_accuracy,
            "save_errors": list(self.save_errors),
        }
        if history:
            view.update(steps=list(self.steps), evals=list(self.evals), filter_steps=list(self.filter_steps),
                        filters=list(self.filters))
        return view


class _JobListener(Callback):
    """Copies training events into the Job, under the manager's lock."""

    def __init__(self, manager: "JobManager", job: Job):
        self.manager, self.job = manager, job

    def on_step(self, event: StepEvent) -> None:
        with self.manager._lock:
            self.job.steps.append({"step": event.step, "epoch": event.epoch, "loss": event.loss,
                                   "batch_accuracy": event.batch_accuracy,
                                   "images_per_second": event.images_per_second})
            self.job.step, self.job.epoch = event.step, event.epoch
            self.job.steps_total = event.steps_total
            self.job.elapsed_seconds = event.elapsed_seconds

    def on_eval(self, event: EvalEvent, model) -> None:
        weights = model.conv1.weight.detach().cpu()[:, 0].tolist() if hasattr(model, "conv1") else None
        with self.manager._lock:
            self.job.evals.append({"step": event.step, "epoch": event.epoch, "accuracy": event.accuracy,
                                   "n": event.n, "full": event.full})
            if weights is not None:
                self.job.filter_steps.append(event.step)
                self.job.filters.append(weights)

    def on_epoch_end(self, event: EpochEvent, model) -> None:
        with self.manager._lock:
            self.job.epochs.append({"epoch": event.epoch, "step": event.step, "test_accuracy": event.test_accuracy})
            self.job.test_accuracy = event.test_accuracy


class JobManager:
    """Runs at most ``max_running`` trainings at once; later ones wait in a visible queue.

    Every session can watch every job; only the owner that started a job can pause, resume or stop it.
    """

    def __init__(self, load_data: Callable[[], MNIST], runs_dir: Path | None = None, max_running: int = 1,
                 device: torch.device | None = None, max_per_owner: int = 3, max_queued: int = 20):
        self._load_data = load_data
        self.runs_dir = Path(runs_dir or default_runs_dir())
        self.max_running = max(1, int(max_running))
        self.max_per_owner = max_per_owner  # runs one session may have queued or running at once
        self.max_queued = max_queued  # a class server's whole queue
        self.device = device
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._ids = itertools.count(1)

    # --- commands
    def submit(self, config: TrainConfig, name: str, owner: str) -> int:
        """Queue a run; ValueError (a sentence) for a bad or already used name."""
        folder = run_dir(name, self.runs_dir)
        with self._lock:
            taken = any(job.name == name and job.status in ACTIVE_STATES for job in self._jobs.values())
            if taken or (folder / "model.json").exists():
                raise ValueError(f"A run called {name!r} already exists: choose another name.")
            active = [job for job in self._jobs.values() if job.status in ACTIVE_STATES]
            if sum(job.owner == owner for job in active) >= self.max_per_owner:
                raise ValueError(f"You already have {self.max_per_owner} runs queued or training: "
                                 "stop one or wait for it to finish.")
            if sum(job.status == "queued" for job in active) >= self.max_queued:
                raise ValueError("The server's training queue is full: wait for a run to finish.")
            job = Job(id=next(self._ids), name=name, owner=owner, config=config, folder=folder)
            self._jobs[job.id] = job
        self._start_queued()
        return job.id

    def pause(self, job_id: int, owner: str) -> None:
        job = self._owned(job_id, owner)
        with self._lock:
            if job.status == "running":
                job.control.pause()
                job.status = "paused"

    def resume(self, job_id: int, owner: str) -> None:
        job = self._owned(job_id, owner)
        with self._lock:
            if job.status == "paused":
                job.control.resume()
                job.status = "running"

    def stop(self, job_id: int, owner: str) -> None:
        """Stop a running or paused job (it keeps its last full-epoch checkpoint), or drop a queued one."""
        job = self._owned(job_id, owner)
        with self._lock:
            if job.status == "queued":
                job.status, job.ended = "stopped", time.time()
                return
            job.control.stop()

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every job and wait for the threads (for tests and shutdown)."""
        with self._lock:
            for job in self._jobs.values():
                if job.status == "queued":
                    job.status = "stopped"
                job.control.stop()
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    # --- queries
    def snapshot(self, job_id: int) -> dict | None:
        """One job with its whole history (steps, evaluations, filters) and its place in the queue."""
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job.view(), queue_position=self._queue_position(job)) if job else None

    def jobs(self) -> list[dict]:
        """Every job, newest first, without its history; queued ones carry their place in the queue."""
        with self._lock:
            return [dict(job.view(history=False), queue_position=self._queue_position(job))
                    for job in sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)]

    def running_threads(self) -> int:
        with self._lock:
            return sum(thread.is_alive() for thread in self._threads.values())

    def wait(self, job_id: int, timeout: float = 60.0) -> dict | None:
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.snapshot(job_id)

    # --- internals
    def _queue_position(self, job: Job) -> int | None:
        """1 for the next queued job to start, None when not queued (call under the lock)."""
        if job.status != "queued":
            return None
        return 1 + sum(other.status == "queued" and other.id < job.id for other in self._jobs.values())

    def _owned(self, job_id: int, owner: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"No run with id {job_id}.")
        if job.owner != owner:
            raise PermissionError("Only the session that started this run can pause or stop it.")
        return job

    def _start_queued(self) -> None:
        with self._lock:
            running = sum(1 for job in self._jobs.values() if job.status in ("running", "paused"))
            for job in sorted(self._jobs.values(), key=lambda j: j.id):
                if running >= self.max_running:
                    break
                if job.status == "queued":
                    job.status, job.started = "running", time.time()
                    thread = threading.Thread(target=self._work, args=(job,), name=f"train-{job.name}", daemon=True)
                    self._threads[job.id] = thread
                    running += 1
                    thread.start()

    def _work(self, job: Job) -> None:
        recorder = None
        result = None
        try:
            data = self._load_data()
            device = self.device or pick_device()
            recorder = RunRecorder(job.folder, job.config, data_source=data.source, device=str(device))
            result = train(job.config, data, callbacks=[recorder, _JobListener(self, job)],
                           control=job.control, device=device)
            status = "stopped" if result.stopped else "finished"
            recorder.finish(result, status)
            error = ""
        except Exception as exc:  # a failed run is shown on the page, never kills the server
            status, error = "failed", f"{exc.__class__.__name__}: {exc}"
            traceback.print_exc()
            if recorder is not None:
                try:
                    recorder.finish(result, "failed", error=error)
                except Exception:
                    pass
        with self._lock:
            job.status, job.error, job.ended = status, error, time.time()
            if recorder is not None:
                job.save_errors = list(recorder.save_errors)
        self._start_queued()
