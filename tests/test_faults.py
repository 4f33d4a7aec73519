"""Faults: a server killed mid-training, failing checkpoint saves, corrupt runs/ entries (SYNTHETIC data)."""
import errno
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cnn.checkpoint import CheckpointError, load_checkpoint
from cnn.config import ARTICLE
from cnn.runs import RunRecorder, list_runs, read_metrics
from cnn.train import Callback, train
from cnn.views import history_rows
from tests.conftest import ROOT, synthetic_mnist

CONFIG = ARTICLE.replace(batch_size=16, epochs=50, eval_every=8, eval_subset=64)

SERVER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    from cnn.config import ARTICLE
    from cnn.jobs import JobManager
    from tests.conftest import synthetic_mnist
    data = synthetic_mnist()
    manager = JobManager(lambda: data, runs_dir={runs!r}, device=torch.device("cpu"))
    manager.submit(ARTICLE.replace(batch_size=16, epochs=50, eval_every=8, eval_subset=64), "killed", owner="teacher")
    time.sleep(600)
""")


def test_server_killed_mid_training_comes_back_clean(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), runs=str(runs))], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not (runs / "killed" / "epoch-2.pt").exists():  # let it finish two epochs, then kill it mid-third
            assert time.time() < deadline and process.poll() is None, "the training never reached epoch 2"
            time.sleep(0.2)
        time.sleep(0.3)
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


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   PermissionError(errno.EACCES, "Permission denied")])
def test_failed_save_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, error):
    folder = tmp_path / "run"
    recorder = RunRecorder(folder, CONFIG.replace(epochs=2), data_source="synthetic")
    # FailingSaves runs after the recorder, so epoch 1 is saved and epoch 2's save fails.
    train(CONFIG.replace(epochs=2), synthetic_mnist(), callbacks=[recorder, FailingSaves(monkeypatch, error)],
          device=torch.device("cpu"))
    assert recorder.save_errors and "previous checkpoint is unchanged" in recorder.save_errors[0]
    assert error.strerror in recorder.save_errors[0]
    monkeypatch.undo()
    model, card = load_checkpoint(folder / "model.pt")
    assert card["epochs"] == 1  # epoch 1's checkpoint survived
    assert json.loads((folder / "model.json").read_text())["epochs"] == 1  # the card beside it too


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


def test_train_page_survives_a_corrupt_run(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    (runs / "broken").mkdir(parents=True)
    (runs / "broken" / "model.json").write_text("[1, 2")
    (runs / "broken" / "metrics.jsonl").write_text('{"kind": "step", "step": 1, "loss": 2.3, "batch_accuracy": 0.1}\n{"kind": "st')
    monkeypatch.setenv("CNN_RUNS_DIR", str(runs))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.switch_page("pages/train.py").run()
    assert not app.exception
    table = app.dataframe[0].value
    assert "unreadable" in list(table["status"])
    app.multiselect(key="overlay").set_value(["broken"]).run()
    assert not app.exception
    st.cache_resource.clear()
