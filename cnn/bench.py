"""`python -m cnn bench`: speed as ratios against baselines measured in the same run, and latencies.

Tests never assert times (the machines are shared and noisy); this is where speed is measured.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .model import CONV_CHANNELS, KERNEL_SIZE, ConvNet, FLAT_FEATURES, HIDDEN_UNITS, NUM_CLASSES
from .optim import TFRMSprop
from .train import prepare_batch

BATCH = 128


class BaselineNet(nn.Module):
    """The article's network written the plain way, to measure the project's step against: NCHW, nn.Dropout, ReLU
    before each pool. Written out by hand on purpose (a plain eager model, not the staged one), with its sizes
    taken from cnn.model so the two stay the same network."""

    def __init__(self):
        super().__init__()
        c1, c2, c3 = CONV_CHANNELS
        same = KERNEL_SIZE // 2  # 'SAME': the maps keep their size
        self.conv1 = nn.Conv2d(1, c1, KERNEL_SIZE, padding=same, bias=False)
        self.conv2 = nn.Conv2d(c1, c2, KERNEL_SIZE, padding=same, bias=False)
        self.conv3 = nn.Conv2d(c2, c3, KERNEL_SIZE, padding=same, bias=False)
        self.fc = nn.Linear(FLAT_FEATURES, HIDDEN_UNITS, bias=False)
        self.out = nn.Linear(HIDDEN_UNITS, NUM_CLASSES, bias=False)
        self.drop_conv, self.drop_hidden = nn.Dropout(0.2), nn.Dropout(0.5)
        for weight in self.parameters():
            nn.init.normal_(weight, std=0.01)

    def forward(self, x):
        x = self.drop_conv(F.max_pool2d(F.relu(self.conv1(x)), 2, 2, ceil_mode=True))
        x = self.drop_conv(F.max_pool2d(F.relu(self.conv2(x)), 2, 2, ceil_mode=True))
        x = self.drop_conv(torch.flatten(F.max_pool2d(F.relu(self.conv3(x)), 2, 2, ceil_mode=True), 1))
        return self.out(self.drop_hidden(F.relu(self.fc(x))))


def _step_fn(model: nn.Module, optimizer, images: torch.Tensor, labels: torch.Tensor,
             channels_last: bool) -> Callable[[], None]:
    def step() -> None:
        x = prepare_batch(images, channels_last)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step


def training_steps() -> dict[str, Callable[[], None]]:
    """One training step of the project (as train.py runs it) and of the plain eager baseline."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 28, 28), dtype=torch.uint8)  # synthetic: speed only
    labels = torch.randint(0, 10, (BATCH,))
    project = ConvNet().to(memory_format=torch.channels_last).train()
    baseline = BaselineNet().train()
    return {
        "project": _step_fn(project, TFRMSprop(project.parameters(), lr=0.001), images, labels, True),
        "baseline": _step_fn(baseline, torch.optim.RMSprop(baseline.parameters(), lr=0.001, alpha=0.9, eps=1e-10),
                             images, labels, False),
    }


EPOCH_TRAIN_IMAGES, EPOCH_TEST_IMAGES = 60_000, 10_000  # MNIST's sizes


def epoch_data(train_images: int = EPOCH_TRAIN_IMAGES, test_images: int = EPOCH_TEST_IMAGES):
    """MNIST in memory (its first train_images and test_images), or SYNTHETIC data of its size and type (random
    uint8 pixels and labels, speed only) where MNIST is not on this machine."""
    from .data import DataError, ImageDataset, load_dataset

    try:
        data = load_dataset("mnist")
    except DataError:
        pass
    else:
        return ImageDataset(data.train_images[:train_images], data.train_labels[:train_images],
                            data.test_images[:test_images], data.test_labels[:test_images], source=data.source)
    generator = torch.Generator().manual_seed(0)

    def part(n):
        return (torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator),
                torch.randint(0, NUM_CLASSES, (n,), generator=generator))
    return ImageDataset(*part(train_images), *part(test_images), source="synthetic (speed only)")


def project_epoch(data, config=None) -> Callable[[], None]:
    """One epoch of the project's train(), end to end, as the class server runs it: its quick evaluations every
    eval_every steps, the full test set at the epoch's end, and a server run's callbacks (the run's folder on disk
    with its metrics, filter snapshots and checkpoints; the layer-health monitor)."""
    import tempfile

    from .config import ARTICLE
    from .health import HealthMonitor
    from .runs import RunRecorder
    from .train import train

    config = (config or ARTICLE).replace(epochs=1)

    def epoch() -> None:
        with tempfile.TemporaryDirectory(prefix="cnn-bench-") as folder:
            recorder = RunRecorder(folder, config, data_source=data.source)
            health = HealthMonitor(data.test_images[:config.eval_subset])
            train(config, data, callbacks=[recorder, health], device=torch.device("cpu"))
            recorder.finish(None, "finished")
    return epoch


def plain_epoch(data, batch: int = BATCH) -> Callable[[], None]:
    """One epoch of the plain eager loop on data: BaselineNet (NCHW, nn.Dropout), torch's RMSprop, the images made
    float once beforehand (not timed), a shuffled index per epoch, then one pass over the test set."""
    train_x = data.train_images.unsqueeze(1).float().div(255)  # (N, 1, 28, 28)
    test_x = data.test_images.unsqueeze(1).float().div(255)

    def epoch() -> None:
        torch.manual_seed(0)
        model = BaselineNet().train()
        optimizer = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-10)
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x), batch):
            index = order[start:start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(train_x[index]), data.train_labels[index]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum())
                          for x, y in zip(test_x.split(1000), data.test_labels.split(1000)))
        assert 0 <= correct <= len(test_x)
    return epoch


class PlainLoopProcess:
    """plain_epoch in a Python process of its own, as a plain script runs it: with the C library's own allocator
    settings, which train() changes for the whole process it runs in (cnn.train.keep_freed_memory). Started once with
    the data and the thread count (not timed); each call runs one epoch there and returns when it is done."""

    def __init__(self, data, batch: int = BATCH):
        import os
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        import numpy as np

        self._folder = tempfile.TemporaryDirectory(prefix="cnn-bench-")
        path = Path(self._folder.name) / "data.npz"
        np.savez(path, train_images=data.train_images.numpy(), train_labels=data.train_labels.numpy(),
                 test_images=data.test_images.numpy(), test_labels=data.test_labels.numpy())
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from cnn.bench import plain_loop_worker; plain_loop_worker()", str(path),
             str(batch), str(torch.get_num_threads())], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env)
        self._answer()  # its data loaded

    def _answer(self) -> None:
        if self._process.stdout.readline().strip() != "done":
            self.close()
            raise RuntimeError("The plain loop's process ended before its epoch did (its error is above).")

    def __call__(self) -> None:
        self._process.stdin.write("epoch\n")
        self._process.stdin.flush()
        self._answer()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # the worker ends at the end of its input
            self._process.wait(timeout=60)
        self._folder.cleanup()


def plain_loop_worker() -> None:
    """PlainLoopProcess's side: argv data.npz, batch, threads; "done" once loaded, then once after each epoch asked
    for on stdin."""
    import sys

    import numpy as np

    from .data import ImageDataset

    path, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    with np.load(path) as arrays:
        data = ImageDataset(*(torch.from_numpy(arrays[name]) for name in
                              ("train_images", "train_labels", "test_images", "test_labels")), source="bench")
    epoch = plain_epoch(data, batch)
    print("done", flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        epoch()
        print("done", flush=True)


def baseline_epoch(data) -> PlainLoopProcess:
    """One epoch of the plain eager loop on data, in a process of its own (PlainLoopProcess); close() it after."""
    return PlainLoopProcess(data)


def epoch_benchmark(rounds: int = 2, train_images: int = EPOCH_TRAIN_IMAGES,
                    test_images: int = EPOCH_TEST_IMAGES) -> dict:
    """Seconds for one epoch, end to end, of train() (ARTICLE, fp32) and of the plain eager loop (in a plain process
    of its own, PlainLoopProcess), alternating; the ratio of their medians (epoch_ratio: > 1 means the project's epoch
    is faster)."""
    data = epoch_data(train_images, test_images)
    ours, plain = project_epoch(data), baseline_epoch(data)
    try:
        seconds = measure_alternately({"project": ours, "baseline": plain}, rounds=rounds, calls_per_round=1, warmup=0)
    finally:
        plain.close()
    project, baseline = statistics.median(seconds["project"]), statistics.median(seconds["baseline"])
    return {"train_images": len(data.train_images), "test_images": len(data.test_images), "rounds": rounds,
            "data": "MNIST" if "synthetic" not in data.source else "synthetic",
            "project_epoch_s": round(project, 2), "baseline_epoch_s": round(baseline, 2),
            "project_epochs_s": [round(x, 2) for x in seconds["project"]],
            "baseline_epochs_s": [round(x, 2) for x in seconds["baseline"]],
            "epoch_ratio": round(baseline / project, 3)}


def measure_alternately(functions: dict[str, Callable[[], None]], rounds: int, calls_per_round: int,
                        warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternating rounds so load changes hit all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(calls_per_round):
                function()
            seconds[name].append((time.perf_counter() - start) / calls_per_round)
    return seconds


def latency_ms(function: Callable[[], object], repeats: int = 200, warmup: int = 10) -> dict[str, float]:
    """Median and p95 wall time of one call, in milliseconds, over `samples` timed calls (after the warm-up)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
            "samples": len(times)}


def inference_latency(repeats: int = 200) -> dict[str, float]:
    model = _bench_model()
    x = torch.rand(1, 1, 28, 28)

    def predict():
        with torch.inference_mode():
            return model(x).argmax(1)
    return latency_ms(predict, repeats=repeats)


def run_benchmarks(rounds: int = 5, steps_per_round: int = 10, latency_repeats: int | None = None,
                   map_images: int | None = None, epoch_rounds: int = 2, epoch_images: int | None = None) -> dict:
    """Everything `python -m cnn bench` reports; latency_repeats shortens the latency loops and map_images the maps'
    and experiments' image count (for tests; None: the 10,000 test images); epoch_images the end-to-end epoch's
    training images (None: MNIST's 60,000; its test set is a sixth of it)."""
    steps = training_steps()
    seconds = measure_alternately(steps, rounds, steps_per_round)
    project_img_s = BATCH / statistics.median(seconds["project"])
    baseline_img_s = BATCH / statistics.median(seconds["baseline"])
    report = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": BATCH,
        "project_img_s": round(project_img_s, 1),
        "baseline_img_s": round(baseline_img_s, 1),
        "ratio": round(project_img_s / baseline_img_s, 3),
        "step_ratio": round(project_img_s / baseline_img_s, 3),  # the same number, under the name
        "rounds": rounds,
        "steps_per_round": steps_per_round,
        "inference_single_image": inference_latency(latency_repeats or 200),
    }
    for name, extra in _extra_benchmarks():
        report[name] = extra(latency_repeats)
    epoch = (epoch_benchmark(epoch_rounds) if epoch_images is None
             else epoch_benchmark(epoch_rounds, epoch_images, max(epoch_images // 6, 1)))
    report["epoch"] = epoch
    report["epoch_ratio"] = epoch["epoch_ratio"]
    report.update(inside_latencies(latency_repeats, map_images))
    report.update(experiment_latencies(latency_repeats, map_images))
    return report


def _bench_model():
    from .checkpoint import BUNDLED_MODEL, load_model

    return load_model()[0] if BUNDLED_MODEL.is_file() else ConvNet().eval()


def synthetic_drawing():
    """A 280x280 RGBA canvas with a thick white '7', as the Draw page receives it (SYNTHETIC)."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(image).line([(70, 50), (210, 50), (130, 240)], fill=(255, 255, 255, 255), width=22)
    return np.asarray(image)


def draw_stroke_latency(method: str, repeats: int = 60) -> dict[str, float]:
    """Server work per stroke on the Draw page: preprocess + predict + attribution."""
    from .drawing import preprocess_drawing
    from .explain import attribution, describe, predict

    model, rgba = _bench_model(), synthetic_drawing()

    def per_stroke():
        x = preprocess_drawing(rgba)
        answer = describe(predict(model, x))
        return attribution(model, x, answer["digit"], method)
    return latency_ms(per_stroke, repeats=repeats, warmup=3)


def feature_page_latency(repeats: int = 40) -> dict[str, float]:
    """Server work to render the Feature maps page for a new image (arrays and images, before Streamlit)."""
    import numpy as np

    from .features import (activations, colour_bar, convolution_at, enlarge, hidden_strip, kernel_grid,
                           kernels, maps_grid)

    model = _bench_model()
    images = [np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8) for i in range(8)]
    state = {"i": 0}

    def render():
        image = images[state["i"] % len(images)]  # a new image each call
        state["i"] += 1
        acts = activations(model, torch.from_numpy(image.astype(np.float32) / 255.0)[None, None])
        grid, low, high = maps_grid(acts["conv1"], per="map")
        colour_bar(low, high)
        enlarge(maps_grid(acts["conv1"][:1], per="map", columns=1)[0], 280)
        kernel_grid(kernels(model, "conv1"))
        convolution_at(model, acts, "conv1", 0, 14, 14)
        enlarge(hidden_strip(acts["fc"]), 250)
        return grid
    return latency_ms(render, repeats=repeats, warmup=3)


def bench_images(count: int | None = None) -> tuple[torch.Tensor, bool]:
    """((N, 1, 28, 28) float32 in [0, 1], real): the first count MNIST test images (None: all 10,000), or random
    SYNTHETIC images of the same shape where MNIST is not on this machine (speed only)."""
    from .data import DataError, load_dataset, to_float

    try:
        images = load_dataset("mnist").test_images
    except DataError:
        return torch.rand(count or 10_000, 1, 28, 28, generator=torch.Generator().manual_seed(0)), False
    return to_float(images[:count] if count else images), True


def inside_latencies(repeats: int | None = None, map_images: int | None = None) -> dict[str, dict]:
    """Inside the network's server work on the bundled model: the overview for a new image, one unit's detail, one
    unit's picture (a conv3 channel, a class output: computed afresh, as for a checkpoint not yet cached), and both
    maps of the hidden layer (map_images test images, None: all 10,000, forward pass included)."""
    from .inside import conv_unit, overview_columns, overview_marks
    from .model import model_spec
    from .optvis import visualize_unit
    from .projection import hidden_projection

    model = _bench_model()
    images, _real = bench_images(map_images)
    names, state = model_spec(model).class_names, {"i": 0}

    def next_image():
        state["i"] += 1
        return images[state["i"] % len(images), 0].numpy()  # a new image each call

    return {
        "inside_overview_render": latency_ms(lambda: overview_marks(overview_columns(model, next_image()), names),
                                             repeats=repeats or 40, warmup=3),
        "inside_unit_detail": latency_ms(lambda: conv_unit(model, next_image(), "conv2", 5, 3, 4),
                                         repeats=repeats or 100, warmup=3),
        "inside_visualize_conv3": latency_ms(lambda: visualize_unit(model, "conv3", 5), repeats=repeats or 5, warmup=1),
        "inside_visualize_class": latency_ms(lambda: visualize_unit(model, "logits", 6), repeats=repeats or 5,
                                             warmup=1),
        "inside_map_pca": latency_ms(lambda: hidden_projection(model, images, "pca"), repeats=repeats or 3, warmup=1),
        "inside_map_tsne": latency_ms(lambda: hidden_projection(model, images, "tsne"), repeats=repeats or 1,
                                      warmup=0),
    }


def bench_test_set(count: int | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,), real): the first count MNIST test images (None: all
    10,000), or SYNTHETIC ones with random labels where MNIST is not on this machine (speed only)."""
    from .data import DataError, load_dataset, to_float

    try:
        data = load_dataset("mnist")
    except DataError:
        generator = torch.Generator().manual_seed(0)
        n = count or 10_000
        return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator), False
    return to_float(data.test_images[:count]), data.test_labels[:count].clone(), True


def experiment_latencies(repeats: int | None = None, images: int | None = None) -> dict[str, dict]:
    """The Experiments page's server work on the bundled model, against issue 14's targets: what one rerun of each
    experiment computes for a new image (<= 150 ms; a targeted attack <= 300 ms), an edited network's accuracy on
    the 10,000 test images (<= 1.5 s), conv1's ablation sweep on 2,000 (<= 5 s) and a 13-point rotation curve on
    2,000 (<= 5 s). images: fewer test images for a quick run (tests); None: the issue's counts."""
    from .adversarial import fool, smallest_flipping_epsilon
    from .experiments import quick_accuracy
    from .features import maps_grid
    from .surgery import ablation_sweep, classic_kernel, compare_image, edited_map_pairs, edited_model
    from .transforms import CURVE_VALUES, class_sweep, read_transformed, robustness_curve, settings_from, sweep_range

    model = _bench_model()
    test_images, labels, _real = bench_test_set(images)
    sweep = min(len(test_images), 2000)
    edits = {"kernels": {("conv1", 0): classic_kernel("Sobel x")}, "ablate": {"conv2": [5, 9], "fc": [1, 2]}}
    edited = edited_model(model, **edits)
    state = {"i": 0}

    def next_image() -> tuple[torch.Tensor, int]:
        state["i"] += 1
        index = state["i"] % len(test_images)
        return test_images[index, 0], int(labels[index])  # a new image each call

    def surgery() -> None:  # the edited copy, both first-layer maps as the page draws them, both answers
        image, _ = next_image()
        result = compare_image(model, edited_model(model, **edits), image[None, None])
        maps_grid(result.maps, per="map", columns=8, signed=True, numbered=True)
        maps_grid(result.edited_maps, per="map", columns=8, signed=True, numbered=True)
        edited_map_pairs(model, result, edits["kernels"])  # the hand-set filter's map, enlarged, before and after

    settings = settings_from({"dx": 3, "rotate": 15, "noise": 0.1, "thickness": 1, "box_size": 4}, 28)

    def transformed() -> None:  # a slider move: the transformed image, its answer, the sweep chart's 25 rotations
        image, _ = next_image()
        read_transformed(model, image, settings)
        class_sweep(model, image, "rotate", sweep_range("rotate", 28), settings=settings)

    def attacked(target_offset: int | None) -> Callable[[], object]:
        def attack():  # the page's rerun: FGSM or a 20-step targeted attack, both answers and the pictures
            image, label = next_image()
            return fool(model, image.numpy(), target=None if target_offset is None else (label + target_offset) % 10,
                        epsilon=0.1)
        return attack

    def smallest() -> None:  # once per image and target (cached): 100 epsilons' targeted attacks in one batch
        image, label = next_image()
        smallest_flipping_epsilon(model, image.numpy(), target=(label + 1) % 10)

    return {
        "experiment_surgery_image": latency_ms(surgery, repeats=repeats or 40, warmup=3),
        "experiment_transform_image": latency_ms(transformed, repeats=repeats or 40, warmup=3),
        "experiment_attack_fgsm": latency_ms(attacked(None), repeats=repeats or 40, warmup=3),
        "experiment_attack_targeted": latency_ms(attacked(1), repeats=repeats or 20, warmup=2),
        "experiment_smallest_epsilon": latency_ms(smallest, repeats=repeats or 5, warmup=1),
        "experiment_edited_accuracy": latency_ms(lambda: quick_accuracy(edited, test_images, labels),
                                                 repeats=repeats or 5, warmup=1),
        "experiment_ablation_sweep_conv1": latency_ms(
            lambda: ablation_sweep(model, test_images[:sweep], labels[:sweep], "conv1"), repeats=repeats or 3,
            warmup=1),
        "experiment_rotation_curve": latency_ms(
            lambda: robustness_curve(model, test_images[:sweep], labels[:sweep], "rotate", CURVE_VALUES["rotate"]),
            repeats=repeats or 3, warmup=1),
    }


def health_latency(part: str, repeats: int = 40) -> dict[str, float]:
    """Layer health's cost on the article's network after one step (SYNTHETIC images): "gradients" reads the norms
    (every 10th step); "evaluation" measures histograms and dead ReLUs on 1,000 images (at most every 200 steps).
    Compare each with one training step (project_img_s: BATCH / img/s seconds)."""
    from .health import HealthMonitor, gradient_norms

    torch.manual_seed(0)
    images = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8)
    model = ConvNet().to(memory_format=torch.channels_last).train()
    F.cross_entropy(model(prepare_batch(images[:BATCH], True)), torch.randint(0, 10, (BATCH,))).backward()
    monitor = HealthMonitor(images)
    work = (lambda: gradient_norms(model)) if part == "gradients" else (lambda: monitor.measure(1, 1, model))
    return latency_ms(work, repeats=repeats, warmup=2)


def _extra_benchmarks() -> list[tuple[str, Callable[[int | None], dict]]]:
    """The app's per-interaction server work: a Draw stroke (per attribution method), a Feature page render."""
    return [
        ("draw_stroke_grad_cam", lambda n: draw_stroke_latency("grad_cam", n or 60)),
        ("draw_stroke_integrated_gradients", lambda n: draw_stroke_latency("integrated_gradients", n or 60)),
        ("draw_stroke_occlusion", lambda n: draw_stroke_latency("occlusion", n or 60)),
        ("feature_page_render", lambda n: feature_page_latency(n or 40)),
        ("health_gradient_norms", lambda n: health_latency("gradients", n or 200)),
        ("health_evaluation", lambda n: health_latency("evaluation", n or 10)),
    ]


def format_report(report: dict) -> str:
    lines = [
        f"Training throughput, batch {report['batch']}, {report['threads']} threads, fp32 (median of {report['rounds']} alternating rounds):",
        f"  project  {report['project_img_s']:>8.0f} img/s   (channels_last, ReLU after pool, fast dropout, TF RMSProp)",
        f"  baseline {report['baseline_img_s']:>8.0f} img/s   (plain eager: NCHW, ReLU before pool, nn.Dropout, torch RMSprop)",
        f"  ratio    {report['ratio']:>8.2f}x",
        f"One epoch end to end ({report['epoch']['train_images']:,} {report['epoch']['data']} images, fp32, "
        f"median of {report['epoch']['rounds']}):",
        f"  project  {report['epoch']['project_epoch_s']:>8.2f} s     (train(): ARTICLE, its evaluations, a server run's callbacks)",
        f"  baseline {report['epoch']['baseline_epoch_s']:>8.2f} s     (plain eager loop, then one test pass)",
        f"  epoch_ratio {report['epoch_ratio']:>5.2f}x",
        f"Single-image inference: median {report['inference_single_image']['median_ms']:.2f} ms, "
        f"p95 {report['inference_single_image']['p95_ms']:.2f} ms",
    ]
    for key, value in report.items():
        if isinstance(value, dict) and key != "inference_single_image" and "median_ms" in value:
            lines.append(f"{key.replace('_', ' ').capitalize()}: median {value['median_ms']:.2f} ms, p95 {value['p95_ms']:.2f} ms")
    return "\n".join(lines)
