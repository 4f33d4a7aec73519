"""cnn.health: layer health while training, checked against brute force and torch's own gradients (SYNTHETIC data)."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn.config import ARTICLE, FAST, SOFTMAX
from cnn.health import (HISTOGRAM_BINS, ActivationTally, HealthMonitor, _rows, activation_health, covering_limit,
                        gradient_norms, health_layers, histogram, weight_histograms, widen)
from cnn.jobs import JobManager
from cnn.model import NETWORKS, build_model
from cnn.train import Callback, evaluate, train
from tests.conftest import synthetic_mnist
from tests.test_app_pages import app  # noqa: F401  (the AppTest fixture: a fresh job manager and runs folder)

CPU = torch.device("cpu")


def config_for(network: str, **changes):
    """A tiny run of network on the synthetic data: its default recipe (softmax regression's from zeros)."""
    base = SOFTMAX if network == "softmax" else FAST if network == "lenet" else ARTICLE
    return base.replace(architecture=network, **changes)


def weighted_stages(network: str) -> list[str]:
    """The names of a network's conv and linear stages, read here from its declaration."""
    return [stage.name for stage in NETWORKS[network].make.stages if stage.kind in ("conv", "linear")]


def relu_keys(model) -> dict[str, str]:
    """{layer: forward_with_activations' key of the ReLU right after it}, walked here from the stages."""
    keys, layer = {}, None
    for stage in model.stages:
        if stage.kind in ("conv", "linear"):
            layer = stage.name
        elif stage.kind == "relu" and layer is not None and layer not in keys:
            keys[layer] = stage.activation
    return keys


def brute_force_dead(model, images: torch.Tensor) -> dict[str, float]:
    """Per layer with a ReLU: the share of its ReLU's values that are 0 for every image, one image at a time,
    through forward_with_activations in eval mode on a copy."""
    model = copy.deepcopy(model).eval()
    fired: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for image in images:
            acts = model.forward_with_activations(image.float().div(255)[None, None])
            for layer, key in relu_keys(model).items():
                now = acts[key][0] > 0
                fired[layer] = fired[layer] | now if layer in fired else now
    return {layer: 1.0 - fired[layer].float().mean().item() for layer in fired}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_dead_relu_fraction_matches_a_brute_force_count(network):
    generator = torch.Generator().manual_seed(1)
    model = build_model(config_for(network, init_std=0.05), generator=generator).eval()
    layers = health_layers(model)
    if layers[0].kind == "conv":  # filters with only negative weights never fire on images >= 0: surely dead
        with torch.no_grad():
            getattr(model, layers[0].module).weight[:2] = -getattr(model, layers[0].module).weight[:2].abs()
    images = synthetic_mnist(n_train=10, n_test=23).test_images
    measured = activation_health(model, images, batch_size=7)  # 23 images in batches of 7, 7, 7, 2
    expected = brute_force_dead(model, images)
    assert sorted(expected) == sorted(name for name, frame in measured.items() if frame["dead"] is not None)
    for layer, fraction in expected.items():
        assert measured[layer]["dead"] == pytest.approx(fraction, abs=1e-6), layer
    if layers[0].kind == "conv":
        assert measured[layers[0].name]["dead"] >= 2 / getattr(model, layers[0].module).out_channels


@pytest.mark.parametrize("network", ["cnn", "lenet"])
def test_a_training_layout_measures_what_numpy_and_brute_force_count(network):
    """A training model's maps are channels_last (train() lays conv networks out so), which activation_health reads
    in memory order without copying: its counts must still be numpy's histogram of each layer's outputs, its RMS
    theirs, and its dead ReLUs the brute-force count."""
    model = build_model(config_for(network, init_std=0.05), generator=torch.Generator().manual_seed(2))
    model = model.to(memory_format=torch.channels_last).eval()
    images = synthetic_mnist(n_train=10, n_test=12).test_images
    measured = activation_health(model, images, batch_size=5, histogram_images=12)
    first = health_layers(model)[0].name
    assert measured[first]["units"] > 0
    maps = getattr(model, health_layers(model)[0].module)(images[:2].float().div(255)[:, None].contiguous(
        memory_format=torch.channels_last))
    assert not maps.is_contiguous() and _rows(maps).data_ptr() == maps.data_ptr()  # read in place, not copied
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        outputs = reference.forward_with_activations(images.float().div(255)[:, None])
    own = {stage.name for stage in model.stages if stage.activation == stage.name}  # recorded before their ReLU
    assert first in own
    for layer, frame in measured.items():
        if layer not in own:
            continue
        values = outputs[layer].double().numpy().ravel()
        counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(-frame["limit"], frame["limit"]))
        assert np.abs(np.asarray(frame["counts"]) - counts).sum() <= 2, layer  # float32 vs float64 edges
        assert frame["values"] == values.size
        assert frame["sum_squares"] == pytest.approx(float((values ** 2).sum()), rel=1e-4), layer
    for layer, fraction in brute_force_dead(model, images).items():
        assert measured[layer]["dead"] == pytest.approx(fraction, abs=1e-6), layer


@pytest.mark.parametrize("network", ["cnn", "lenet", "mlp"])
def test_an_evaluation_through_a_tally_answers_as_the_model_and_counts_its_first_images(network):
    """The evaluation passes its first images through the tally: its predictions must still be the model's own
    (a contiguous copy's plain forward), and the tally's counts numpy's histogram and the brute-force dead ReLUs of
    exactly those images, however the evaluation's batches cut them."""
    model = build_model(config_for(network, init_std=0.05), generator=torch.Generator().manual_seed(3))
    if network != "mlp":
        model = model.to(memory_format=torch.channels_last)  # as train() lays it out
    data = synthetic_mnist(n_train=10, n_test=30)
    tally = ActivationTally(model, histogram_images=7, images=17)  # 17 of 30, in batches of 6: 6, 6, then 5 of 6
    result = evaluate(model, data.test_images, data.test_labels, batch_size=6, tally=tally)
    assert tally.counted == 17 and not tally.wants_more()
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        assert torch.equal(result["predictions"], reference(data.test_images.float().div(255)[:, None]).argmax(1))
        outputs = reference.forward_with_activations(data.test_images[:7].float().div(255)[:, None])
    measured = tally.result()
    own = {stage.name for stage in model.stages if stage.activation == stage.name}  # recorded before their ReLU
    for layer, frame in measured.items():
        if layer in own:
            values = outputs[layer].double().numpy().ravel()
            counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(-frame["limit"], frame["limit"]))
            assert np.abs(np.asarray(frame["counts"]) - counts).sum() <= 2, layer  # float32 vs float64 edges
            assert frame["values"] == values.size, layer
    expected = brute_force_dead(model, data.test_images[:17])
    assert sorted(expected) == sorted(name for name, frame in measured.items() if frame["dead"] is not None)
    for layer, fraction in expected.items():
        assert measured[layer]["dead"] == pytest.approx(fraction, abs=1e-6), layer
    bf16 = ActivationTally(model, images=17)
    evaluate(model, data.test_images, data.test_labels, batch_size=6, precision="bf16", tally=bf16)
    assert bf16.counted == 0  # layer health is measured in float32: a bf16 evaluation leaves it to its own pass


class RefusingMonitor(HealthMonitor):
    """A HealthMonitor that never shares an evaluation's pass: it measures every time with its own."""

    def evaluation_tally(self, step, full, model, images):
        return None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_health_at_an_evaluation_is_measured_in_the_evaluations_own_pass(tiny_data, monkeypatch, precision):
    """At each evaluation it measures, the monitor reads what the evaluation's pass counted: the same records as
    a monitor that passes its images through the model again, with one pass fewer each time. A bf16 run's quick
    evaluations are not float32, so there it measures with its own pass, except at the epoch's float32 test."""
    import cnn.health

    passes = []
    own_pass = cnn.health.activation_health
    monkeypatch.setattr(cnn.health, "activation_health", lambda *a, **k: passes.append(1) or own_pass(*a, **k))
    config = ARTICLE.replace(batch_size=32, epochs=2, eval_every=3, eval_subset=64, precision=precision)
    records = {}
    for monitor_class in (HealthMonitor, RefusingMonitor):
        monitor = monitor_class(tiny_data.test_images[:64], measure_every=1)  # each evaluation
        passes.clear()
        train(config, tiny_data, callbacks=[monitor], device=CPU)
        records[monitor_class] = (monitor.snapshot(), len(passes))
    shared, shared_passes = records[HealthMonitor]
    alone, alone_passes = records[RefusingMonitor]
    per_epoch = -(-len(tiny_data.train_images) // 32)
    ends = [per_epoch, 2 * per_epoch]
    steps = [point["step"] for point in alone["evaluations"]]
    assert steps == sorted({0, *range(3, 2 * per_epoch + 1, 3), *ends})  # the start, quick evaluations, epochs' tests
    assert alone_passes == len(steps)
    quick = sum(1 for step in steps[1:] if step not in ends) if precision == "bf16" else 0
    assert shared_passes == 1 + quick  # the start's measure, and the bf16 quick evaluations'
    assert shared["evaluations"] == alone["evaluations"]
    for name, frame in alone["latest"]["activations"].items():
        mine = shared["latest"]["activations"][name]
        assert mine["counts"] == frame["counts"] and mine["dead"] == frame["dead"], name
        assert mine["sum_squares"] == pytest.approx(frame["sum_squares"], rel=1e-5), name


def test_histogram_counts_every_value_and_equals_numpys():
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 0.3
    limit = covering_limit(float(values.abs().max()))
    assert limit >= values.abs().max() and limit / 2 < values.abs().max()  # the smallest power of two that holds them
    counts = histogram(values, limit)
    assert counts.sum() == values.numel()
    reference, _ = np.histogram(values.numpy(), bins=HISTOGRAM_BINS, range=(-limit, limit))
    assert np.abs(counts - reference).sum() <= 2  # float32 vs float64 edges may move a value on an edge


def test_widening_equals_binning_in_the_wider_range():
    centres = (torch.arange(HISTOGRAM_BINS) - HISTOGRAM_BINS / 2 + 0.5) / (HISTOGRAM_BINS / 2)  # bin centres on [-1, 1]
    values = centres.repeat_interleave(torch.arange(1, HISTOGRAM_BINS + 1))  # a different count in every bin
    for times in (1, 2, 3):
        assert widen(histogram(values, 1.0), times).tolist() == histogram(values, 2.0 ** times).tolist()


@pytest.mark.parametrize("network", list(NETWORKS))
def test_weight_and_activation_histograms_count_every_value(network):
    model = build_model(config_for(network, init_std=0.05), generator=torch.Generator().manual_seed(0))
    for layer, frame in weight_histograms(model).items():
        weight = getattr(model, next(item.module for item in health_layers(model) if item.name == layer)).weight
        assert sum(frame["counts"]) == frame["values"] == weight.numel() and frame["nonfinite"] == 0
        assert frame["limit"] >= weight.abs().max()
    images = synthetic_mnist(n_train=10, n_test=20).test_images
    # Start from ranges far too small: every batch must widen them, and the earlier counts with them.
    tiny = {layer.name: 2.0 ** -20 for layer in health_layers(model)}
    acts = model.eval().forward_with_activations(images[:1].float().div(255)[:, None])
    for layer, frame in activation_health(model, images, limits=tiny, batch_size=6).items():
        assert sum(frame["counts"]) == frame["values"]
        per_image = acts[layer].numel() if layer in acts else None
        if per_image is not None:  # a recorded layer: its values per image, times the images
            assert frame["values"] == per_image * len(images)


@pytest.mark.parametrize("network", ["cnn", "lenet", "mlp"])
def test_gradient_norms_equal_torchs_norms_of_the_gradients(network):
    model = build_model(config_for(network, init_std=0.05), generator=torch.Generator().manual_seed(0)).eval()
    data = synthetic_mnist(n_train=10, n_test=16)
    x, y = data.test_images.float().div(255)[:, None], data.test_labels
    F.cross_entropy(model(x), y).backward()
    # Independently: torch.autograd.grad of a fresh forward, per module, weights and biases as one vector.
    modules = {name: getattr(model, name) for name in dict(model.named_children())}
    expected = {}
    for stage in model.stages:
        if stage.kind in ("conv", "linear"):
            params = list(modules[stage.module].parameters())
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
            expected[stage.name] = torch.cat([g.flatten() for g in grads]).double().norm().item()
    measured = gradient_norms(model)
    assert sorted(measured) == sorted(expected) == sorted(weighted_stages(network))
    for name, norm in expected.items():
        assert norm > 0 and measured[name] == pytest.approx(norm, rel=1e-5), name


class GradientSteps(Callback):
    gradients_every = 3

    def __init__(self):
        self.steps, self.norms = [], []

    def on_gradients(self, step, model):
        self.steps.append(step)
        self.norms.append(sum(float(p.grad.norm()) for p in model.parameters()))


def test_the_loop_fires_on_gradients_every_nth_step_with_gradients_present(tiny_data):
    listener = GradientSteps()
    result = train(ARTICLE.replace(batch_size=64, epochs=2, eval_every=0), tiny_data, callbacks=[listener], device=CPU)
    assert result.steps == 16 and listener.steps == [3, 6, 9, 12, 15]
    assert all(norm > 0 for norm in listener.norms)


@pytest.mark.parametrize("network", ["cnn", "mlp"])  # both draw dropout masks from the run's generator
def test_listening_to_health_does_not_change_training_bit_for_bit(tiny_data, network):
    config = config_for(network, batch_size=32, epochs=1, eval_every=4, eval_subset=64)
    alone = train(config, tiny_data, device=CPU).model.state_dict()
    monitor = HealthMonitor(tiny_data.test_images[:64], every=1, measure_every=1)  # the most it could disturb
    watched = train(config, tiny_data, callbacks=[monitor], device=CPU).model.state_dict()
    assert len(monitor.snapshot()["gradients"]) == 16 and len(monitor.snapshot()["evaluations"]) == 5
    assert alone.keys() == watched.keys()
    for name in alone:
        assert torch.equal(alone[name], watched[name]), name


@pytest.mark.parametrize("network", list(NETWORKS))
def test_a_job_records_health_for_every_layer_of_every_network(tmp_path, network):
    data = synthetic_mnist(n_train=256)
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs", device=CPU)
    config = config_for(network, batch_size=16, epochs=1, eval_every=8, eval_subset=64)
    job = manager.wait(manager.submit(config, f"health-{network}", owner="alice"), timeout=120)
    manager.stop_all()
    assert job["status"] == "finished"
    health, layers = job["health"], weighted_stages(network)
    assert [layer["name"] for layer in health["layers"]] == layers
    assert [point["step"] for point in health["gradients"]] == [10]  # 16 steps, one reading every 10
    assert all(sorted(point["norms"]) == sorted(layers) for point in health["gradients"])
    assert [point["step"] for point in health["evaluations"]] == [0, 16]  # the start and the epoch's end
    with_relu = [layer["name"] for layer in health["layers"] if layer["relu"]]
    assert with_relu == layers[:-1]  # every layer but the output feeds a ReLU
    assert all(sorted(point["dead"]) == sorted(with_relu) for point in health["evaluations"])
    assert health["latest"]["step"] == 16
    for kind in ("weights", "activations"):
        assert sorted(health["first"][kind]) == sorted(health["latest"][kind]) == sorted(layers)
        for frame in health["latest"][kind].values():
            assert sum(frame["counts"]) == frame["values"] > 0
    assert all(frame["values"] == 64 * np.prod(shape) for frame, shape in zip(
        (health["latest"]["activations"][name] for name in layers), output_shapes(network, layers)))


def output_shapes(network: str, layers: list[str]) -> list[tuple]:
    """Each layer's output shape for one image, from a plain forward of its stages."""
    model = build_model(config_for(network)).eval()
    x, shapes = torch.zeros(1, 1, 28, 28), {}
    with torch.no_grad():
        for stage in model.stages:
            x = model._run_stage(stage, x)
            shapes[stage.name] = tuple(x.shape[1:])
    return [shapes[name] for name in layers]


def test_train_page_shows_layer_health_for_a_finished_synthetic_run(app, monkeypatch):  # noqa: F811
    import pages.shared

    data = synthetic_mnist(n_train=256)
    monkeypatch.setattr(pages.shared, "require_data", lambda dataset: data)  # before the manager is built
    manager = pages.shared.job_manager()
    job = manager.wait(manager.submit(ARTICLE.replace(batch_size=16, epochs=1, eval_every=8, eval_subset=64),
                                      "health-run", owner="someone"), timeout=120)
    assert job["status"] == "finished"
    app.switch_page("pages/train.py").run()
    assert not app.exception and "Layer health" not in [header.value for header in app.subheader]  # until asked
    app.toggle(key="kept.health").set_value(True).run()
    assert not app.exception
    assert "Layer health" in [header.value for header in app.subheader]
    captions = " ".join(caption.value for caption in app.caption)
    assert "At the start (weights drawn from N(0, 0.01)), conv1's outputs were" in captions
    assert "ReLUs never fire on the test subset" in captions
    specs = [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]
    titles = [spec.get("title") for spec in specs]
    assert "gradient norm per layer" in titles and "dead ReLUs per layer" in titles
    assert titles.count("conv1") == 2 and titles.count("logits") == 2  # its weights and its outputs
    gradient = next(spec for spec in specs if spec.get("title") == "gradient norm per layer")
    assert gradient["encoding"]["y"]["scale"]["type"] == "log"


def test_layer_health_turned_on_before_the_first_measure_says_so(app, monkeypatch):  # noqa: F811
    """A run whose layers are known but not yet measured (the toggle turned on in the seconds after Start): a
    sentence, not a KeyError (the teacher's walk found one in the server log)."""
    import pages.shared

    data = synthetic_mnist(n_train=256)
    monkeypatch.setattr(pages.shared, "require_data", lambda dataset: data)
    manager = pages.shared.job_manager()
    job = manager.wait(manager.submit(ARTICLE.replace(batch_size=16, epochs=1, eval_every=8, eval_subset=64),
                                      "early-run", owner="someone"), timeout=120)
    snapshot = manager.snapshot
    early = {**job, "status": "running", "health": {**job["health"], "latest": {}}}  # as before step 0's measure
    monkeypatch.setattr(type(manager), "snapshot", lambda self, job_id: early if job_id == job["id"]
                        else snapshot(job_id))
    app.switch_page("pages/train.py").run()
    app.toggle(key="kept.health").set_value(True).run()
    assert not app.exception
    assert "Measuring the layers as they start..." in [caption.value for caption in app.caption]
