"""Background training for the app: a job manager that outlives reruns, with a queue and per-owner control.

Worker threads never touch Streamlit: they write plain data under a lock, and pages poll ``snapshot()``.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import itertools
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import default_runs_dir, run_dir
from .classroom import TEACHER_CLEARED, TEACHER_STOPPED, read_class_settings, student_refusal
from .config import TrainConfig, form_config
from .data import TRAIN_SIZE, ImageDataset, dataset_spec
from .model import has_stage
from .runs import RunRecorder
from .sessions import session_tag
from .settings import ServerSettings
from .train import Callback, EpochEvent, EvalEvent, StepEvent, TrainControl, pick_device, train
from .views import ACTIVE_STATES, plural

ENDED_STATES = ("finished", "stopped", "failed")
PACE_STEPS = 50  # the window of steps the time-left guess takes its pace from
MAX_STEP_POINTS = 2_000  # step points a job keeps for the live charts; a longer run is thinned evenly
SESSION_ENDED = "Dropped from the queue: the session that queued it has ended."
# runs/.claims/<name>: a name taken by a queued or training run. Replicas of the app sharing one runs folder each
# have their own queue; the claim (an exclusive create, atomic across processes) keeps two of them from training
# into one folder before either has written its model.json.
CLAIMS_FOLDER = ".claims"
MAX_CLAIM_BYTES = 64  # a claim holds the address that queued it (an IPv6 address is at most 45 characters)


def claim_run_name(runs_dir: Path, name: str, address: str | None = None) -> bool:
    """Take name for a run in runs_dir, for every process sharing it; False when another run holds it.

    address (the computer that queued it, see claims_of) is written into the claim, so that every replica can
    count one computer's runs. A runs folder that cannot be written claims nothing (True): the run itself will
    say why it cannot save.
    """
    try:
        (Path(runs_dir) / CLAIMS_FOLDER).mkdir(parents=True, exist_ok=True)
        handle = os.open(Path(runs_dir) / CLAIMS_FOLDER / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError:
        return True
    try:
        os.write(handle, (address if isinstance(address, str) else "").encode("utf-8", "replace")[:MAX_CLAIM_BYTES])
    except OSError:
        pass
    finally:
        os.close(handle)
    return True


def claims_of(runs_dir: Path, address: str) -> int:
    """Runs queued or training for address on every replica sharing runs_dir (the claims that name it).

    Each replica has its own queue, so its own count let a student who switches the sticky cookie queue the
    per-computer cap once per replica. A claim left by a replica that died counts until its file is removed.
    """
    wanted, count = address.encode("utf-8", "replace")[:MAX_CLAIM_BYTES], 0
    try:
        claims = list((Path(runs_dir) / CLAIMS_FOLDER).iterdir())
    except OSError:
        return 0
    for claim in claims:
        try:
            count += claim.read_bytes()[:MAX_CLAIM_BYTES + 1] == wanted
        except OSError:  # released meanwhile
            continue
    return count


def hold_run_name(runs_dir: Path, name: str):
    """Lock name's claim while its run trains (the open file, or None): another replica then sees it training, and
    a replica that dies mid-run lets go of the lock, so its run reads as interrupted (see trained_elsewhere)."""
    try:
        handle = open(Path(runs_dir) / CLAIMS_FOLDER / name, "rb")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    except OSError:
        return None


def trained_elsewhere(runs_dir: Path, name: str) -> bool:
    """Whether another process (a replica sharing runs_dir) is training the run called name right now."""
    try:
        with open(Path(runs_dir) / CLAIMS_FOLDER / name, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no claim: no run of that name is queued or training anywhere
        return False
    return False


def release_run_name(runs_dir: Path, name: str) -> None:
    """Give name back once its run has ended (its model.json, if any, keeps the name taken from then on)."""
    try:
        (Path(runs_dir) / CLAIMS_FOLDER / name).unlink(missing_ok=True)
    except OSError:
        pass


def run_steps(config: TrainConfig, train_set_size: int = TRAIN_SIZE) -> int:
    """Training steps a run of config takes: ceil(images per epoch / batch) per epoch, times the epochs."""
    return config.steps_per_epoch(train_set_size) * config.epochs


def steps_refusal(config: TrainConfig, max_steps: int, train_set_size: int = TRAIN_SIZE) -> str | None:
    """None when a run of config fits a server's cap of max_steps, else a sentence saying how to make it fit."""
    steps = run_steps(config, train_set_size)
    if steps <= max_steps:
        return None
    fits = max_steps // config.steps_per_epoch(train_set_size)
    hint = (f"at batch {config.batch_size}, at most {fits} epoch{'s fit' if fits != 1 else ' fits'}"
            if fits >= 1 else f"at batch {config.batch_size}, not even one epoch fits")
    return (f"This run would take {steps:,} training steps, more than this server's limit of {max_steps:,} "
            f"steps per run: choose fewer epochs or a larger batch ({hint}).")


def seconds_per_step(pace) -> float | None:
    """The recent pace of a run from its (step, elapsed seconds) window; None until it has two points apart."""
    if len(pace) < 2 or pace[-1][0] <= pace[0][0]:
        return None
    return (pace[-1][1] - pace[0][1]) / (pace[-1][0] - pace[0][0])


def step_cap_sentence(config: TrainConfig, max_steps: int, train_set_size: int = TRAIN_SIZE,
                      batch_size=None) -> str:
    """The server's step cap in the Train form's words: how many epochs of config's recipe fit under it, at
    batch_size when the form would take that value at Start (form_config's rules), else at the recipe's own."""
    if batch_size is not None:
        try:
            config = form_config(config, batch_size=batch_size)
        except (ValueError, TypeError):  # what Start would refuse: the caption keeps the recipe's batch
            pass
    fits = max_steps // config.steps_per_epoch(train_set_size)
    images = config.images_per_epoch(train_set_size)  # FAST's epoch is a random part of the set
    return (f"This server trains at most {max_steps:,} steps per run (epochs x {images:,} images / batch size): "
            f"at batch {config.batch_size} that is up to {plural(fits, 'epoch')}; a larger batch allows more.")


def failure_sentence(exc: BaseException) -> str:
    """What a failed run shows: our own sentence, never a library's message or a server path.

    Our errors (no data, a checkpoint that cannot be saved, a refused setting) already carry a sentence for the
    user; anything else names only its kind, and the server's log keeps the traceback.
    """
    from .checkpoint import CheckpointError
    from .data import DataError
    from .storage import write_problem

    if isinstance(exc, (DataError, CheckpointError)) and str(exc).strip():
        return str(exc).strip()
    if isinstance(exc, OSError):  # an OSError's text holds the server's path (a read-only runs folder)
        return f"The training could not write its run folder: {write_problem(exc)}."
    return (f"The training failed unexpectedly ({exc.__class__.__name__}); the server's log has the details. "
            "The last completed epoch's checkpoint, if any, is kept.")


TRAINING_NICENESS = 10  # nice levels a training thread runs below the server's own threads (lower_thread_priority)


def lower_thread_priority(by: int = TRAINING_NICENESS) -> bool:
    """Run the calling thread `by` nice levels below the server's main thread (at most 19); True if it was set.

    A training is the one long job on a class server: on a busy CPU the students' strokes, and a browser on the same
    machine, now go first, and the training takes what is left. With a FAST run training on this 2-core machine,
    stroke -> answer p50 went from 258.8-264.3 ms to 249.8-265.1 ms (four runs each, alternated; median 262 -> 254;
    scripts/stroke_latency.py --training).
    Linux only, where a nice value belongs to one thread; elsewhere it would lower the whole server.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + by)  # from the main thread's: never compounded
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError:
        return False
    return True


class ThinnedHistory:
    """A bounded list of points: when full, every other point goes and the spacing doubles.

    The points kept stay evenly spaced over the whole run (the 1st, then every stride-th, stride a
    power of two), plus always the latest one, so a live chart of a 375,000-step run copies at most
    ``limit`` points.
    """

    def __init__(self, limit: int = MAX_STEP_POINTS):
        if limit < 2:
            raise ValueError("A thinned history needs room for at least 2 points.")
        self.limit = limit
        self.stride = 1  # every stride-th point is kept
        self.seen = 0  # points appended so far
        self._kept: list[dict] = []
        self._latest: dict | None = None  # the newest point, when it falls between two kept ones

    def append(self, point: dict) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            self._latest = point
            return
        self._kept.append(point)
        self._latest = None
        if len(self._kept) >= self.limit:
            self._kept = self._kept[::2]  # the kept points were every stride-th: now every (2 * stride)-th
            self.stride *= 2
            if self._kept[-1] is not point:
                self._latest = point

    def points(self) -> list[dict]:
        """A copy of the kept points, oldest first, ending with the latest."""
        return self._kept + ([self._latest] if self._latest is not None else [])

    def __len__(self) -> int:
        return len(self._kept) + (self._latest is not None)


@dataclass
class Job:
    """One training run as the pages see it. Mutated only by the manager, under its lock."""

    id: int
    name: str
    owner: str  # the session that started it: only it (and the teacher) may pause, resume or stop the run
    config: TrainConfig
    folder: Path
    browser: str = ""  # the browser it came from (all its tabs share one key): the per-browser cap counts these
    address: str | None = None  # the network address it came from (None: unknown or the server itself)
    status: str = "queued"  # queued, running, paused, finished, stopped, failed
    error: str = ""  # why it failed, was dropped from the queue or stopped at the server's cap
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    # {"step", "epoch", "loss", "batch_accuracy", "images_per_second"}, thinned to at most MAX_STEP_POINTS
    steps: ThinnedHistory = field(default_factory=ThinnedHistory)
    evals: list[dict] = field(default_factory=list)  # {"step", "epoch", "accuracy", "n", "full"}
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "step", "test_accuracy"}
    filter_steps: list[int] = field(default_factory=list)
    filters: list = field(default_factory=list)  # conv1 weights (32, 3, 3) as nested lists of floats
    step: int = 0
    steps_total: int = 0
    steps_per_epoch: int = 0
    epoch: int = 0
    elapsed_seconds: float = 0.0
    # (step, elapsed seconds) of the last PACE_STEPS steps: the live line's time-left guess reads the recent pace,
    # not the average since the start, which the first steps (oneDNN starting its kernels) slow down
    pace: collections.deque = field(default_factory=lambda: collections.deque(maxlen=PACE_STEPS), repr=False)
    test_accuracy: float | None = None
    save_errors: list[str] = field(default_factory=list)
    stopped_by_teacher: bool = False  # the teacher stopped another session's run: the run says so when it ends
    by_teacher: bool = False  # started from the teacher's session: students read "Started by the teacher"
    control: TrainControl = field(default_factory=TrainControl, repr=False)
    health: "HealthMonitor | None" = field(default=None, repr=False)  # layer health, written under the manager's lock

    def view(self, history: bool = True) -> dict:
        """A plain-data copy for the pages (no locks, no live objects).

        history=False leaves out the per-step, per-evaluation and filter lists (thousands of entries):
        a listing of every job, polled every second by every session, does not need them.
        """
        view = {
            "id": self.id, "name": self.name, "owner": self.owner, "session": session_tag(self.owner),
            "started_by": "the teacher" if self.by_teacher else session_tag(self.owner), "by_teacher": self.by_teacher,
            "preset": self.config.name,
            "config": self.config.to_dict(), "folder": str(self.folder), "status": self.status,
            "error": self.error, "created": self.created, "started": self.started, "ended": self.ended,
            "epochs": list(self.epochs), "step": self.step, "steps_total": self.steps_total,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch": self.epoch, "elapsed_seconds": self.elapsed_seconds, "test_accuracy": self.test_accuracy,
            "seconds_per_step": seconds_per_step(self.pace),
            "save_errors": list(self.save_errors), "pause_reached": self.control.waiting,
        }
        if history:
            view.update(steps=self.steps.points(), evals=list(self.evals), filter_steps=list(self.filter_steps),
                        filters=list(self.filters), health=self.health.view() if self.health is not None else None)
        return view


class JobListener(Callback):
    """Copies training events into the Job, under the manager's lock."""

    def __init__(self, manager: "JobManager", job: Job):
        self.manager, self.job = manager, job

    def on_step(self, event: StepEvent) -> None:
        with self.manager._lock:
            self.job.steps.append({"step": event.step, "epoch": event.epoch, "loss": event.loss,
                                   "batch_accuracy": event.batch_accuracy,
                                   "images_per_second": event.images_per_second})
            self.job.step, self.job.epoch = event.step, event.epoch
            self.job.steps_total, self.job.steps_per_epoch = event.steps_total, event.steps_per_epoch
            self.job.elapsed_seconds = event.elapsed_seconds
            self.job.pace.append((event.step, event.elapsed_seconds))

    def on_eval(self, event: EvalEvent, model) -> None:
        weights = model.conv1.weight.detach().cpu()[:, 0].tolist() if has_stage(model, "conv1") else None
        with self.manager._lock:
            self.job.evals.append({"step": event.step, "epoch": event.epoch, "accuracy": event.accuracy,
                                   "n": event.n, "full": event.full})
            if weights is not None:
                self.job.filter_steps.append(event.step)
                self.job.filters.append(weights)

    def on_epoch_end(self, event: EpochEvent, model) -> None:
        with self.manager._lock:
            self.job.epochs.append({"epoch": event.epoch, "step": event.step, "test_accuracy": event.test_accuracy,
                                    "elapsed_seconds": event.elapsed_seconds})
            self.job.test_accuracy = event.test_accuracy
            self.job.elapsed_seconds = event.elapsed_seconds  # its evaluation on the whole test set counted


class JobManager:
    """Runs at most ``settings.max_trainings`` trainings at once; later ones wait in a visible queue.

    Every session can watch every job; only the owner that started a job (or the class's teacher) can pause,
    resume or stop it, and only a student's runs must fit what the teacher allows (cnn/classroom.py).
    A class server's caps (cnn/settings.py) keep one student from taking it over: runs queued or
    training per browser, the whole queue, the steps of one run, and the ended jobs kept in memory.
    session_alive(owner) tells whether the session that queued a run is still there; a queued run
    whose session has ended is dropped when the queue is looked at or a slot frees.
    """

    def __init__(self, load_data: Callable[[str], ImageDataset], runs_dir: Path | None = None,
                 max_running: int | None = None, device: torch.device | None = None, *,
                 settings: ServerSettings | None = None, max_runs_per_browser: int | None = None,
                 max_runs_per_address: int | None = None,
                 max_queued: int | None = None, max_steps_per_run: int | None = None,
                 keep_finished_jobs: int | None = None, train_set_size: int | None = None,
                 session_alive: Callable[[str], bool] | None = None):
        self._load_data = load_data
        self.runs_dir = Path(runs_dir or default_runs_dir())
        self.device = device
        # Keyword arguments override the settings, one cap at a time (tests, a script without CNN_* variables).
        overrides = {"max_trainings": max_running, "max_runs_per_browser": max_runs_per_browser,
                     "max_runs_per_address": max_runs_per_address,
                     "max_queued": max_queued, "max_steps_per_run": max_steps_per_run,
                     "keep_finished_jobs": keep_finished_jobs}
        self.settings = dataclasses.replace(settings or ServerSettings(),
                                            **{k: int(v) for k, v in overrides.items() if v is not None})
        for name in overrides:
            if getattr(self.settings, name) < 1:
                raise ValueError(f"The job manager's {name} must be at least 1.")
        self._train_set_size = train_set_size  # learnt from the data on the first submit when not given
        self._session_alive = session_alive
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._ids = itertools.count(1)

    @property
    def max_running(self) -> int:
        return self.settings.max_trainings

    # --- commands
    def submit(self, config: TrainConfig, name: str, owner: str, browser: str | None = None,
               address: str | None = None, teacher: bool = True) -> int:
        """Queue a run for the session owner; ValueError with a sentence when a name, a cap or the class refuses it.

        browser: a key that all tabs of one browser share (default: owner), for the per-browser cap.
        address: the network address the session connects from, for the per-computer cap (None: not known,
        e.g. the server's own loopback, where the one user is the teacher).
        teacher: False for a student's session, whose run must fit what the teacher allows (runs/classroom.json).
        """
        browser = browser or owner
        folder = run_dir(name, self.runs_dir)
        if config.problem():  # the form's limits are the browser's; a forged value arrives here unchecked
            raise ValueError(config.problem())
        if not teacher:  # the form may hide what a student may not start, but a forged message reaches here
            refused = student_refusal(config, read_class_settings(self.runs_dir))
            if refused:
                raise ValueError(refused)
        refusal = steps_refusal(config, self.settings.max_steps_per_run, self.train_set_size(config.dataset))
        self._drop_ended_sessions()  # a closed tab's queued runs no longer hold places in the queue
        with self._lock:
            taken = any(job.name == name and job.status in ACTIVE_STATES for job in self._jobs.values())
            if taken or (folder / "model.json").exists() or (folder.exists() and not folder.is_dir()):
                raise ValueError(f"A run called {name!r} already exists: choose another name.")
            if refusal:
                raise ValueError(refusal)
            active = [job for job in self._jobs.values() if job.status in ACTIVE_STATES]
            limit = self.settings.max_runs_per_browser
            if sum(job.browser == browser for job in active) >= limit:
                raise ValueError(f"This browser already has {limit} run{'s' if limit != 1 else ''} queued or "
                                 "training, the most one browser may have: stop one or wait for it to finish.")
            if sum(job.status == "queued" for job in active) >= self.settings.max_queued:
                raise ValueError(f"The server's training queue is full ({self.settings.max_queued} runs waiting): "
                                 "wait for a run to finish, then start yours.")
            limit = self.settings.max_runs_per_address
            if address is not None and max(sum(job.address == address for job in active),
                                           claims_of(self.runs_dir, address)) >= limit:
                raise ValueError(f"This computer already has {limit} runs queued or training, the most one computer "
                                 "may have: stop one or wait for it to finish.")
            if not claim_run_name(self.runs_dir, name, address):  # queued or training on another replica
                raise ValueError(f"A run called {name!r} already exists: choose another name.")
            job = Job(id=next(self._ids), name=name, owner=owner, browser=browser, address=address, config=config,
                      folder=folder, by_teacher=teacher)
            self._jobs[job.id] = job
        self._start_queued()
        return job.id

    def pause(self, job_id: int, owner: str, *, teacher: bool = False) -> None:
        """Hold a running job between two steps (its owner, or the teacher)."""
        job = self._owned(job_id, owner, teacher)
        with self._lock:
            if job.status == "running":
                job.control.pause()
                job.status = "paused"

    def resume(self, job_id: int, owner: str, *, teacher: bool = False) -> None:
        job = self._owned(job_id, owner, teacher)
        with self._lock:
            if job.status == "paused":
                job.control.resume()
                job.status = "running"

    def stop(self, job_id: int, owner: str, *, teacher: bool = False) -> None:
        """Stop a running or paused job (it keeps its last full-epoch checkpoint), or drop a queued one.

        teacher=True: the class's teacher may stop any session's run; the run then says so.
        """
        job = self._owned(job_id, owner, teacher)
        by_teacher = teacher and job.owner != owner
        with self._lock:
            if job.status == "queued":
                job.status, job.ended = "stopped", time.time()
                release_run_name(self.runs_dir, job.name)
                if by_teacher:
                    job.error = TEACHER_STOPPED
                self._evict_ended()
                return
            if by_teacher and job.status in ("running", "paused"):
                job.stopped_by_teacher = True
            job.control.stop()

    def clear_queue(self) -> int:
        """Drop every queued (not yet started) run of every session, saying the teacher did; returns how many."""
        with self._lock:
            dropped = [job for job in self._jobs.values() if job.status == "queued"]
            for job in dropped:
                job.status, job.error, job.ended = "stopped", TEACHER_CLEARED, time.time()
                release_run_name(self.runs_dir, job.name)
            self._evict_ended()
        return len(dropped)

    def drop_queued_of(self, owner: str, reason: str = SESSION_ENDED) -> int:
        """Drop every queued (not yet started) run of owner, saying why; returns how many were dropped."""
        with self._lock:
            dropped = [job for job in self._jobs.values() if job.owner == owner and job.status == "queued"]
            for job in dropped:
                job.status, job.error, job.ended = "stopped", reason, time.time()
                release_run_name(self.runs_dir, job.name)
            self._evict_ended()
        return len(dropped)

    def stop_all(self, timeout: float = 60.0) -> None:
        """Stop every job and wait for the threads (for tests and shutdown)."""
        with self._lock:
            for job in self._jobs.values():
                if job.status == "queued":
                    job.status, job.ended = "stopped", time.time()
                    release_run_name(self.runs_dir, job.name)
                job.control.stop()
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    # --- queries
    def snapshot(self, job_id: int) -> dict | None:
        """One job with its history (thinned steps, evaluations, filters) and its place in the queue."""
        self._drop_ended_sessions()
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job.view(), queue_position=self._queue_position(job)) if job else None

    def jobs(self) -> list[dict]:
        """Every job still in memory, newest first, without its history; queued ones carry their place in the queue."""
        self._drop_ended_sessions()
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

    def train_set_size(self, dataset: str = "mnist") -> int:
        """Training images per epoch of dataset: given, else learnt from the data once it loads (its spec's until then)."""
        if self._train_set_size is not None:
            return self._train_set_size
        try:
            return len(self._load_data(dataset).train_images)
        except Exception:  # the data is not there yet: the run itself will say why it cannot start
            return dataset_spec(dataset).train_size

    # --- internals
    def _queue_position(self, job: Job) -> int | None:
        """1 for the next queued job to start, None when not queued (call under the lock)."""
        if job.status != "queued":
            return None
        return 1 + sum(other.status == "queued" and other.id < job.id for other in self._jobs.values())

    def _owned(self, job_id: int, owner: str, teacher: bool = False) -> Job:
        """The job, if owner started it or the teacher asks; KeyError or PermissionError otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"No run with id {job_id}.")
        if job.owner != owner and not teacher:
            raise PermissionError("Only the session that started this run can pause or stop it.")
        return job

    def _drop_ended_sessions(self) -> None:
        """Drop the queued runs of sessions that session_alive says have ended."""
        if self._session_alive is None:
            return
        with self._lock:
            owners = {job.owner for job in self._jobs.values() if job.status == "queued"}
        for owner in owners:  # asked outside the lock: session_alive is the app's code
            try:
                alive = bool(self._session_alive(owner))
            except Exception:  # in doubt, keep the run: a drop cannot be undone
                alive = True
            if not alive:
                self.drop_queued_of(owner)

    def _evict_ended(self) -> None:
        """Forget the oldest ended jobs beyond keep_finished_jobs (call under the lock); their runs stay on disk."""
        ended = sorted((job for job in self._jobs.values() if job.status in ENDED_STATES),
                       key=lambda job: (job.ended or job.created, job.id))
        for job in ended[:max(0, len(ended) - self.settings.keep_finished_jobs)]:
            del self._jobs[job.id]
        for job_id in [i for i, thread in self._threads.items() if i not in self._jobs and not thread.is_alive()]:
            del self._threads[job_id]

    def _start_queued(self) -> None:
        self._drop_ended_sessions()
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
        """A training thread: whatever happens in it, the job ends (never "running" forever) and its slot frees."""
        from .health import HealthMonitor  # cnn.health builds on this module's ThinnedHistory
        recorder = result = None
        status, error = "failed", "The training ended without a result."
        lower_thread_priority()  # also for a thread started from a training's (a queued run): set, not added
        held = hold_run_name(self.runs_dir, job.name)
        try:
            data = self._load_data(job.config.dataset)
            device = self.device or pick_device()
            recorder = RunRecorder(job.folder, job.config, data_source=data.source, device=str(device))
            health = HealthMonitor(data.test_images[:job.config.eval_subset], lock=self._lock)  # the eval subset
            with self._lock:
                job.health = health
            result = train(job.config, data, callbacks=[recorder, JobListener(self, job), health], control=job.control,
                           device=device, max_steps=self.settings.max_steps_per_run)
            status, error = ("stopped" if result.stopped else "finished"), ""
            if result.stopped and job.stopped_by_teacher:
                error = TEACHER_STOPPED
            elif result.stopped and not job.control.stopped:
                error = f"Stopped at this server's limit of {self.settings.max_steps_per_run:,} steps per run."
            recorder.finish(result, status)
        except BaseException as exc:  # even SystemExit or KeyboardInterrupt: the page must see a failed run
            status, error = "failed", failure_sentence(exc)
            traceback.print_exc()
            if recorder is not None:
                try:
                    recorder.finish(result, "failed", error=error)
                except Exception:  # the run already failed; its last good checkpoint stays on disk
                    pass
        finally:
            with self._lock:
                job.status, job.error, job.ended = status, error, time.time()
                if result is not None:  # the run's time as its card says it (the pages show both)
                    job.elapsed_seconds = result.wall_seconds
                release_run_name(self.runs_dir, job.name)
                if held is not None:
                    held.close()
                if recorder is not None:
                    job.save_errors = list(recorder.save_errors)
                self._evict_ended()
            self._start_queued()
