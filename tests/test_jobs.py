"""cnn.jobs: start, pause, resume, stop mid-epoch, the queue and a class server's caps, failures (SYNTHETIC data)."""
import os
import sys
import threading

import pytest
import torch

from cnn.config import ARTICLE, FAST
from cnn import jobs
from cnn.jobs import SESSION_ENDED, Job, JobListener, JobManager, ThinnedHistory
from cnn.runs import list_runs
from cnn.train import StepEvent
from tests.conftest import synthetic_mnist, wait_for

# 512 images / batch 16 = 32 steps per epoch; slow enough to catch it mid-epoch, fast enough for CI.
CONFIG = ARTICLE.replace(batch_size=16, epochs=3, eval_every=8, eval_subset=64)
CPU = torch.device("cpu")




@pytest.fixture
def manager(tmp_path, train_device):
    """The app's trainer, on each device this machine trains on (a GPU's run is the app's run where there is one)."""
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", max_running=1, device=train_device)
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


def test_a_finished_runs_time_is_its_cards(manager, tmp_path, monkeypatch):
    """The Train page (the job) and Home and Compare (the card) showed 37 s and 41 s for one run: the job's time
    stopped at its last step, before the evaluation on the whole test set (slowed here to 0.5 s)."""
    import time

    from cnn import train as training

    evaluate = training.evaluate

    def slow_evaluate(model, images, labels, **kwargs):
        if "precision" not in kwargs:  # the epoch's evaluation on the whole test set (quick ones name a precision)
            time.sleep(0.5)
        return evaluate(model, images, labels, **kwargs)

    monkeypatch.setattr(training, "evaluate", slow_evaluate)
    job = manager.wait(manager.submit(CONFIG.replace(epochs=1), "timed", owner="alice"), timeout=60)
    card = {run.name: run for run in list_runs(tmp_path / "runs", include_bundled=False)}["timed"].card
    assert job["status"] == "finished" and card["wall_seconds"] >= 0.5
    assert job["elapsed_seconds"] == pytest.approx(card["wall_seconds"], abs=0.051)


def test_each_epoch_of_a_live_run_keeps_the_time_its_checkpoint_card_records(manager, tmp_path):
    """The Run history shows a live run's time as of its last completed epoch (cnn.views.history_time): the time the
    epoch's checkpoint card on disk says (the training's, cnn.runs.RunRecorder.on_epoch_end), not a count from
    whenever the table was drawn."""
    job_id = manager.submit(CONFIG, "timed-epochs", owner="alice")
    assert wait_for(lambda: len(manager.snapshot(job_id)["epochs"]) >= 1, timeout=60)
    manager.pause(job_id, "alice")
    assert wait_for(lambda: manager.snapshot(job_id)["pause_reached"])
    job = manager.snapshot(job_id)
    card = {run.name: run for run in list_runs(tmp_path / "runs", include_bundled=False)}["timed-epochs"].card
    epoch = job["epochs"][card["epochs"] - 1]  # the checkpoint on disk is that of the last epoch it finished
    assert epoch["elapsed_seconds"] == pytest.approx(card["wall_seconds"], abs=0.051)
    assert 0 < job["epochs"][-1]["elapsed_seconds"] <= job["elapsed_seconds"]
    manager.stop(job_id, "alice")


def test_pause_holds_resume_continues_and_stop_ends_at_the_next_step(manager):
    job_id = manager.submit(CONFIG, "pausing", owner="alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= 3)
    manager.pause(job_id, "alice")
    assert manager.snapshot(job_id)["status"] == "paused"
    assert wait_for(lambda: manager.snapshot(job_id)["pause_reached"])  # the loop is blocked between steps
    paused_at = manager.snapshot(job_id)["step"]
    assert manager.snapshot(job_id)["step"] == paused_at and manager.snapshot(job_id)["pause_reached"]
    manager.resume(job_id, "alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= paused_at + 3)
    # A stop while held ends the run without one more step.
    manager.pause(job_id, "alice")
    assert wait_for(lambda: manager.snapshot(job_id)["pause_reached"])
    held_at = manager.snapshot(job_id)["step"]
    manager.stop(job_id, "alice")
    job = manager.wait(job_id, timeout=60)
    assert job["status"] == "stopped" and job["step"] == held_at < 3 * 32 and not job["pause_reached"]


def test_stop_while_running_ends_mid_run(manager):
    job_id = manager.submit(CONFIG, "running", owner="alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= 3)
    manager.stop(job_id, "alice")
    job = manager.wait(job_id, timeout=60)
    assert job["status"] == "stopped" and job["error"] == "" and job["step"] < 3 * 32


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


def test_only_the_owner_can_resume(manager):
    job_id = manager.submit(CONFIG, "held", owner="alice")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= 2)
    manager.pause(job_id, "alice")
    assert wait_for(lambda: manager.snapshot(job_id)["pause_reached"])
    step = manager.snapshot(job_id)["step"]
    with pytest.raises(PermissionError, match="Only the session that started"):
        manager.resume(job_id, "mallory")
    job = manager.snapshot(job_id)
    assert job["status"] == "paused" and job["pause_reached"] and job["step"] == step
    manager.resume(job_id, "alice")  # the owner still can
    assert wait_for(lambda: manager.snapshot(job_id)["step"] > step)


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


def test_two_trainings_at_once_give_the_same_metrics_as_each_alone(tmp_path):
    # Each run draws its weights, order and dropout masks from its own generators, never the global RNG.
    data = synthetic_mnist(n_train=256)  # 16 steps per epoch at batch 16
    config = CONFIG.replace(epochs=1, eval_every=4)

    def metrics(job):
        return [step["loss"] for step in job["steps"]], [e["accuracy"] for e in job["evals"]]

    alone = JobManager(lambda dataset: data, runs_dir=tmp_path / "alone", max_running=1, device=CPU)
    first = alone.submit(config, "seed0", owner="alice")
    expected_first = alone.wait(first, timeout=120)
    second = alone.submit(config.replace(seed=1), "seed1", owner="bob")
    expected_second = alone.wait(second, timeout=120)
    assert len(expected_first["steps"]) == 16 and len(expected_first["evals"]) == 5

    together = JobManager(lambda dataset: data, runs_dir=tmp_path / "together", max_running=2, device=CPU)
    ids = [together.submit(config, "seed0", owner="alice"), together.submit(config.replace(seed=1), "seed1", owner="bob")]
    assert together.running_threads() == 2
    first_job, second_job = (together.wait(job_id, timeout=120) for job_id in ids)
    assert first_job["status"] == second_job["status"] == "finished"
    # They did train at the same time: each started before the other ended.
    assert first_job["started"] < second_job["ended"] and second_job["started"] < first_job["ended"]
    assert metrics(first_job) == metrics(expected_first)
    assert metrics(second_job) == metrics(expected_second)
    assert metrics(expected_first) != metrics(expected_second)  # the seeds differ, so must the runs


class Meltdown(BaseException):
    """Not an Exception: what `except Exception` lets through (like SystemExit or KeyboardInterrupt)."""


@pytest.mark.parametrize("error, kind", [(RuntimeError("disk on fire"), "RuntimeError"),
                                         (Meltdown("the worker was told to exit"), "Meltdown")])
def test_an_exception_is_a_failed_run_and_frees_the_slot(tmp_path, error, kind):
    """Any exception in a worker, a BaseException too, ends the run as failed and frees its slot."""
    calls = []

    def failing_data(dataset):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return synthetic_mnist()

    manager = JobManager(failing_data, runs_dir=tmp_path / "runs", device=CPU, train_set_size=512)
    bad = manager.submit(CONFIG, "bad", owner="alice")
    good = manager.submit(CONFIG.replace(epochs=1), "good", owner="bob")
    job = manager.wait(bad)
    assert job["status"] == "failed" and job["ended"] is not None
    assert job["error"].startswith(f"The training failed unexpectedly ({kind})")
    assert str(error) not in job["error"]  # the exception's own text stays in the server's log
    assert manager.wait(good, timeout=60)["status"] == "finished"  # the slot was freed
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


def test_one_browser_cannot_fill_the_queue_from_many_tabs(tmp_path):
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_runs_per_browser=2)
    try:
        manager.submit(CONFIG, "tab-1", owner="tab-1", browser="laptop")
        manager.submit(CONFIG, "tab-2", owner="tab-2", browser="laptop")
        with pytest.raises(ValueError, match="This browser already has 2 runs queued or training"):
            manager.submit(CONFIG, "tab-3", owner="tab-3", browser="laptop")  # a new tab of the same browser
        manager.submit(CONFIG, "theirs", owner="bob", browser="desktop")  # other browsers still can
        # Without a browser key, the session is the browser.
        manager.submit(CONFIG, "solo-1", owner="carol")
        manager.submit(CONFIG, "solo-2", owner="carol")
        with pytest.raises(ValueError, match="already has 2 runs"):
            manager.submit(CONFIG, "solo-3", owner="carol")
    finally:
        manager.stop_all()


def test_one_computer_cannot_fill_the_queue_with_forged_browser_keys(tmp_path):
    """A forged client mints a new cookie (a new browser key) per session; its network address stays the same."""
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_runs_per_browser=2,
                         max_runs_per_address=3, max_queued=20)
    try:
        for i in range(3):
            manager.submit(CONFIG, f"forged-{i}", owner=f"s{i}", browser=f"minted-{i}", address="10.0.0.66")
        with pytest.raises(ValueError, match="This computer already has 3 runs queued or training"):
            manager.submit(CONFIG, "forged-3", owner="s3", browser="minted-3", address="10.0.0.66")
        manager.submit(CONFIG, "honest", owner="bob", browser="bobs", address="10.0.0.7")  # a classmate still can
        # The server's own loopback (address None: the teacher's laptop) is not counted per computer.
        for i in range(4):
            manager.submit(CONFIG, f"teacher-{i}", owner=f"t{i}", browser=f"t{i}", address=None)
        assert len(manager.jobs()) == 8
    finally:
        manager.stop_all()


def test_the_queue_cap_refuses_with_a_sentence_and_frees_when_a_run_ends(tmp_path):
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_running=1, max_queued=2)
    try:
        first = manager.submit(CONFIG.replace(epochs=1), "first", owner="alice")
        manager.submit(CONFIG, "second", owner="bob")
        manager.submit(CONFIG, "third", owner="carol")
        with pytest.raises(ValueError, match=r"The server's training queue is full \(2 runs waiting\): wait"):
            manager.submit(CONFIG, "newcomer", owner="dave")
        assert "newcomer" not in [job["name"] for job in manager.jobs()]
        assert manager.wait(first, timeout=120)["status"] == "finished"
        newcomer = manager.submit(CONFIG, "newcomer", owner="dave")  # a place freed when the first ended
        assert manager.snapshot(newcomer)["queue_position"] == 2
    finally:
        manager.stop_all()


def test_a_run_over_the_step_cap_is_refused_with_how_to_fit(tmp_path):
    data = synthetic_mnist()  # 512 images: 32 steps per epoch at batch 16
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_steps_per_run=40)
    try:
        with pytest.raises(ValueError, match=r"96 training steps, more than this server's limit of 40") as refused:
            manager.submit(CONFIG, "too-long", owner="alice")  # 3 epochs x 32 steps
        assert "fewer epochs or a larger batch" in str(refused.value)
        assert "at batch 16, at most 1 epoch fits" in str(refused.value)
        with pytest.raises(ValueError, match="not even one epoch fits"):
            manager.submit(CONFIG.replace(batch_size=8, epochs=1), "tiny-batch", owner="alice")  # 64 steps
        fits = manager.submit(CONFIG.replace(batch_size=32, epochs=2), "fits", owner="alice")  # 16 x 2 = 32 steps
        assert manager.wait(fits, timeout=120)["status"] == "finished"
    finally:
        manager.stop_all()


def test_training_itself_stops_at_the_step_cap(tmp_path):
    data = synthetic_mnist()  # 512 images, but the manager is told 256: its estimate is too low
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_steps_per_run=20,
                         train_set_size=256)
    job_id = manager.submit(CONFIG.replace(epochs=1), "underestimated", owner="alice")  # 16 by its count, 32 real
    job = manager.wait(job_id, timeout=120)
    assert job["status"] == "stopped" and job["step"] == 20
    assert job["error"] == "Stopped at this server's limit of 20 steps per run."


def test_queued_runs_of_an_ended_session_are_dropped(tmp_path):
    data = synthetic_mnist()
    alive = {"alice", "bob", "carol"}
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, max_running=1,
                         session_alive=lambda owner: owner in alive)
    try:
        manager.submit(CONFIG, "running", owner="alice")
        bobs = manager.submit(CONFIG, "bobs", owner="bob")
        carols = manager.submit(CONFIG, "carols", owner="carol")
        assert manager.snapshot(carols)["queue_position"] == 2
        alive.discard("bob")  # bob closed his tab
        views = {job["id"]: job for job in manager.jobs()}  # looking at the queue drops his run
        assert views[bobs]["status"] == "stopped" and views[bobs]["error"] == SESSION_ENDED
        assert views[carols]["status"] == "queued" and views[carols]["queue_position"] == 1
        assert manager.drop_queued_of("carol") == 1
        assert manager.snapshot(carols)["status"] == "stopped"
        assert manager.drop_queued_of("carol") == 0
        alive.discard("alice")  # a running run is not dropped: only queued ones
        assert manager.jobs()[-1]["status"] in ("running", "finished")
    finally:
        manager.stop_all()


def test_a_failing_session_check_keeps_the_run(tmp_path):
    def broken_check(owner):
        raise RuntimeError("runtime gone")

    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, session_alive=broken_check)
    try:
        manager.submit(CONFIG, "running", owner="alice")
        queued = manager.submit(CONFIG, "queued", owner="bob")
        assert manager.snapshot(queued)["status"] == "queued"
    finally:
        manager.stop_all()


def test_ended_jobs_beyond_the_cap_are_evicted_and_their_runs_stay_on_disk(tmp_path):
    data = synthetic_mnist(n_train=64, n_test=32)  # 4 steps per run
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU, keep_finished_jobs=2)
    names = ["oldest", "middle", "newest"]
    for name in names:
        assert manager.wait(manager.submit(CONFIG.replace(epochs=1), name, owner="alice"), timeout=60)["status"] == "finished"
    assert [job["name"] for job in manager.jobs()] == ["newest", "middle"]
    assert sorted(run.name for run in list_runs(tmp_path / "runs", include_bundled=False)) == sorted(names)
    assert manager.running_threads() == 0


def step_event(step: int) -> StepEvent:
    return StepEvent(step=step, epoch=1, steps_per_epoch=375_000, steps_total=375_000, loss=1.0 / step,
                     batch_accuracy=0.5, images_per_second=100.0, learning_rate=0.001, elapsed_seconds=step / 100)


def test_the_live_step_history_stays_bounded_and_even(tmp_path):
    manager = JobManager(lambda dataset: synthetic_mnist(), runs_dir=tmp_path / "runs", device=CPU)
    job = Job(id=1, name="long", owner="alice", config=CONFIG, folder=tmp_path / "runs" / "long")
    listener = JobListener(manager, job)
    total = 375_000  # ARTICLE x 50 epochs x batch 8: the run the issue found
    for step in range(1, total + 1):
        listener.on_step(step_event(step))
        if step in (1_999, 2_000, 2_001, 123_457):
            points = [point["step"] for point in job.view()["steps"]]
            assert len(points) <= 2_000 and points[0] == 1 and points[-1] == step
    points = [point["step"] for point in job.view()["steps"]]
    assert 1_000 <= len(points) <= 2_000  # ~2,000 points, never more
    assert points[0] == 1 and points[-1] == total and job.view()["step"] == total  # the latest is always kept
    gaps = {b - a for a, b in zip(points[:-2], points[1:-1])}
    assert len(gaps) == 1 and gaps.pop() >= total // 2_000  # evenly spaced, over the whole run
    assert job.view()["steps"][-1]["loss"] == pytest.approx(1.0 / total)


def test_a_thinned_history_keeps_everything_until_full():
    history = ThinnedHistory(limit=8)
    for step in range(1, 8):
        history.append({"step": step})
    assert [p["step"] for p in history.points()] == [1, 2, 3, 4, 5, 6, 7]
    history.append({"step": 8})  # full: every other point goes, the latest stays
    assert [p["step"] for p in history.points()] == [1, 3, 5, 7, 8]
    history.append({"step": 9})
    assert [p["step"] for p in history.points()] == [1, 3, 5, 7, 9]


def test_a_forged_config_is_refused_before_it_is_queued(manager):
    """The Train form's limits live in the browser; the manager checks the config itself."""
    for forged in (CONFIG.replace(learning_rate=float("nan")), CONFIG.replace(batch_size=0),
                   CONFIG.replace(p_keep_conv=0.0), CONFIG.replace(epochs=-3)):
        with pytest.raises(ValueError, match="^This run cannot start: "):
            manager.submit(forged, "forged", owner="mallory")
    assert manager.jobs() == []


# ---------------------------------------------------------------- the teacher (issue 11)

def test_a_students_run_must_fit_the_class_settings_and_the_teachers_need_not(manager):
    from cnn.classroom import ClassSettings, write_class_settings
    from cnn.config import FAST

    with pytest.raises(ValueError, match="students may start FAST or the softmax baseline, at most 2 epochs"):
        manager.submit(ARTICLE, "student-article", owner="student", teacher=False)  # the default ARTICLE x 10
    with pytest.raises(ValueError, match="at most 2 epochs"):  # a forged epochs=10 on FAST
        manager.submit(FAST.replace(epochs=10), "student-fast10", owner="student", teacher=False)
    with pytest.raises(ValueError, match="students may start"):  # "fast" in name only: ARTICLE's optimizer
        manager.submit(FAST.replace(optimizer="rmsprop_tf", learning_rate=0.001), "forged", owner="student",
                       teacher=False)
    assert manager.jobs() == []  # nothing was queued
    allowed = manager.submit(FAST.replace(epochs=2, batch_size=128, seed=5), "student-fast", owner="student",
                             teacher=False)
    teachers = manager.submit(CONFIG, "teacher-article", owner="teacher", teacher=True)
    assert {job["id"] for job in manager.jobs()} == {allowed, teachers}
    write_class_settings(manager.runs_dir, ClassSettings(student_training="none"))  # read at every submit
    with pytest.raises(ValueError, match="only the teacher starts trainings"):
        manager.submit(FAST.replace(epochs=1), "student-none", owner="student-2", teacher=False)


def test_the_teacher_stops_another_sessions_run_and_a_student_cannot(manager):
    job_id = manager.submit(CONFIG, "students", owner="student")
    assert wait_for(lambda: manager.snapshot(job_id)["step"] >= 2)
    with pytest.raises(PermissionError):
        manager.stop(job_id, "another-student", teacher=False)
    manager.pause(job_id, "teacher", teacher=True)
    assert manager.snapshot(job_id)["status"] == "paused"
    manager.resume(job_id, "teacher", teacher=True)
    manager.stop(job_id, "teacher", teacher=True)
    job = manager.wait(job_id, timeout=60)
    assert job["status"] == "stopped" and job["step"] < 3 * 32 and job["error"] == "Stopped by the teacher."


def test_clear_queue_drops_only_the_queued_runs(manager):
    running = manager.submit(CONFIG, "running", owner="alice")
    queued = [manager.submit(CONFIG.replace(epochs=1), f"waiting-{i}", owner=owner)
              for i, owner in enumerate(("bob", "carol"))]
    assert manager.clear_queue() == 2
    views = {job["id"]: job for job in manager.jobs()}
    assert views[running]["status"] == "running"
    for job_id in queued:
        assert views[job_id]["status"] == "stopped" and "teacher cleared the queue" in views[job_id]["error"]
    assert manager.clear_queue() == 0


STUDENTS = FAST.replace(batch_size=16)  # what a class server lets a student start (one FAST epoch of the tiny set)


def test_job_views_say_which_session_started_a_run_without_its_owner_id(manager):
    ids = [manager.submit(STUDENTS, f"run-{owner}", owner=owner, teacher=False) for owner in ("a" * 32, "b" * 32)]
    tags = [manager.snapshot(job_id)["started_by"] for job_id in ids]
    assert all(tag.startswith("session ") and len(tag) == len("session 3f2a") for tag in tags)
    assert tags[0] != tags[1] and "a" * 8 not in tags[0]
    assert tags[0] == manager.snapshot(ids[0])["started_by"]  # the same session keeps its tag
    assert [manager.snapshot(job_id)["session"] for job_id in ids] == tags


def test_a_run_the_teacher_started_says_so_and_keeps_its_sessions_tag(manager):
    student = manager.submit(STUDENTS, "students", owner="s" * 32, teacher=False)
    teacher = manager.submit(CONFIG.replace(epochs=1), "teachers", owner="t" * 32, teacher=True)
    views = {job_id: manager.snapshot(job_id) for job_id in (student, teacher)}
    # The walk's student read "Started by session 108a" under the teacher's run, with nothing saying whose it was.
    assert views[teacher]["started_by"] == "the teacher" and views[teacher]["by_teacher"] is True
    assert views[teacher]["session"].startswith("session ")  # the Teacher page still says "you" by it
    assert views[student]["started_by"] == views[student]["session"] and views[student]["by_teacher"] is False


def test_trainings_run_ten_nice_levels_below_the_server(tmp_path, monkeypatch):
    """On Linux each training thread, a queued one started from the last training's thread too, runs at the server's
    nice value + 10, so that a busy CPU serves the students' strokes first; the server's own threads keep theirs.
    Elsewhere a nice value is the whole process's, and nothing changes."""
    seen = []
    real_train = jobs.train

    def recording_train(*args, **kwargs):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # on Linux, the calling thread's own
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "train", recording_train)
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", max_running=1, device=CPU)
    first = manager.submit(CONFIG.replace(epochs=1), "first", owner="alice")
    second = manager.submit(CONFIG.replace(epochs=1), "second", owner="bob")  # queued, started by first's thread
    assert [manager.wait(job, timeout=120)["status"] for job in (first, second)] == ["finished", "finished"]
    server = os.getpriority(os.PRIO_PROCESS, os.getpid())
    lowered = min(19, server + 10) if sys.platform.startswith("linux") else server
    assert seen == [lowered, lowered]
    assert os.getpriority(os.PRIO_PROCESS, 0) == server  # this thread, which started both, is untouched
    manager.stop_all()



def test_the_time_left_guess_reads_the_recent_pace_not_the_slow_first_steps(tmp_path):
    manager = JobManager(lambda dataset: synthetic_mnist(), runs_dir=tmp_path / "runs", device=CPU)
    job = Job(id=1, name="pace", owner="alice", config=CONFIG, folder=tmp_path / "runs" / "pace")
    listener = JobListener(manager, job)
    assert job.view()["seconds_per_step"] is None  # nothing to go on yet
    elapsed = 1.5  # the first step starts oneDNN's kernels: 1.5 s, then 0.04 s a step
    for step in range(1, 15):
        listener.on_step(StepEvent(step=step, epoch=1, steps_per_epoch=469, steps_total=469, loss=1.0,
                                   batch_accuracy=0.5, images_per_second=100.0, learning_rate=0.001,
                                   elapsed_seconds=elapsed))
        elapsed += 0.04
    view = job.view()
    assert view["seconds_per_step"] == pytest.approx(0.04)  # steps 1-14: 13 gaps of 0.04 s
    assert view["steps_per_epoch"] == 469
    for step in range(15, 100):  # the window keeps the last PACE_STEPS steps only
        listener.on_step(StepEvent(step=step, epoch=1, steps_per_epoch=469, steps_total=469, loss=1.0,
                                   batch_accuracy=0.5, images_per_second=100.0, learning_rate=0.001,
                                   elapsed_seconds=elapsed + (step - 15) * 0.1))
    assert job.view()["seconds_per_step"] == pytest.approx(0.1)
    assert jobs.seconds_per_step([(3, 1.0)]) is None and jobs.seconds_per_step([(3, 1.0), (3, 2.0)]) is None
