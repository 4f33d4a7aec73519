"""cnn.jobs: start, pause, resume, stop mid-epoch, a queue limited to one, failures, no thread left (SYNTHETIC data)."""
import threading
import time

import pytest
import torch

from cnn.config import ARTICLE
from cnn.jobs import JobManager
from cnn.runs import list_runs
from tests.conftest import synthetic_mnist

# 512 images / batch 16 = 32 steps per epoch; slow enough to catch it mid-epoch, fast enough for CI.
CONFIG = ARTICLE.replace(batch_size=16, epochs=3, eval_every=8, eval_subset=64)


def wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def manager(tmp_path):
    data = synthetic_mnist()
    manager = JobManager(lambda: data, runs_dir=tmp_path / "runs", max_running=1, device=torch.device("cpu"))
    yield manager
    manager.stop_all()
    assert manager.running_threads() == 0


def test_start_runs_to_the_end_and_saves(manager, tmp_path):
    job_id = manager.submit(CONFIG.replace(epochs=1), "one", owner="alice")
    job = manager.wait(job_id, timeout=60)
    assert job["status"] == "finished" and job["step"] == 32 and len(job["epochs"]) == 1
    assert job["test_accuracy"] is not None and job["evals"][-1]["full"]
    assert len(job["filters"]) == len(job["filter_steps"]) == 5  # 4 quick evaluations + the epoch's
    runs = {run.name: run for run in list_runs(tmp_path / "runs", include_bundled=False)}
    assert runs["one"].status == "finished" and runs["one"].checkpoint is not None


def test_pause_resume_and_stop_mid_epoch(manager):
    job_id = manager.submit(CONFIG, "pausing", owner="alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= 3)
    manager.pause(job_id, "alice")
    time.sleep(0.3)
    paused_at = manager.snapshot(job_id)["step"]
    time.sleep(0.5)
    assert manager.snapshot(job_id)["step"] <= paused_at + 1 and manager.snapshot(job_id)["status"] == "paused"
    manager.resume(job_id, "alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= paused_at + 3)
    stop_requested = time.time()
    manager.stop(job_id, "alice")
    job = manager.wait(job_id, timeout=10)
    assert job["status"] == "stopped" and time.time() - stop_requested < 2.0
    assert job["step"] < 3 * 32


def test_stop_keeps_the_last_full_epoch_checkpoint(manager, tmp_path):
    job_id = manager.submit(CONFIG, "keeps", owner="alice")
    assert wait_for(lambda: len(manager.snapshot(job_id)["epochs"]) >= 1, timeout=60)
    manager.stop(job_id, "alice")
    job = manager.wait(job_id)
    run = next(r for r in list_runs(tmp_path / "runs", include_bundled=False) if r.name == "keeps")
    assert job["status"] == "stopped" and run.checkpoint is not None
    assert run.card["status"] == "stopped" and run.card["epochs"] >= 1


def test_only_the_owner_can_pause_or_stop(manager):
    job_id = manager.submit(CONFIG, "owned", owner="alice")
    with pytest.raises(PermissionError, match="Only the session that started"):
        manager.stop(job_id, "mallory")
    with pytest.raises(PermissionError):
        manager.pause(job_id, "mallory")
    assert manager.snapshot(job_id)["status"] in ("running", "finished")


def test_queue_with_a_limit_of_one(manager):
    first = manager.submit(CONFIG, "first", owner="alice")
    second = manager.submit(CONFIG.replace(epochs=1), "second", owner="bob")
    views = {job["id"]: job for job in manager.jobs()}
    assert views[second]["status"] == "queued" and views[second]["queue_position"] == 1
    assert manager.running_threads() == 1
    manager.stop(first, "alice")
    manager.wait(first)
    assert wait_for(lambda: manager.snapshot(second)["status"] in ("running", "finished"))
    assert manager.wait(second, timeout=60)["status"] == "finished"


def test_stopping_a_queued_run_drops_it(manager):
    manager.submit(CONFIG, "busy", owner="alice")
    queued = manager.submit(CONFIG, "waiting", owner="bob")
    manager.stop(queued, "bob")
    assert manager.snapshot(queued)["status"] == "stopped"


def test_an_exception_is_a_failed_run_and_frees_the_slot(tmp_path):
    calls = []

    def broken_data():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return synthetic_mnist()

    manager = JobManager(broken_data, runs_dir=tmp_path / "runs", device=torch.device("cpu"))
    bad = manager.submit(CONFIG, "bad", owner="alice")
    good = manager.submit(CONFIG.replace(epochs=1), "good", owner="alice")
    assert manager.wait(bad)["status"] == "failed"
    assert "disk on fire" in manager.snapshot(bad)["error"]
    assert manager.wait(good, timeout=60)["status"] == "finished"
    manager.stop_all()
    assert manager.running_threads() == 0


def test_duplicate_and_bad_names_are_refused(manager):
    manager.submit(CONFIG, "same", owner="alice")
    with pytest.raises(ValueError, match="already exists"):
        manager.submit(CONFIG, "same", owner="bob")
    with pytest.raises(ValueError, match="not a valid run name"):
        manager.submit(CONFIG, "../escape", owner="bob")


def test_no_thread_left_after_stop_all(manager):
    manager.submit(CONFIG, "a", owner="alice")
    manager.submit(CONFIG, "b", owner="alice")
    assert wait_for(lambda: manager.running_threads() == 1)
    manager.stop_all()
    assert manager.running_threads() == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("train-")]


def test_one_session_cannot_fill_the_queue(manager):
    manager.max_per_owner = 2
    manager.submit(CONFIG, "mine-1", owner="alice")
    manager.submit(CONFIG, "mine-2", owner="alice")
    with pytest.raises(ValueError, match="already have 2 runs"):
        manager.submit(CONFIG, "mine-3", owner="alice")
    manager.submit(CONFIG, "theirs", owner="bob")  # others still can
