"""The one training loop, shared by the CLI and the app's background worker.

It knows nothing about who listens: it fires callbacks (on_start, on_step, on_gradients, on_eval, on_epoch_end) and
checks a cooperative TrainControl between steps, so a tqdm bar and a Streamlit chart can share it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, to_float
from .model import build_model, set_dropout_generator
from .optim import make_optimizer


@dataclass(frozen=True)
class StepEvent:
    step: int  # steps done so far (1 after the first)
    epoch: int  # 1-based epoch this step belongs to
    steps_per_epoch: int
    steps_total: int
    loss: float  # training cross-entropy of this batch (with dropout on)
    batch_accuracy: float  # fraction of this batch classified right (with dropout on)
    images_per_second: float  # over this step alone
    learning_rate: float
    elapsed_seconds: float  # training time so far; time spent paused is not counted


@dataclass(frozen=True)
class EvalEvent:
    step: int
    epoch: int
    accuracy: float  # on the fixed test subset, or the full 10,000 when full is True
    n: int  # images evaluated
    full: bool


@dataclass(frozen=True)
class EpochEvent:
    epoch: int
    step: int
    test_accuracy: float  # on the full 10,000-image test set
    per_class_accuracy: list[float]
    elapsed_seconds: float
    predictions: torch.Tensor | None = None  # (N,) int64 on the CPU: the digit predicted for each test image


class Callback:
    """Subclass and override what you need; every method is a no-op here."""

    gradients_every: int = 0  # on_gradients every this many steps; 0: never (reading gradients is cheap, not free)

    def on_start(self, model: nn.Module) -> None:
        """Once, before the first step: the model as it starts (the random weights; step 0)."""

    def on_step(self, event: StepEvent) -> None: ...

    def on_gradients(self, step: int, model: nn.Module) -> None:
        """After step number `step`, when it is a multiple of gradients_every: model's .grad hold the gradients that
        made this step. Read them; never change them or the weights."""

    def on_eval(self, event: EvalEvent, model: nn.Module) -> None: ...

    def evaluation_tally(self, step: int, full: bool, model: nn.Module, images: torch.Tensor):
        """Asked before each evaluation (at step, the epoch's test when full, over images): an object whose run(x)
        returns model's logits for a prepared batch while it looks at the activations, and whose wants_more() says
        whether it takes more (cnn.health.ActivationTally): the evaluation passes its first images through it in place
        of the model, and on_eval reads them without a second pass. None: the evaluation runs as it is."""
        return None

    def on_epoch_end(self, event: EpochEvent, model: nn.Module) -> None: ...


class TrainControl:
    """Pause, resume and stop, from any thread; the loop checks it between steps."""

    def __init__(self):
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._waiting = threading.Event()  # set while the loop is actually held between steps

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can see the stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def waiting(self) -> bool:
        """True once a pause has taken hold: the loop is blocked between two steps, not training."""
        return self._waiting.is_set()

    def wait_while_paused(self, on_wait=None) -> None:
        """Block while paused; returns at once when running or stopped."""
        if self._running.is_set():
            return
        self._waiting.set()
        try:
            while not self._running.wait(timeout=0.2):
                if on_wait is not None:
                    on_wait()
        finally:
            self._waiting.clear()


class Stopwatch:
    """Seconds of training: the time since start minus the time spent paused.

    A run paused for a lesson's explanation must not look slower afterwards ("about 40 min left" after a
    5-minute pause). clock is injectable so a test can move time without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._started = clock()
        self._paused_since: float | None = None
        self._paused_total = 0.0

    def pause(self) -> None:
        if self._paused_since is None:
            self._paused_since = self._clock()

    def resume(self) -> None:
        if self._paused_since is not None:
            self._paused_total += self._clock() - self._paused_since
            self._paused_since = None

    def elapsed(self) -> float:
        now = self._clock()
        paused = self._paused_total + (now - self._paused_since if self._paused_since is not None else 0.0)
        return now - self._started - paused


def wait_while_paused(control: "TrainControl", stopwatch: Stopwatch) -> None:
    """Hold the loop while control is paused; the stopwatch does not count the wait."""
    if not control.paused:
        return
    stopwatch.pause()
    try:
        control.wait_while_paused()
    finally:
        stopwatch.resume()


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    epochs_completed: int
    test_accuracy: float | None  # full test set after the last completed epoch (None if none completed)
    per_class_accuracy: list[float] | None
    wall_seconds: float  # training time, pauses not counted
    stopped: bool  # True when stopped early (control.stop or max_steps)
    device: str
    precision: str = "fp32"  # what it trained in: "bf16" only where asked for and native (run_precision)
    history: list[dict] = field(default_factory=list)  # one dict per evaluation


# glibc's mallopt parameters, and the values keep_freed_memory sets: its largest mmap threshold (blocks up to 32 MB
# come from the heap and are reused), and a trim threshold that keeps up to 256 MB of freed heap for the next step.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_BLOCK_BYTES, KEPT_FREE_BYTES = 32 * 1024 * 1024, 256 * 1024 * 1024
_freed_memory_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Ask the C library to keep freed blocks of up to 32 MB for reuse (process-wide, once); whether it took.

    Every ARTICLE step allocates and frees the same maps (conv1's output alone is 12.8 MB at batch 128). With
    glibc's defaults many of them are mapped afresh from the system and zeroed page by page when first written:
    3,700-8,400 page faults a step here (how many varies: glibc moves its thresholds with the order of earlier
    frees), and 52-65 ms a step against 49-52 ms without them (alternating processes, README "Speed"); the test
    set's 10,000 images took 1.8-1.9 s against 1.2-1.3 s. The memory a run uses at its peak is the same (max RSS
    865 MB against 867 MB); freed blocks wait for the next step instead of going back to the system. Elsewhere
    (macOS, a C library without mallopt) nothing changes and it returns False.
    """
    global _freed_memory_kept
    if _freed_memory_kept is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _freed_memory_kept = bool(libc.mallopt(M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES)
                                      and libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
        except (OSError, AttributeError):  # no C library by that name, or one without mallopt
            _freed_memory_kept = False
    return _freed_memory_kept


def pick_device() -> torch.device:
    """A CUDA GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_native(device: torch.device | str) -> bool:
    """Whether bfloat16 convolutions run natively on device (AVX-512 BF16 or AMX on a CPU; a CUDA GPU that has it).

    Elsewhere bfloat16 is emulated and slower than float32, so a bf16 run trains in float32 there (and says so)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # noqa: SLF001 - torch's own capability check
    except (AttributeError, RuntimeError):
        return False


def run_precision(config: TrainConfig, device: torch.device | str) -> str:
    """The precision a run of config trains in on device: "bf16" where asked for and native, else "fp32"."""
    return "bf16" if config.precision == "bf16" and bf16_native(device) else "fp32"


def prepare_batch(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1], channels_last when asked."""
    x = to_float(images)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def uses_channels_last(model: nn.Module) -> bool:
    # oneDNN's convolutions run ~1.4x faster in NHWC on this CPU (measured by `python -m cnn bench`).
    return any(stage.kind == "conv" for stage in getattr(model, "stages", ()))


EVAL_BATCH = 128  # images per forward when evaluating: the 10,000 test images in float32 took 1.30-1.36 s here,
# 1.50-1.63 s at 250, 2.2-2.3 s at 500, 2.5-2.8 s at 1,000 (a FAST model, two rounds, alternated)


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = EVAL_BATCH, precision: str = "fp32", tally=None) -> dict:
    """Accuracy, per-class accuracy (one per output of the model) and predictions on uint8 images; restores train mode.

    precision "bf16" runs the forward in bfloat16 autocast (a bf16 run's quick evaluations); the number a card
    records is always measured in float32. tally (Callback.evaluation_tally's): a float32 evaluation passes its
    first images through it, and it counts them as it computes their logits; a bf16 one leaves it unused."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    channels_last = uses_channels_last(model)
    predictions, num_classes = [], 0
    for start in range(0, len(images), batch_size):
        batch = prepare_batch(images[start:start + batch_size].to(device), channels_last)
        if tally is not None and precision == "fp32" and tally.wants_more():
            logits = tally.run(batch)  # the same stages and kernels as model(batch) in eval mode
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(batch)
        num_classes = logits.shape[1]
        predictions.append(logits.argmax(1).cpu())
    model.train(was_training)
    predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    labels = labels.cpu()
    correct = predicted == labels
    per_class = []
    for label in range(num_classes):
        mask = labels == label
        per_class.append(float(correct[mask].float().mean()) if mask.any() else float("nan"))
    return {"accuracy": float(correct.float().mean()) if len(labels) else float("nan"),
            "n": len(labels), "per_class_accuracy": per_class, "predictions": predicted}


def train(config: TrainConfig, data: ImageDataset, callbacks: list[Callback] | tuple = (),
          control: TrainControl | None = None, max_steps: int | None = None,
          device: torch.device | None = None, model: nn.Module | None = None,
          clock: Callable[[], float] = time.perf_counter) -> TrainResult:
    """Train a fresh model (or the given one) on data.train_* for config.epochs; evaluate on data.test_*.

    Seeded by config.seed: the same seed gives the same metrics on the CPU. The run's randomness
    (initial weights, shuffling, dropout masks) comes from generators of its own, never torch's
    global RNG, so trainings in parallel threads give the same metrics as each alone.
    Stops between steps when control.stop() is called or after max_steps (a server's cap on one
    run); an early stop ends without a final evaluation. Elapsed times leave out pauses (clock: for tests).
    """
    if data.spec.name != config.dataset:
        raise ValueError(f"This run is set up for {config.dataset!r} but was given {data.spec.title}.")
    control = control or TrainControl()
    keep_freed_memory()
    device = torch.device(device or pick_device())
    init_generator = torch.Generator().manual_seed(config.seed)  # weights are drawn on the CPU, then moved
    # Dropout draws where the activations live; on the CPU it goes on from the init's stream.
    dropout_generator = (init_generator if device.type == "cpu"
                         else torch.Generator(device=device).manual_seed(config.seed))
    model = (model if model is not None else build_model(config, generator=init_generator)).to(device)
    if device.type == "cuda":
        warm_up(model, data, config, device)  # a CPU has nothing to start: oneDNN's first step is ~30 ms
    set_dropout_generator(model, dropout_generator)
    try:
        return _train_loop(config, data, model, callbacks, control, max_steps, device, Stopwatch(clock))
    finally:
        set_dropout_generator(model, None)  # the returned model holds no live generator


def warm_up(model: nn.Module, data: ImageDataset, config: TrainConfig, device: torch.device) -> None:
    """A training step's and an evaluation's kernels, run once on a throwaway copy before the clock starts.

    A GPU's first step would also start CUDA's context, cuDNN and cuBLAS and load their kernels, once per process,
    which is not training. (The optimizer's and dropout's kernels still load in the first real step: on an H100 it
    took 0.26 s in a fresh process, 0.01-0.02 s after that.) The copy is in eval mode (its dropout draws nothing) and has no optimizer, so
    the run's weights and random numbers are untouched.
    """
    import copy

    spare = copy.deepcopy(model).eval()
    channels_last = uses_channels_last(spare)
    if channels_last:
        spare = spare.to(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run_precision(config, device) == "bf16"):
        x = prepare_batch(data.train_images[:config.batch_size].to(device), channels_last)
        F.cross_entropy(spare(x), data.train_labels[:config.batch_size].to(device)).backward()
    with torch.inference_mode():
        spare(prepare_batch(data.test_images[:EVAL_BATCH].to(device), channels_last))
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_loop(config: TrainConfig, data: ImageDataset, model: nn.Module, callbacks, control: TrainControl,
                max_steps: int | None, device: torch.device, stopwatch: Stopwatch) -> TrainResult:
    """train()'s loop, once the model and its generators are set up."""
    channels_last = uses_channels_last(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()

    train_images = data.train_images.to(device)
    train_labels = data.train_labels.to(device)
    n_train = len(train_images)
    n_epoch = config.images_per_epoch(n_train)  # FAST's quick pass: a fresh random part of the set each epoch
    steps_per_epoch = config.steps_per_epoch(n_train)
    steps_total = steps_per_epoch * config.epochs
    if max_steps is not None:
        steps_total = min(steps_total, max_steps)
    optimizer, scheduler = make_optimizer(model, config, steps_total)
    precision = run_precision(config, device)
    bf16 = precision == "bf16"
    shuffle = torch.Generator().manual_seed(config.seed)
    subset = min(config.eval_subset, len(data.test_images))
    subset_images, subset_labels = data.test_images[:subset], data.test_labels[:subset]

    step, epochs_completed = 0, 0
    test_accuracy = per_class = None
    history: list[dict] = []
    for callback in callbacks:
        callback.on_start(model)
    gradient_listeners = [callback for callback in callbacks if getattr(callback, "gradients_every", 0) > 0]

    tally_sources = [callback for callback in callbacks if callable(getattr(callback, "evaluation_tally", None))]

    def tally_for(full: bool, images: torch.Tensor):
        """The first tally a callback offers for this evaluation (at most one is used)."""
        for callback in tally_sources:
            tally = callback.evaluation_tally(step, full, model, images)
            if tally is not None:
                return tally
        return None

    def fire_eval(accuracy: float, n: int, full: bool, epoch: int) -> None:
        event = EvalEvent(step=step, epoch=epoch, accuracy=accuracy, n=n, full=full)
        history.append({"step": step, "epoch": epoch, "accuracy": accuracy, "n": n, "full": full})
        for callback in callbacks:
            callback.on_eval(event, model)

    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n_train, generator=shuffle)[:n_epoch].to(device)
        for start in range(0, n_epoch, config.batch_size):
            wait_while_paused(control, stopwatch)
            if control.stopped or (max_steps is not None and step >= max_steps):
                break
            t0 = time.perf_counter()
            index = order[start:start + config.batch_size]
            x = prepare_batch(train_images[index], channels_last)
            y = train_labels[index]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # the backward follows its dtypes
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)  # autocast: in float32
            loss.backward()
            optimizer.step()
            learning_rate = optimizer.param_groups[0]["lr"]
            if scheduler is not None and step + 1 < steps_total:
                scheduler.step()
            step += 1
            # One copy to the host for both numbers: it synchronises a GPU once (so the timing below is honest).
            loss_value, batch_accuracy = torch.stack((loss.detach().float(),
                                                      (logits.argmax(1) == y).float().mean())).tolist()
            seconds = time.perf_counter() - t0
            event = StepEvent(step=step, epoch=epoch, steps_per_epoch=steps_per_epoch,
                              steps_total=steps_total, loss=loss_value, batch_accuracy=batch_accuracy,
                              images_per_second=len(index) / max(seconds, 1e-9),
                              learning_rate=learning_rate, elapsed_seconds=stopwatch.elapsed())
            for callback in callbacks:
                callback.on_step(event)
            for callback in gradient_listeners:  # the gradients stay in .grad until the next step's zero_grad
                if step % callback.gradients_every == 0:
                    callback.on_gradients(step, model)
            if config.eval_every and step % config.eval_every == 0:
                quick = evaluate(model, subset_images, subset_labels, precision=precision,
                                 tally=tally_for(False, subset_images))
                fire_eval(quick["accuracy"], quick["n"], False, epoch)
        else:  # the epoch ran to its end
            full = evaluate(model, data.test_images, data.test_labels, tally=tally_for(True, data.test_images))
            epochs_completed = epoch
            test_accuracy, per_class = full["accuracy"], full["per_class_accuracy"]
            fire_eval(test_accuracy, full["n"], True, epoch)
            epoch_event = EpochEvent(epoch=epoch, step=step, test_accuracy=test_accuracy,
                                     per_class_accuracy=per_class,
                                     elapsed_seconds=stopwatch.elapsed(),
                                     predictions=full["predictions"])
            for callback in callbacks:
                callback.on_epoch_end(epoch_event, model)
            continue
        break  # stopped mid-epoch

    if channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    model.eval()
    return TrainResult(model=model, steps=step, epochs_completed=epochs_completed,
                       test_accuracy=test_accuracy, per_class_accuracy=per_class,
                       wall_seconds=stopwatch.elapsed(),
                       stopped=epochs_completed < config.epochs, device=str(device), history=history,
                       precision=precision)
