"""The package as a whole: `import cnn` stays free of streamlit; the CLI's offline commands."""
import json
import subprocess
import sys

import pytest

from cnn.cli import main
from tests.conftest import ROOT


def test_import_cnn_does_not_import_streamlit():
    code = ("import sys, cnn, cnn.data, cnn.train, cnn.runs, cnn.checkpoint, cnn.bench, cnn.cli; "
            "import importlib, pkgutil; [importlib.import_module('cnn.' + m.name) for m in pkgutil.iter_modules(cnn.__path__) if m.name != '__main__']; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_in_cnn_mentions_streamlit_imports():
    for path in (ROOT / "cnn").glob("*.py"):
        assert "import streamlit" not in path.read_text(), path.name


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == 1_378_698
    assert [layer["name"] for layer in info["layers"]][:4] == ["input", "conv1", "relu1", "pool1"]


def test_train_cli_rejects_a_bad_run_name(capsys):
    assert main(["train", "--out", "runs/../../etc", "--max-steps", "1"]) == 2
    assert "not a valid run name" in capsys.readouterr().err


def test_evaluate_cli_reports_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["evaluate", str(bad), "--json"]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err


LATENCY_KEYS = ("inference_single_image", "draw_stroke_grad_cam", "draw_stroke_integrated_gradients",
                "draw_stroke_occlusion", "feature_page_render", "inside_overview_render", "inside_unit_detail",
                "inside_visualize_conv3", "inside_visualize_class", "inside_map_pca", "inside_map_tsne",
                "health_gradient_norms", "health_evaluation", "experiment_surgery_image",
                "experiment_transform_image", "experiment_attack_fgsm", "experiment_attack_targeted",
                "experiment_smallest_epsilon", "experiment_edited_accuracy", "experiment_ablation_sweep_conv1",
                "experiment_rotation_curve")


class FakeClock:
    """A perf_counter that only moves when a timed function says it took some time: timing code tested without timing."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_bench_reports_ratio_and_latencies():
    """The benchmark's shape only: speed is reported by `python -m cnn bench`, never asserted here."""
    import math

    from cnn.bench import format_report, run_benchmarks

    report = run_benchmarks(rounds=2, steps_per_round=1, latency_repeats=5, map_images=300, epoch_rounds=1,
                            epoch_images=1200)
    project, baseline = report["project_img_s"], report["baseline_img_s"]
    assert math.isfinite(project) and math.isfinite(baseline) and project > 0 and baseline > 0
    # img/s are rounded to 0.1 and the ratio to 0.001: the true ratio of the unrounded figures lies in this interval.
    low = (project - 0.05) / (baseline + 0.05) - 0.0005
    high = (project + 0.05) / (baseline - 0.05) + 0.0005
    assert low <= report["ratio"] <= high
    for key in LATENCY_KEYS:
        latency = report[key]
        assert latency["samples"] == 5, key  # the repeats asked for, warm-up calls not counted
        assert all(math.isfinite(latency[k]) and latency[k] > 0 for k in ("median_ms", "p95_ms")), key
    assert f"ratio    {report['ratio']:>8.2f}x" in format_report(report)
    assert report["step_ratio"] == report["ratio"]
    epoch = report["epoch"]  # one real epoch of each, on 1,200 synthetic images
    assert (epoch["train_images"], epoch["test_images"], epoch["rounds"]) == (1200, 200, 1)
    assert epoch["project_epoch_s"] > 0 and epoch["baseline_epoch_s"] > 0
    assert report["epoch_ratio"] == epoch["epoch_ratio"] == pytest.approx(
        epoch["baseline_epochs_s"][0] / epoch["project_epochs_s"][0], abs=0.01 + 0.005 / epoch["project_epoch_s"])
    assert f"epoch_ratio {report['epoch_ratio']:>5.2f}x" in format_report(report)


def test_latency_ms_times_only_the_timed_calls(monkeypatch):
    """Warm-up calls are left out; the median and nearest-rank p95 are those of the timed calls, in ms."""
    import random
    from types import SimpleNamespace

    from cnn import bench

    clock = FakeClock()
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    timed_ms = random.Random(0).sample([*range(1, 20), 100], 20)  # 1..19 ms and one 100 ms outlier, shuffled
    calls = iter([1000.0, 1000.0] + timed_ms)  # two slow warm-ups first
    result = bench.latency_ms(lambda: clock.spend(next(calls) / 1000), repeats=20, warmup=2)
    # sorted: 1..19, 100 -> median (10 + 11) / 2 = 10.5 (the mean would be 14.5); p95 = the 19th of 20 = 19
    assert result == pytest.approx({"median_ms": 10.5, "p95_ms": 19.0, "samples": 20})
    assert next(calls, None) is None  # exactly warm-up + repeats calls


def test_measure_alternately_alternates_and_divides_by_the_calls(monkeypatch):
    from types import SimpleNamespace

    from cnn import bench

    clock, order = FakeClock(), []

    def step(name, seconds):
        def call():
            order.append(name)
            clock.spend(seconds)
        return call

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    seconds = bench.measure_alternately({"a": step("a", 0.003), "b": step("b", 0.007)}, rounds=3,
                                        calls_per_round=4, warmup=2)
    assert order == ["a"] * 2 + ["b"] * 2 + (["a"] * 4 + ["b"] * 4) * 3
    assert seconds["a"] == pytest.approx([0.003] * 3) and seconds["b"] == pytest.approx([0.007] * 3)


def test_run_benchmarks_turns_step_times_into_img_s_and_ratio(monkeypatch):
    """A project step of 0.1 s and a baseline step of 0.16 s at batch 128: 1280 vs 800 img/s, ratio 1.6."""
    from types import SimpleNamespace

    from cnn import bench

    clock = FakeClock()
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(bench, "training_steps", lambda: {"project": lambda: clock.spend(0.1),
                                                          "baseline": lambda: clock.spend(0.16)})
    # One end-to-end epoch: 12 s for train(), 15 s for the plain loop (each made on the data it is given).
    made = []
    monkeypatch.setattr(bench, "project_epoch", lambda data: made.append(len(data.train_images)) or (
        lambda: clock.spend(12.0)))
    closed = []

    class Baseline:  # as PlainLoopProcess: a call is one epoch; closed when the benchmark is done with it
        def __init__(self, data):
            made.append(len(data.test_images))

        def __call__(self):
            clock.spend(15.0)

        def close(self):
            closed.append(True)

    monkeypatch.setattr(bench, "baseline_epoch", Baseline)
    report = bench.run_benchmarks(rounds=3, steps_per_round=2, latency_repeats=1, epoch_rounds=3)
    assert closed == [True]
    assert report["batch"] == 128
    assert report["project_img_s"] == pytest.approx(1280.0) and report["baseline_img_s"] == pytest.approx(800.0)
    assert report["ratio"] == pytest.approx(1.6) and report["step_ratio"] == pytest.approx(1.6)
    assert made == [60_000, 10_000]  # MNIST's sizes
    assert report["epoch"]["project_epochs_s"] == [12.0] * 3 and report["epoch"]["baseline_epochs_s"] == [15.0] * 3
    assert report["epoch_ratio"] == pytest.approx(1.25)


def test_each_latency_measures_the_work_it_names(monkeypatch):
    """The timed functions do what their names say: a stroke is read and explained, a page render differs per image."""
    import numpy as np

    from cnn import bench
    from cnn.drawing import preprocess_drawing
    from cnn.explain import attribution, predict

    timed = {}

    def keep_function(function, repeats=200, warmup=10):
        timed["function"] = function
        return {}

    monkeypatch.setattr(bench, "latency_ms", keep_function)
    model = bench._bench_model()
    drawing = preprocess_drawing(bench.synthetic_drawing())
    assert predict(model, drawing).argmax() == 7  # the synthetic stroke is a 7 the model can read
    for method in ("grad_cam", "occlusion"):
        bench.draw_stroke_latency(method, 1)
        assert np.allclose(timed["function"](), attribution(model, drawing, 7, method), atol=1e-5), method
    bench.inference_latency(1)
    assert timed["function"]().shape == (1,)  # one image, one predicted digit
    bench.feature_page_latency(1)
    first, second = timed["function"](), timed["function"]()
    assert first.shape == (2 * 58 + 2, 16 * 58 + 2, 3)  # conv1's 32 maps, 16 a row, 56 px tiles with 2 px gaps
    assert not np.array_equal(first, second)  # each call renders a new image


def test_bench_steps_train_the_same_network():
    """The project step and the plain baseline compute the same maths: same loss from the same weights."""
    import torch

    from cnn.bench import BaselineNet
    from cnn.model import ConvNet

    torch.manual_seed(0)
    project, baseline = ConvNet(init_std=0.1).eval(), BaselineNet().eval()
    baseline.load_state_dict({k.replace("dropout_", "drop_"): v for k, v in project.state_dict().items()})
    x = torch.rand(4, 1, 28, 28)
    fast = project.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, baseline(x), atol=1e-5)


# The experiments' functions, as issue 14 names them: exported at the top of `cnn` with the issue's signatures.
EXPERIMENT_SIGNATURES = {
    "edited_model": "(model, kernels=None, ablate=None)",
    "ablation_sweep": "(model, images, labels, stage",
    "transform_image": "(image, shift=(0, 0), rotate=0.0, scale=1.0, thickness=0, noise=0.0, seed=0",
    "robustness_curve": "(model, images, labels, kind, values",
    "adversarial": "(model, image, target=None, epsilon=0.1, steps=20)",
}


@pytest.mark.parametrize("name, starts", sorted(EXPERIMENT_SIGNATURES.items()))
def test_the_experiments_are_exported_with_the_issues_signatures(name, starts):
    import inspect
    import re

    import cnn

    assert name in cnn.__all__
    # Annotations stripped: "(model: nn.Module, kernels=None" reads "(model, kernels=None".
    parameters = []
    for parameter in inspect.signature(getattr(cnn, name)).parameters.values():
        parameters.append(parameter.replace(annotation=inspect.Parameter.empty))
    shown = str(inspect.Signature(parameters))
    assert re.sub(r"\s+", " ", shown).startswith(starts), shown
