"""cnn.train: the loop learns, is seeded, honours stop and pause, and fires its callbacks (SYNTHETIC data)."""
import os
import sys
import threading

import numpy as np
import pytest
import torch

from cnn.checkpoint import load_checkpoint
from cnn.cli import main
from cnn.config import ARTICLE, FAST, SOFTMAX
from cnn.runs import RunRecorder, list_runs, read_card, read_filter_snapshots, read_metrics, read_predictions
from cnn.model import build_model
from cnn.train import Callback, Stopwatch, TrainControl, evaluate, train, warm_up
from tests.conftest import ROOT, wait_for

SMALL = ARTICLE.replace(batch_size=32, epochs=2, eval_every=5, eval_subset=64)




def predict_directly(model, images):
    """Independent of evaluate(): the model in eval mode on (N, 28, 28) uint8 -> (N,) predicted digits."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = model(images.float().div(255).unsqueeze(1).to(next(model.parameters()).device)).argmax(1).cpu()
    model.train(was_training)
    return predicted


def agree(first: torch.Tensor, second: torch.Tensor, device: torch.device) -> bool:
    """The same predictions: exactly on the CPU; on a GPU, where TF32 convolutions and cuDNN's choice of algorithm
    per batch size change the last bits, all but at most one image (a near tie)."""
    differ = int((first != second).sum())
    return first.shape == second.shape and differ <= (0 if device.type == "cpu" else 1)


class Recorder(Callback):
    def __init__(self):
        self.steps, self.evals, self.epochs = [], [], []

    def on_step(self, event):
        self.steps.append(event)

    def on_eval(self, event, model):
        self.evals.append(event)

    def on_epoch_end(self, event, model):
        self.epochs.append(event)


def test_loss_falls_on_a_tiny_batch(tiny_data, train_device):
    config = FAST.replace(batch_size=32, epochs=3, eval_every=0)
    recorder = Recorder()
    result = train(config, tiny_data, callbacks=[recorder], device=train_device)
    losses = [e.loss for e in recorder.steps]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert result.test_accuracy > 0.9  # the synthetic classes are easy


def test_article_preset_learns_the_synthetic_task(tiny_data, train_device):
    # TF RMSProp's mean square starts at 1, so the first ~150 steps barely move: give it 320.
    result = train(ARTICLE.replace(batch_size=16, epochs=10, eval_every=0), tiny_data, device=train_device)
    assert result.test_accuracy > 0.8


def test_events_and_counts(tiny_data, train_device):
    recorder = Recorder()
    result = train(SMALL, tiny_data, callbacks=[recorder], device=train_device)
    assert result.steps == 2 * 16 and result.epochs_completed == 2 and not result.stopped
    assert result.device == str(train_device) and next(result.model.parameters()).device.type == train_device.type
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


def test_stop_flag_is_honoured_within_one_step(tiny_data, train_device):
    control = TrainControl()

    class StopAtThree(Callback):
        def on_step(self, event):
            if event.step == 3:
                control.stop()

    result = train(SMALL, tiny_data, callbacks=[StopAtThree()], control=control, device=train_device)
    assert result.steps == 3 and result.stopped and result.epochs_completed == 0


def test_max_steps(tiny_data, train_device):
    result = train(SMALL, tiny_data, max_steps=20, device=train_device)
    assert result.steps == 20 and result.epochs_completed == 1 and result.stopped


def test_pause_blocks_and_resume_continues(tiny_data):
    control = TrainControl()
    paused_at = []

    class PauseAtTwo(Callback):
        def on_step(self, event):
            if event.step == 2:
                control.pause()
                paused_at.append(event.step)

    recorder = Recorder()
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        result=train(SMALL.replace(epochs=1), tiny_data, callbacks=[PauseAtTwo(), recorder], control=control,
                     device=torch.device("cpu"))))
    worker.start()
    assert wait_for(lambda: control.waiting)  # the loop is held between steps...
    assert worker.is_alive() and control.paused and len(recorder.steps) == 2  # ...after step 2, not training
    control.resume()
    worker.join(timeout=120)
    assert not worker.is_alive() and outcome["result"].steps == 16 and not control.waiting


class FakeClock:
    """A clock that moves only when told: time passes without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stopwatch_leaves_out_the_time_spent_paused():
    clock = FakeClock()
    watch = Stopwatch(clock)
    clock.now += 10
    watch.pause()
    clock.now += 300  # a long explanation in class, the run paused
    assert watch.elapsed() == 10
    watch.pause()  # a second pause while paused changes nothing
    watch.resume()
    clock.now += 5
    assert watch.elapsed() == 15
    watch.resume()  # a resume while running changes nothing
    assert watch.elapsed() == 15


def test_a_pause_adds_nothing_to_the_training_time(tiny_data):
    """5 minutes paused between step 2 and step 3 (on a fake clock): the steps' elapsed time does not jump."""
    clock, control = FakeClock(), TrainControl()

    class PauseAtTwo(Callback):
        def on_step(self, event):
            clock.now += 1.0  # each step takes one fake second
            if event.step == 2:
                control.pause()

    recorder = Recorder()
    worker = threading.Thread(target=train, args=(SMALL.replace(epochs=1), tiny_data),
                              kwargs=dict(callbacks=[PauseAtTwo(), recorder], control=control,
                                          device=torch.device("cpu"), clock=clock))
    worker.start()
    assert wait_for(lambda: control.waiting)
    clock.now += 300.0
    control.resume()
    worker.join(timeout=120)
    elapsed = [e.elapsed_seconds for e in recorder.steps]
    # step k's event is made before its own fake second passes: k - 1 seconds, the pause not counted
    assert elapsed[:4] == [0.0, 1.0, 2.0, 3.0] and elapsed[-1] == len(elapsed) - 1


def test_softmax_baseline_trains(tiny_data, train_device):
    result = train(SOFTMAX.replace(epochs=3, eval_every=0, batch_size=32), tiny_data, device=train_device)
    assert result.test_accuracy > 0.9


def test_evaluate_per_class_and_keeps_mode(tiny_data, train_device):
    result = train(SMALL.replace(epochs=1), tiny_data, device=train_device)
    model = result.model.train()
    out = evaluate(model, tiny_data.test_images, tiny_data.test_labels)
    assert model.training
    assert out["n"] == 256 and len(out["per_class_accuracy"]) == 10
    # The expected values come from a forward pass of our own, not from evaluate()'s predictions.
    predicted = predict_directly(model, tiny_data.test_images)
    labels = tiny_data.test_labels
    assert agree(out["predictions"], predicted, train_device)
    predicted = out["predictions"]  # its own, on a GPU too: the sums below are checked against them
    assert out["accuracy"] == pytest.approx((predicted == labels).float().mean().item())
    for digit in range(10):
        mine = labels == digit
        assert out["per_class_accuracy"][digit] == pytest.approx((predicted[mine] == digit).float().mean().item())
    # In batches of 100 (the last one short) it is the same.
    assert agree(evaluate(model, tiny_data.test_images, labels, batch_size=100)["predictions"], predicted, train_device)


def test_training_leaves_the_global_rng_alone(tiny_data):
    # Its randomness (weights, order, dropout) is its own: the global RNG is neither read nor moved.
    config = SMALL.replace(epochs=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = Recorder()
    train(config, tiny_data, callbacks=[first], device=torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another global state: the same run
    second = Recorder()
    train(config, tiny_data, callbacks=[second], device=torch.device("cpu"))
    assert [e.loss for e in first.steps] == [e.loss for e in second.steps]
    assert [e.accuracy for e in first.evals] == [e.accuracy for e in second.evals]


def test_each_epoch_event_carries_the_test_predictions(tiny_data, train_device):
    class Predictions(Callback):
        def __init__(self):
            self.given, self.direct = [], []

        def on_epoch_end(self, event, model):
            self.given.append(event.predictions)
            self.direct.append(predict_directly(model, tiny_data.test_images))

    seen = Predictions()
    result = train(SMALL, tiny_data, callbacks=[seen], device=train_device)
    assert len(seen.given) == 2
    for given, direct in zip(seen.given, seen.direct):
        assert given.dtype == torch.int64 and given.shape == (256,) and agree(given, direct, train_device)
    assert result.test_accuracy == pytest.approx((seen.given[-1] == tiny_data.test_labels).float().mean().item())


def test_an_epochs_checkpoint_card_records_the_trainings_time_not_the_time_since_the_recorder_started(tmp_path):
    """A running run's card said the seconds since its recorder started (setup and pauses counted), its finished card
    and the Run history the training's own time: one run showed two times (a fresh clone's test_jobs saw 0.84 s
    against 0.9 s). An epoch's card now keeps the training's time at that epoch."""
    from cnn.train import EpochEvent

    recorder = RunRecorder(tmp_path / "r", SMALL)
    recorder.on_start(build_model(SMALL))
    recorder.on_epoch_end(EpochEvent(epoch=1, step=16, test_accuracy=0.5, per_class_accuracy=[0.5] * 10,
                                     elapsed_seconds=754.26), build_model(SMALL))
    assert read_card(tmp_path / "r" / "model.pt")["wall_seconds"] == 754.3  # a second has not passed here


def test_a_run_that_fails_before_its_result_keeps_the_trainings_time_on_its_card(tmp_path):
    """A run that fails mid-way has no TrainResult: its card's time used to be the seconds since the recorder started,
    pauses and setup counted. It is now the training's time at its last step, as the steps' events count it."""
    from cnn.train import StepEvent

    recorder = RunRecorder(tmp_path / "r", SMALL)
    recorder.on_start(build_model(SMALL))
    assert read_card(tmp_path / "r" / "model.pt")["wall_seconds"] == 0.0  # no step yet: no training time
    for step, elapsed in ((1, 0.5), (2, 301.04)):  # the second step came after a five-minute pause, not counted
        recorder.on_step(StepEvent(step=step, epoch=1, steps_per_epoch=16, steps_total=16, loss=2.3,
                                   batch_accuracy=0.1, images_per_second=100.0, learning_rate=0.001,
                                   elapsed_seconds=elapsed))
    card = recorder.finish(None, "failed", error="The disk is full.")
    assert card["wall_seconds"] == 301.0 and card["status"] == "failed"
    assert read_card(tmp_path / "r" / "model.pt")["wall_seconds"] == 301.0  # the card on disk says the same


def test_run_recorder_writes_a_usable_run(tiny_data, tmp_path, train_device):
    folder = tmp_path / "runs" / "demo"
    recorder = RunRecorder(folder, SMALL, data_source="synthetic")
    result = train(SMALL, tiny_data, callbacks=[recorder], device=train_device)
    card = recorder.finish(result, "finished")
    assert card["status"] == "finished" and card["epochs"] == 2 and card["steps"] == 32
    assert card["accuracy"] == pytest.approx(result.test_accuracy)
    assert sorted(p.name for p in folder.glob("*.pt")) == ["epoch-1.pt", "epoch-2.pt", "model.pt"]
    kinds = [row["kind"] for row in read_metrics(folder)]
    assert kinds.count("step") == 32 and kinds.count("epoch") == 2
    steps, filters = read_filter_snapshots(folder)
    assert filters.shape == (len(steps), 32, 3, 3) and len(steps) == 9  # step 0, then every 5 steps and each epoch end
    assert read_card(folder / "model.pt")["status"] == "finished"
    names = [run.name for run in list_runs(tmp_path / "runs", include_bundled=False)]
    assert names == ["demo"]
    # Wherever it trained, the checkpoint loads on the CPU (where the app's pages read it) and scores what it said.
    model, _ = load_checkpoint(folder / "model.pt")
    assert next(model.parameters()).device.type == "cpu"
    again = evaluate(model, tiny_data.test_images, tiny_data.test_labels)
    assert abs(again["accuracy"] - card["accuracy"]) <= 2 / len(tiny_data.test_labels)  # TF32 on a GPU: a tie or two
    assert (again["predictions"].numpy() == read_predictions(folder)).mean() >= 0.99


def test_a_run_keeps_its_random_start_as_step_0(tiny_data, tmp_path, train_device):
    """The filter replay starts from the random weights: filters.npz holds them at step 0, before any step."""
    folder = tmp_path / "runs" / "start"
    seen_at_first_step = []

    class FirstStep(Callback):
        def on_step(self, event):
            if event.step == 1:
                seen_at_first_step.append(read_filter_snapshots(folder))

    train(SMALL.replace(epochs=1), tiny_data, callbacks=[RunRecorder(folder, SMALL), FirstStep()],
          device=train_device)
    steps, filters = seen_at_first_step[0]  # on disk before training went further
    assert list(steps) == [0]
    # The reference: the same seed's weights drawn by the model builder itself, no training involved.
    start = build_model(SMALL, generator=torch.Generator().manual_seed(SMALL.seed)).conv1.weight.detach()[:, 0]
    assert np.allclose(filters[0], start.numpy())
    steps, filters = read_filter_snapshots(folder)
    assert steps[0] == 0 and list(steps[1:]) == sorted(steps[1:]) and steps[1] > 0
    assert not np.allclose(filters[-1], filters[0])  # training moved them


def test_run_recorder_keeps_each_epochs_test_predictions(tiny_data, tmp_path):
    class Predictions(Callback):
        def __init__(self):
            self.by_epoch = {}

        def on_epoch_end(self, event, model):
            self.by_epoch[event.epoch] = predict_directly(model, tiny_data.test_images).numpy()

    folder = tmp_path / "runs" / "demo"
    seen = Predictions()
    result = train(SMALL, tiny_data, callbacks=[RunRecorder(folder, SMALL), seen], device=torch.device("cpu"))
    for epoch in (1, 2):
        on_disk = np.load(folder / f"predictions-epoch-{epoch}.npy", allow_pickle=False)
        assert on_disk.dtype == np.int64 and np.array_equal(on_disk, seen.by_epoch[epoch])
        assert np.array_equal(read_predictions(folder, epoch), seen.by_epoch[epoch])
    assert np.array_equal(read_predictions(folder), seen.by_epoch[2])  # model.pt is the last epoch
    assert np.array_equal(read_predictions(folder), predict_directly(result.model, tiny_data.test_images).numpy())
    assert read_predictions(folder, 3) is None and read_predictions(tmp_path / "nowhere") is None
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("name, content", [
    ("pickled objects", np.array([1, "two"], dtype=object)),
    ("floats", np.array([0.5, 1.0])),
    ("a digit out of range", np.array([3, 10])),
    ("a negative digit", np.array([-1, 2])),
    ("a matrix", np.zeros((2, 2), dtype=np.int64)),
])
def test_read_predictions_refuses_what_is_not_a_list_of_digits(tmp_path, name, content):
    np.save(tmp_path / "predictions.npy", content, allow_pickle=True)
    assert read_predictions(tmp_path) is None, name


def test_read_predictions_refuses_a_torn_file_and_odd_epochs(tmp_path):
    np.save(tmp_path / "predictions-epoch-1.npy", np.arange(10))
    assert np.array_equal(read_predictions(tmp_path, 1), np.arange(10))
    (tmp_path / "predictions.npy").write_bytes((tmp_path / "predictions-epoch-1.npy").read_bytes()[:-7])
    assert read_predictions(tmp_path) is None
    for epoch in (0, -1, "1", 1.0, True):
        assert read_predictions(tmp_path, epoch) is None


def test_the_cli_sets_the_threads_from_the_environment(monkeypatch, capsys):
    threads = torch.get_num_threads()
    wanted = 1 if threads != 1 else 2
    monkeypatch.setenv("CNN_TRAIN_THREADS", str(wanted))
    try:
        assert main(["info", "--json"]) == 0
        assert torch.get_num_threads() == wanted
        monkeypatch.setenv("CNN_TRAIN_THREADS", "lots")
        assert main(["info"]) == 2
        assert "CNN_TRAIN_THREADS must be a whole number of at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def test_the_cli_takes_every_core_unless_the_environment_says_otherwise(monkeypatch):
    """The app keeps a core for the students' strokes; a command-line training serves no one and takes them all."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("CNN_TRAIN_THREADS", raising=False)
    try:
        torch.set_num_threads(1)
        assert main(["info", "--json"]) == 0
        assert torch.get_num_threads() == os.cpu_count()
        monkeypatch.setenv("CNN_TRAIN_THREADS", " ")  # blank is unset, as for every CNN_* variable
        torch.set_num_threads(1)
        assert main(["info", "--json"]) == 0
        assert torch.get_num_threads() == os.cpu_count()
    finally:
        torch.set_num_threads(threads)


def test_recorder_does_not_change_the_training(tiny_data, tmp_path):
    plain = Recorder()
    train(SMALL.replace(epochs=1), tiny_data, callbacks=[plain], device=torch.device("cpu"))
    recorded = Recorder()
    recorder = RunRecorder(tmp_path / "r", SMALL.replace(epochs=1))
    train(SMALL.replace(epochs=1), tiny_data, callbacks=[recorder, recorded], device=torch.device("cpu"))
    assert [e.loss for e in plain.steps] == [e.loss for e in recorded.steps]


def test_the_warm_up_before_the_clock_leaves_the_model_and_the_random_numbers_alone(tiny_data, train_device):
    """train() runs warm_up on a GPU before its clock starts; it must not be a hidden training step."""
    model = build_model(FAST, generator=torch.Generator().manual_seed(0)).to(train_device).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    warm_up(model, tiny_data, FAST.replace(batch_size=32), train_device)
    assert model.training and all(parameter.grad is None for parameter in model.parameters())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


# glibc set to hand freed blocks back to the system: its static default thresholds (128 KB), which do not move
HANDING_BACK = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072"
PAGE_FAULTS_PER_STEP = """
import json, resource, sys
import cnn.train
from cnn.config import ARTICLE
from tests.conftest import synthetic_mnist
if sys.argv[1] == "handing-back":
    cnn.train._freed_memory_kept = False  # as if it had been asked for already: GLIBC_TUNABLES's settings stay
data = synthetic_mnist(n_train=128 * 50, n_test=128)  # SYNTHETIC, at ARTICLE's batch of 128: the same map sizes
config = ARTICLE.replace(epochs=1, eval_every=0)
cnn.train.train(config, data, max_steps=10)  # the first steps fault in what later steps reuse
counts = []
class Count(cnn.train.Callback):
    def on_start(self, model):
        self.last = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def on_step(self, event):
        now = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        counts.append(now - self.last)
        self.last = now
cnn.train.train(config, data, max_steps=40, callbacks=[Count()])
print(json.dumps({"faults": counts, "kept": cnn.train.keep_freed_memory()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (mallopt): Linux only")
def test_training_reuses_freed_memory_instead_of_faulting_in_fresh_pages_every_step():
    """cnn.train.keep_freed_memory, which train() calls: each ARTICLE step frees and allocates the same 12.8 MB maps.
    An allocator that hands freed blocks back to the system maps them afresh and faults them in page by page: a
    median of thousands of minor page faults a step (~26,000 here); kept for reuse, a median of 0 (a rare step still
    takes a few hundred: Python's own memory, which mallopt does not govern). Each is a fresh process's 40 steps
    after 10. Both processes start with glibc set to hand back (its static defaults, 128 KB thresholds, through
    GLIBC_TUNABLES) and with no preloaded allocator: glibc's own defaults move their thresholds with the order of
    earlier frees (~600-9,600 faults a step here, a median of 1 in one CI run), so they cannot show the cost."""
    import json
    import statistics
    import subprocess

    def faults_per_step(mode: str) -> tuple[float, bool]:
        env = {name: value for name, value in os.environ.items()
               if name not in ("LD_PRELOAD", "GLIBC_TUNABLES") and not name.startswith("MALLOC_")}
        env.update(CUDA_VISIBLE_DEVICES="", GLIBC_TUNABLES=HANDING_BACK)
        out = subprocess.run([sys.executable, "-c", PAGE_FAULTS_PER_STEP, mode], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout)
        assert len(result["faults"]) == 40
        return statistics.median(result["faults"]), result["kept"]

    kept_faults, kept = faults_per_step("kept")
    handed_back_faults, handed_back_kept = faults_per_step("handing-back")
    assert kept and not handed_back_kept
    assert handed_back_faults >= 1000, handed_back_faults  # the cost being removed: fresh pages for the maps
    assert kept_faults <= 10, (kept_faults, handed_back_faults)
