"""cnn.train: the loop learns, is seeded, honours stop and pause, and fires its callbacks (SYNTHETIC data)."""
import threading

import pytest
import torch

from cnn.config import ARTICLE, FAST, SOFTMAX
from cnn.runs import RunRecorder, list_runs, read_card, read_filter_snapshots, read_metrics
from cnn.train import Callback, TrainControl, evaluate, train

SMALL = ARTICLE.replace(batch_size=32, epochs=2, eval_every=5, eval_subset=64)


class Recorder(Callback):
    def __init__(self):
        self.steps, self.evals, self.epochs = [], [], []

    def on_step(self, event):
        self.steps.append(event)

    def on_eval(self, event, model):
        self.evals.append(event)

    def on_epoch_end(self, event, model):
        self.epochs.append(event)


def test_loss_falls_on_a_tiny_batch(tiny_data):
    config = FAST.replace(batch_size=32, epochs=3, eval_every=0)
    recorder = Recorder()
    result = train(config, tiny_data, callbacks=[recorder], device=torch.device("cpu"))
    losses = [e.loss for e in recorder.steps]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert result.test_accuracy > 0.9  # the synthetic classes are easy


def test_article_preset_learns_the_synthetic_task(tiny_data):
    # TF RMSProp's mean square starts at 1, so the first ~150 steps barely move: give it 320.
    result = train(ARTICLE.replace(batch_size=16, epochs=10, eval_every=0), tiny_data, device=torch.device("cpu"))
    assert result.test_accuracy > 0.8


def test_events_and_counts(tiny_data):
    recorder = Recorder()
    result = train(SMALL, tiny_data, callbacks=[recorder], device=torch.device("cpu"))
    assert result.steps == 2 * 16 and result.epochs_completed == 2 and not result.stopped
    assert [e.step for e in recorder.steps] == list(range(1, 33))
    assert [e.epoch for e in recorder.epochs] == [1, 2]
    quick = [e for e in recorder.evals if not e.full]
    full = [e for e in recorder.evals if e.full]
    assert [e.step for e in quick] == list(range(5, 33, 5)) and all(e.n == 64 for e in quick)
    assert [e.n for e in full] == [256, 256]
    assert all(e.images_per_second > 0 and 0 <= e.batch_accuracy <= 1 for e in recorder.steps)


def test_same_seed_same_metrics(tiny_data):
    runs = []
    for _ in range(2):
        recorder = Recorder()
        train(SMALL.replace(epochs=1), tiny_data, callbacks=[recorder], device=torch.device("cpu"))
        runs.append([(e.loss, e.batch_accuracy) for e in recorder.steps])
    assert runs[0] == runs[1]
    recorder = Recorder()
    train(SMALL.replace(epochs=1, seed=1), tiny_data, callbacks=[recorder], device=torch.device("cpu"))
    assert [(e.loss, e.batch_accuracy) for e in recorder.steps] != runs[0]


def test_stop_flag_is_honoured_within_one_step(tiny_data):
    control = TrainControl()

    class StopAtThree(Callback):
        def on_step(self, event):
            if event.step == 3:
                control.stop()

    result = train(SMALL, tiny_data, callbacks=[StopAtThree()], control=control, device=torch.device("cpu"))
    assert result.steps == 3 and result.stopped and result.epochs_completed == 0


def test_max_steps(tiny_data):
    result = train(SMALL, tiny_data, max_steps=20, device=torch.device("cpu"))
    assert result.steps == 20 and result.epochs_completed == 1 and result.stopped


def test_pause_blocks_and_resume_continues(tiny_data):
    control = TrainControl()
    paused_at = []

    class PauseAtTwo(Callback):
        def on_step(self, event):
            if event.step == 2:
                control.pause()
                paused_at.append(event.step)

    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        result=train(SMALL.replace(epochs=1), tiny_data, callbacks=[PauseAtTwo()], control=control,
                     device=torch.device("cpu"))))
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and control.paused  # waiting, not training
    control.resume()
    worker.join(timeout=60)
    assert not worker.is_alive() and outcome["result"].steps == 16


def test_softmax_baseline_trains(tiny_data):
    result = train(SOFTMAX.replace(epochs=3, eval_every=0, batch_size=32), tiny_data, device=torch.device("cpu"))
    assert result.test_accuracy > 0.9


def test_evaluate_per_class_and_keeps_mode(tiny_data):
    result = train(SMALL.replace(epochs=1), tiny_data, device=torch.device("cpu"))
    model = result.model.train()
    out = evaluate(model, tiny_data.test_images, tiny_data.test_labels)
    assert model.training
    assert out["n"] == 256 and len(out["per_class_accuracy"]) == 10
    manual = (out["predictions"] == tiny_data.test_labels).float().mean().item()
    assert out["accuracy"] == pytest.approx(manual)


def test_run_recorder_writes_a_usable_run(tiny_data, tmp_path):
    folder = tmp_path / "runs" / "demo"
    recorder = RunRecorder(folder, SMALL, data_source="synthetic")
    result = train(SMALL, tiny_data, callbacks=[recorder], device=torch.device("cpu"))
    card = recorder.finish(result, "finished")
    assert card["status"] == "finished" and card["epochs"] == 2 and card["steps"] == 32
    assert card["accuracy"] == pytest.approx(result.test_accuracy)
    assert sorted(p.name for p in folder.glob("*.pt")) == ["epoch-1.pt", "epoch-2.pt", "model.pt"]
    kinds = [row["kind"] for row in read_metrics(folder)]
    assert kinds.count("step") == 32 and kinds.count("epoch") == 2
    steps, filters = read_filter_snapshots(folder)
    assert filters.shape == (len(steps), 32, 3, 3) and len(steps) == 8
    assert read_card(folder / "model.pt")["status"] == "finished"
    names = [run.name for run in list_runs(tmp_path / "runs", include_bundled=False)]
    assert names == ["demo"]


def test_recorder_does_not_change_the_training(tiny_data, tmp_path):
    plain = Recorder()
    train(SMALL.replace(epochs=1), tiny_data, callbacks=[plain], device=torch.device("cpu"))
    recorded = Recorder()
    recorder = RunRecorder(tmp_path / "r", SMALL.replace(epochs=1))
    train(SMALL.replace(epochs=1), tiny_data, callbacks=[recorder, recorded], device=torch.device("cpu"))
    assert [e.loss for e in plain.steps] == [e.loss for e in recorded.steps]
