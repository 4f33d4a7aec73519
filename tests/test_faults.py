"""Faults: a server killed mid-training, failing checkpoint saves, corrupt runs/ entries (SYNTHETIC data)."""
import errno
import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from cnn.checkpoint import CheckpointError, load_checkpoint, make_card, save_checkpoint
from cnn.config import ARTICLE, SOFTMAX
from cnn.model import SoftmaxRegression
from cnn.runs import RunRecorder, list_runs, read_metrics, unlisted_folders
from cnn.train import Callback, train
from cnn.views import history_rows
from tests.conftest import ROOT, synthetic_mnist, wait_for

CONFIG = ARTICLE.replace(batch_size=16, epochs=50, eval_every=8, eval_subset=64)


SERVER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    from cnn.config import ARTICLE
    from cnn.jobs import JobManager
    from tests.conftest import synthetic_mnist
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir={runs!r}, device=torch.device("cpu"))
    manager.submit(ARTICLE.replace(batch_size=16, epochs=50, eval_every=8, eval_subset=64), "killed", owner="teacher")
    time.sleep(600)
""")


def test_server_killed_mid_training_comes_back_clean(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), runs=str(runs))], cwd=ROOT)
    try:
        # Let it finish two epochs, then kill it once the third has begun (its first evaluation is on disk).
        assert wait_for(lambda: process.poll() is not None or any(
            row.get("epoch", 0) >= 3 for row in read_metrics(runs / "killed")), timeout=180)
        assert process.poll() is None, "the training process ended before its third epoch"
        assert (runs / "killed" / "epoch-2.pt").exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The "restarted server" reads the same folder.
    run = {r.name: r for r in list_runs(runs, include_bundled=False)}["killed"]
    assert run.card is not None and run.card["status"] == "running" and run.card["epochs"] >= 2
    row = history_rows([run], jobs=[])[0]
    assert row["status"] == "interrupted" and row["has_model"]
    model, card = load_checkpoint(run.checkpoint)  # the last full-epoch checkpoint, intact
    assert card["epochs"] >= 2 and not model.training
    assert [p.name for p in (runs / "killed").iterdir() if p.name.endswith(".tmp")] == []
    assert any(row["kind"] == "epoch" for row in read_metrics(run.folder))


class FailingSaves(Callback):
    """From epoch 2 on, make every checkpoint write fail like a full disk."""

    def __init__(self, monkeypatch, error):
        self.monkeypatch, self.error = monkeypatch, error

    def on_epoch_end(self, event, model):
        if event.epoch == 1:
            def fail(obj, stream, *args, **kwargs):
                stream.write(b"partial")
                raise self.error
            self.monkeypatch.setattr(torch, "save", fail)


@pytest.mark.parametrize("error, words", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied"), "may not write in that folder"),
    # What torch.save really raises on a full disk: not an OSError.
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1280 vs 1174"), "could not be written"),
])
def test_failed_save_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, error, words):
    folder = tmp_path / "run"
    recorder = RunRecorder(folder, CONFIG.replace(epochs=2), data_source="synthetic")
    # FailingSaves runs after the recorder, so epoch 1 is saved and epoch 2's save fails.
    result = train(CONFIG.replace(epochs=2), synthetic_mnist(), callbacks=[recorder, FailingSaves(monkeypatch, error)],
                   device=torch.device("cpu"))
    assert result.epochs_completed == 2  # the run went on through epoch 2
    assert recorder.save_errors and "previous checkpoint is unchanged" in recorder.save_errors[0]
    assert words in recorder.save_errors[0] and str(tmp_path) not in recorder.save_errors[0]
    assert "enforce fail" not in recorder.save_errors[0]
    monkeypatch.undo()
    model, card = load_checkpoint(folder / "model.pt")
    assert card["epochs"] == 1  # epoch 1's checkpoint survived
    assert json.loads((folder / "model.json").read_text())["epochs"] == 1  # the card beside it too


def test_a_read_only_runs_folder_fails_the_run_with_our_sentence(tmp_path, monkeypatch):
    from pathlib import Path

    from cnn.jobs import JobManager

    runs = tmp_path / "runs"
    real_mkdir = Path.mkdir

    def read_only_under_runs(self, *args, **kwargs):  # as root, chmod would not stop the write: refuse it here
        if self == runs or runs in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_under_runs)
    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=runs, device=torch.device("cpu"))
    job_id = manager.submit(CONFIG.replace(epochs=1), "read-only", owner="teacher")
    assert wait_for(lambda: manager.snapshot(job_id)["status"] not in ("queued", "running"), timeout=120)
    job = manager.snapshot(job_id)
    assert job["status"] == "failed"
    assert job["error"] == "The training could not write its run folder: the disk is read-only."
    assert str(tmp_path) not in job["error"]


def test_corrupt_runs_entries_are_listed_as_unreadable(tmp_path):
    runs = tmp_path / "runs"
    (runs / "garbage-card").mkdir(parents=True)
    (runs / "garbage-card" / "model.json").write_text("{not json")
    (runs / "garbage-card" / "model.pt").write_bytes(b"\x00" * 64)
    (runs / "empty").mkdir()
    (runs / "stray-file.txt").write_text("not a run")
    listed = {run.name: run for run in list_runs(runs, include_bundled=False)}
    assert listed["garbage-card"].status == "unreadable" and listed["empty"].status == "unreadable"
    assert "stray-file.txt" not in listed
    rows = {row["run"]: row for row in history_rows(list(listed.values()), jobs=[])}
    assert rows["garbage-card"]["status"] == "unreadable" and not rows["garbage-card"]["has_model"]
    with pytest.raises(CheckpointError):
        load_checkpoint(runs / "garbage-card" / "model.pt")


def _softmax_run(runs, name, **card_changes):
    """runs/<name>/ with a small, valid softmax checkpoint whose card beside it gets card_changes."""
    model = SoftmaxRegression()
    path = save_checkpoint(runs / name / "model.pt", model, make_card(SOFTMAX, model, status="finished", run=name))
    card = json.loads((runs / name / "model.json").read_text())
    (runs / name / "model.json").write_text(json.dumps(dict(card, **card_changes)))
    return path


def _odd_runs(runs):
    """What a hand-copied or damaged runs/ folder can hold; each crashed the pages of every session once."""
    _softmax_run(runs, "good")
    _softmax_run(runs, "seconds-text", wall_seconds="12s")
    _softmax_run(runs, "string-config", config="fast")
    _softmax_run(runs, "odd-status", status="exploded")
    _softmax_run(runs, "nested-card")
    (runs / "nested-card" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    for name in ("my run", "café", "bundled", "nul", "abc."):
        _softmax_run(runs, name)
    (runs / "linked").symlink_to(runs / "good", target_is_directory=True)
    bf16 = _softmax_run(runs, "bf16")
    state = torch.load(bf16, weights_only=True)
    state["state_dict"] = {k: v.to(torch.bfloat16) for k, v in state["state_dict"].items()}
    torch.save(state, bf16)


def test_odd_runs_entries_are_listed_as_unreadable_or_left_out_with_a_sentence(tmp_path):
    from cnn.checkpoint import BUNDLED_FASHION_MODEL

    runs = tmp_path / "runs"
    _odd_runs(runs)
    listed = {run.name: run for run in list_runs(runs)}
    bundled = ["bundled"] + (["bundled-fashion"] if BUNDLED_FASHION_MODEL.is_file() else [])  # list_runs lists both
    assert sorted(listed) == sorted(["bf16", *bundled, "good", "nested-card", "odd-status", "seconds-text",
                                     "string-config"])
    assert listed["good"].status == "finished" and listed["good"].problem == ""
    for name, field in [("seconds-text", "wall_seconds"), ("string-config", "config"), ("odd-status", "status")]:
        assert listed[name].status == "unreadable" and listed[name].card is None
        assert listed[name].problem.startswith(f"Run {name!r} cannot be shown: its card (model.json) is not valid: "
                                               f"{field} should be")
        assert str(tmp_path) not in listed[name].problem
    assert "not readable JSON" in listed["nested-card"].problem
    assert listed["bundled"].folder != runs / "bundled"  # the one "bundled" row is the app's own model
    rows = history_rows(list(listed.values()), jobs=[])  # the Train page's table: no exception
    assert [row["run"] for row in rows].count("bundled") == 1
    assert {row["run"]: row["status"] for row in rows}["seconds-text"] == "unreadable"
    with pytest.raises(CheckpointError, match="bf16/model.pt|model.pt is not a checkpoint of this app: .*bfloat16"):
        load_checkpoint(listed["bf16"].checkpoint)
    notes = "\n".join(unlisted_folders(runs))
    for name in ("my run", "café", "bundled", "nul", "abc.", "linked"):
        assert repr(name) in notes
    assert "Windows keeps it" in notes and "bundled model" in notes and "is a link" in notes


def test_train_page_survives_a_corrupt_run(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    (runs / "broken").mkdir(parents=True)
    (runs / "broken" / "model.json").write_text("[1, 2")
    (runs / "broken" / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": 2.3, "batch_accuracy": 0.1}\n{"kind": "st')
    _odd_runs(runs)
    monkeypatch.setenv("CNN_RUNS_DIR", str(runs))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.switch_page("pages/train.py").run()
    assert not app.exception
    table = app.dataframe[0].value
    statuses = dict(zip(table["run"], table["status"]))
    assert statuses["broken"] == statuses["seconds-text"] == statuses["string-config"] == "unreadable"
    assert "my run" not in statuses and list(table["run"]).count("bundled") == 1
    app.multiselect(key="kept.overlay").set_value(["broken", "seconds-text"]).run()
    assert not app.exception
    st.cache_resource.clear()
