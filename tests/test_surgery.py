"""Filter surgery (cnn.surgery and its section of the Experiments page). Unit tests use SYNTHETIC images and freshly
drawn networks (what is tested is the arithmetic of an edit, not what a trained network learned); the `mnist` tests
use the bundled model and the real test set, as the page does."""
from __future__ import annotations

import copy
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from itertools import takewhile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn.config import ARTICLE, FAST
from cnn.data import to_float
from cnn.model import build_model
from cnn.surgery import (CLASSIC_KERNELS, MAX_WEIGHT, ablatable_layers, ablation_sweep, checked_edits,
                         classic_kernel, compare_image, edited_map_pairs, edited_model, editable_kernels,
                         kernel_rows, network_shape, parse_kernel, parse_row, removed_instead, result_sentence,
                         sweep_rows, sweep_sentence, weight_of)
from cnn.train import evaluate
from tests.conftest import synthetic_mnist
from tests.test_app_pages import app, save_run  # noqa: F401 - app: the AppTest fixture of the app's pages


def network(name: str, seed: int = 0, biases: bool = True) -> torch.nn.Module:
    """A freshly drawn network (He init: its answers differ from class to class), in eval mode; its biases, where it
    has them, drawn too (they start at 0), so that 'weights and bias zeroed' is tested and not given."""
    model = build_model(FAST.replace(architecture=name), torch.Generator().manual_seed(seed)).eval()
    if biases:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name_, parameter in model.named_parameters():
                if name_.endswith("bias"):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def image(seed: int = 0) -> torch.Tensor:
    """(1, 1, 28, 28) SYNTHETIC image in [0, 1]: a bright bar on noise, with edges in both directions."""
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.2
    x[..., 8:20, 10:15] = 1.0
    return x


# ---------------------------------------------------------------- a kernel set by hand

@pytest.mark.parametrize("name, side, padding", [("cnn", 3, 1), ("lenet", 5, 2), ("one-conv", 3, 1)])
def test_a_sobel_kernel_set_by_hand_gives_the_map_conv2d_gives(name, side, padding):
    model = network(name)
    sobel = np.zeros((side, side), dtype=np.float32)
    sobel[side // 2 - 1:side // 2 + 2, side // 2 - 1:side // 2 + 2] = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    edited = edited_model(model, kernels={("conv1", 3): sobel.tolist()})
    x = image()
    result = compare_image(model, edited, x)
    bias = model.conv1.bias[3] if model.conv1.bias is not None else 0.0
    expected = (F.conv2d(x, torch.from_numpy(sobel)[None, None], padding=padding)[0, 0] + bias).detach().numpy()
    np.testing.assert_allclose(result.edited_maps[3], expected, atol=1e-5)
    assert np.abs(expected).max() > 1  # the bar's edges: a map that a wrong kernel would not give
    others = [k for k in range(len(result.maps)) if k != 3]
    np.testing.assert_array_equal(result.edited_maps[others], result.maps[others])  # only filter 3 changed
    # and the model's own forward agrees with the page's maps
    with torch.no_grad():
        np.testing.assert_allclose(edited.forward_with_activations(x)["conv1"][0, 3].numpy(), expected, atol=1e-5)


def test_the_identity_kernel_copies_the_image_and_a_classic_fits_a_larger_kernel():
    model = network("cnn")
    x = image(1)
    edited = edited_model(model, kernels={("conv1", 0): classic_kernel("Identity")})
    np.testing.assert_allclose(compare_image(model, edited, x).edited_maps[0], x[0, 0].numpy(), atol=1e-6)
    five = classic_kernel("Sobel y", 5)
    assert five.shape == (5, 5) and np.abs(five).sum() == 8 and five[0].sum() == 0 and five[:, 0].sum() == 0
    np.testing.assert_array_equal(five[1:4, 1:4], np.array(CLASSIC_KERNELS["Sobel y"].values))
    for name, classic in CLASSIC_KERNELS.items():
        assert np.array(classic.values).shape == (3, 3) and classic.finds.endswith("."), name
    assert math.isclose(float(classic_kernel("Gaussian blur").sum()), 1.0, rel_tol=1e-6)  # a blur keeps brightness


# ---------------------------------------------------------------- ablation

def recorded_after(model, name: str) -> list[str]:
    """The activations stage name's output shows up in: its own, then its ReLU's and its pool's (up to the next
    layer), read from the declared stages here."""
    start = next(i for i, stage in enumerate(model.stages) if stage.name == name)
    following = takewhile(lambda stage: stage.kind not in ("conv", "linear", "flatten"), model.stages[start + 1:])
    return [a for a in [model.stages[start].activation] + [stage.activation for stage in following] if a]


def most_active(values: torch.Tensor, count: int) -> list[int]:
    """The count channels of (N, C, H, W) or units of (N, C) with the largest mean value."""
    means = (values.flatten(2).mean(2) if values.dim() == 4 else values).mean(0)
    return torch.argsort(means, descending=True)[:count].tolist()


@pytest.mark.parametrize("name, removed", [
    ("cnn", {"conv1": 1, "conv2": 2, "conv3": 1, "fc": 2}),
    ("lenet", {"conv1": 1, "conv2": 1, "fc1": 2, "fc2": 1}),  # biases too
    ("mlp", {"fc": 2}),
    ("one-conv", {"conv1": 1, "fc": 1})])
def test_ablating_a_filter_or_unit_zeroes_its_map_through_relu_and_pooling(name, removed):
    model = network(name)
    x = torch.cat([image(0), image(1), torch.rand(14, 1, 28, 28, generator=torch.Generator().manual_seed(2))])
    with torch.no_grad():
        before = model.forward_with_activations(x)
    # the most active ones after ReLU and pooling: a unit that is 0 anyway would prove nothing
    ablate = {stage: most_active(before[recorded_after(model, stage)[-1]], count) for stage, count in removed.items()}
    with torch.no_grad():
        after = edited_model(model, ablate=ablate).forward_with_activations(x)
    for stage, indices in ablate.items():
        for activation in recorded_after(model, stage):
            for k in indices:
                assert np.abs(before[activation][:, k].numpy()).max() > 0, (activation, k)  # it was not 0 before
                assert (after[activation][:, k] == 0).all(), (activation, k)
    assert not torch.equal(before["logits"], after["logits"])


def test_edits_on_the_shared_model_from_eight_threads_change_only_the_copies():
    model = network("cnn").train()  # a mode of its own, and gradients, which nothing may touch
    F.cross_entropy(model(image()), torch.tensor([3])).backward()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}

    def edit(i: int):
        kernel = np.full((3, 3), i / 10, dtype=np.float32)
        return i, kernel, edited_model(model, kernels={("conv1", i): kernel}, ablate={"conv2": [i, 63 - i]})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(edit, range(8)))
    for i, kernel, edited in results:
        np.testing.assert_array_equal(edited.conv1.weight[i, 0].numpy(), kernel)
        assert (edited.conv2.weight[[i, 63 - i]] == 0).all()
        kept = [c for c in range(64) if c not in (i, 63 - i)]
        assert torch.equal(edited.conv2.weight[kept], weights["conv2.weight"][kept])
        assert torch.equal(edited.fc.weight, weights["fc.weight"])
        assert not edited.training and not any(p.requires_grad for p in edited.parameters())
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, grads[k]) and p.requires_grad, k


# ---------------------------------------------------------------- which filters matter

@pytest.mark.parametrize("name, stages", [("cnn", ["conv1", "conv3"]), ("lenet", ["conv1", "conv2", "fc1", "fc2"]),
                                          ("mlp", ["fc"]), ("one-conv", ["conv1"])])
def test_the_sweep_equals_evaluating_each_edited_copy(name, stages):
    data = synthetic_mnist(n_train=0, n_test=200, seed=3)
    model = network(name, seed=5)
    images = to_float(data.test_images)
    for stage in stages:
        done = []
        sweep = ablation_sweep(model, images, data.test_labels, stage, progress=done.append, fast=False, batch_size=64)
        reference = [evaluate(edited_model(model, ablate={stage: [k]}), data.test_images, data.test_labels)["accuracy"]
                     for k in range(ablatable_layers(model)[stage])]
        np.testing.assert_array_equal(sweep, np.array(reference))
        assert len(set(sweep.tolist())) > 1, stage  # removals that differ: the comparison can tell them apart
        assert done[-1] == 1.0 and done == sorted(done) and len(done) == 4  # one report per batch of 64


@pytest.mark.mnist
def test_conv1s_sweep_on_the_bundled_model_matches_quick_accuracy_up_to_bf16(real_mnist):
    import cnn
    from cnn.experiments import quick_accuracy

    model, _ = cnn.load_model("models/article-cnn.pt")
    images, labels = to_float(real_mnist.test_images[:2000]), real_mnist.test_labels[:2000]
    sweep = ablation_sweep(model, images, labels, "conv1")
    reference = np.array([quick_accuracy(edited_model(model, ablate={"conv1": [k]}), images, labels)
                          for k in range(32)])
    assert np.abs(sweep - reference).max() <= 3 / 2000  # a few images on a knife's edge round differently in bf16
    assert sweep.min() < quick_accuracy(model, images, labels)  # some filter matters


def test_sweep_rows_put_the_most_harmful_removal_first():
    rows = sweep_rows(np.array([0.9, 0.5, 0.8]), 0.95)
    assert [r["filter"] for r in rows] == [1, 2, 0]
    assert [r["drop"] for r in rows] == [45.0, 15.0, 5.0]


def test_result_sentences_read_the_numbers():
    assert "costs 12.00 points (from 95.00% to 83.00%)" in result_sentence({}, {"conv1": (5,)}, 0.95, 0.83)
    assert result_sentence({}, {"conv1": (5,)}, 0.95, 0.83).startswith("Removing filter 5 of conv1")
    assert "changes almost nothing" in result_sentence({("conv1", 2): None}, {}, 0.95, 0.9501)
    assert "and 2 more" in result_sentence({}, {"fc": tuple(range(10))}, 0.9, 0.5)


def test_the_classics_are_named_alike():
    assert list(CLASSIC_KERNELS) == ["Sobel x", "Sobel y", "Gaussian blur", "Sharpen", "Laplacian", "Identity", "Zero"]


def test_a_loud_hand_set_kernel_that_costs_more_than_removing_the_filter_says_so_and_why():
    """The walk's numbers: zeroing filter 0 cost +0.00 points, a Sobel on it 7.7: the old sentence said the network
    'relied on it and has nothing else', which removing it (free) contradicts."""
    model = network("cnn")
    trained = float(np.abs(model.conv1.weight[0, 0].detach().numpy()).max())
    assert trained < 1  # He init of 9 inputs: a Sobel's 2 is several times larger
    sobel = {("conv1", 0): classic_kernel("Sobel x")}
    sentence = result_sentence(sobel, {}, 0.9928, 0.9158, model, removed=0.9928)
    assert sentence.startswith("Setting filter 0 of conv1 by hand costs 7.70 points (from 99.28% to 91.58%)")
    assert "more than removing it instead would (0.00 points)" in sentence
    assert f"its numbers reach 2, the trained filter's only {trained:.2f}" in sentence
    assert f"about {2 / trained:.0f} times as strong" in sentence and "floods the next layer" in sentence
    assert "relied on" not in sentence and "nothing else" not in sentence
    # removing it would cost more: no such comparison; a kernel of the trained scale is not "flooding"
    quiet = {("conv1", 0): (model.conv1.weight[0, 0].detach().numpy() * -1).tolist()}
    sentence = result_sentence(quiet, {}, 0.99, 0.90, model, removed=0.85)
    assert "more than removing" not in sentence and "floods" not in sentence and "relied on" not in sentence
    assert "tuned to the trained one" in sentence


def test_removals_use_the_layers_part_word_and_agree_in_number():
    model = network("cnn")
    sentence = result_sentence({}, {"fc": (3, 7)}, 0.99, 0.90, model)
    assert sentence.startswith("Removing units 3, 7 of fc costs 9.00 points") and "relied on them" in sentence
    assert "filters" not in sentence
    one = result_sentence({}, {"fc": (3,)}, 0.99, 0.90, model)
    assert one.startswith("Removing unit 3 of fc") and "relied on it " in one
    several = result_sentence({}, {"conv2": (1,), "fc": (3,)}, 0.99, 0.90, model)
    assert "removing filter 1 of conv2; removing unit 3 of fc" in several.lower() and "relied on them" in several
    kept = result_sentence({}, {"fc": (3,)}, 0.99, 0.9899, model)
    assert "other units that find what was lost" in kept
    assert result_sentence({("conv1", 0): np.ones((3, 3)), ("conv1", 4): np.ones((3, 3))}, {}, 0.99, 0.5,
                           model).startswith("Setting filters 0, 4 of conv1 by hand")
    assert removed_instead({("conv1", 0): None, ("conv1", 4): None}, {"conv1": (4, 9), "fc": (1,)}) == {
        "conv1": (0, 4, 9), "fc": (1,)}


def rows_of(drops: list[float], original: float = 0.98) -> list[dict]:
    return sweep_rows(original - np.array(drops) / 100, original)


def test_the_sweep_sentence_says_what_its_numbers_say():
    """LeNet's walk: a 39-point drop among 6 filters was called 'rarely a disaster'."""
    lenet = sweep_sentence(rows_of([39.0, 12.0, 8.0, 3.0, 0.5, 0.3]), "conv1", 0.98)
    assert lenet.startswith("Removing filter 0 of conv1 alone hurts most: 59.0% instead of 98.0% (39.0 points).")
    assert "0 of 6 cost 0.1 points or less, and 3 cost 5 points or more" in lenet
    assert "rarely a disaster" not in lenet and "many of the 6 filters carry" in lenet
    few = sweep_sentence(rows_of([20.0] + [0.0] * 31), "conv1", 0.98)
    assert "31 of 32 cost 0.1 points or less, but 1 costs 5 points or more" in few and "a few filters" in few
    spread = sweep_sentence(rows_of([0.5, 0.2] + [0.0] * 30), "conv1", 0.98)
    assert "30 of 32 cost 0.1 points or less, and none a whole point" in spread and "rarely a disaster" in spread
    some = sweep_sentence(rows_of([2.0, 1.5] + [0.0] * 30), "conv1", 0.98)
    assert "none 5 points or more" in some and "rarely a disaster" not in some
    units = sweep_sentence(rows_of([0.3, 0.0]), "fc", 0.98, "unit")
    assert units.startswith("Removing unit 0 of fc") and "many units" in units and "filter" not in units


# ---------------------------------------------------------------- the kernel editor's rows

def test_kernel_rows_read_back_as_the_kernel():
    for name in CLASSIC_KERNELS:
        for side in (3, 5):
            kernel = classic_kernel(name, side)
            np.testing.assert_array_equal(parse_kernel(kernel_rows(kernel), side), kernel)  # 1/16 stays exact
    assert kernel_rows(classic_kernel("Sobel x")) == ["-1  0  1", "-2  0  2", "-1  0  1"]
    trained = network("lenet").conv1.weight[2, 0].detach().numpy()
    rows = kernel_rows(trained)
    assert len(rows) == 5 and all(len(row.split()) == 5 and len(row) <= 45 for row in rows)  # 5 numbers fit
    np.testing.assert_allclose(parse_kernel(rows, 5), trained, atol=5e-5)  # 4 decimals
    assert kernel_rows([[-1e-7, 0.0, 1.23456]]) == ["0  0  1.2346"]


@pytest.mark.parametrize("text, values", [("-1 0 1", [-1, 0, 1]), ("  -1,0 ,  1 ", [-1, 0, 1]),
                                          ("0.5;-2.25;1e-1", [0.5, -2.25, 0.1]), ("10 -10 0", [10, -10, 0])])
def test_good_rows_parse(text, values):
    assert parse_row(text, 3, 1) == values


@pytest.mark.parametrize("text, says", [
    ("1 2", "Row 2 needs 3 numbers, found 2"), ("1 2 3 4", "Row 2 needs 3 numbers, found 4"),
    ("1,5 0 -1", "found 4: type them apart, like \"0  0  0\". Write decimals with a point: 1.5, not 1,5."),
    ("", "Row 2 needs 3 numbers, found 0"), ("1 two 3", "Row 2: 'two' is not a number."),
    ("1 nan 3", "Row 2: 'nan' is not a number the network can use"), ("inf 0 0", "Row 2: 'inf' is not a number"),
    ("1 11 0", "Row 2: 11 is too large; a kernel's numbers must be between -10 and 10"),
    ("-1e308 0 0", "too large"), ("1 " * 1000, "Row 2 is not 3 numbers"), (None, "Row 2 is not 3 numbers"),
    (["1", "2", "3"], "Row 2 is not 3 numbers")])
def test_bad_rows_end_in_our_sentences(text, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_row(text, 3, 2)
    assert MAX_WEIGHT == 10


def test_a_bad_kernel_names_its_first_bad_row():
    with pytest.raises(ValueError, match="Row 3 needs 3 numbers"):
        parse_kernel(["0 0 0", "0 0 0", "0 0"], 3)
    with pytest.raises(ValueError, match="3 rows of 3 numbers"):
        parse_kernel(["0 0 0"] * 4, 3)
    with pytest.raises(ValueError, match="3 rows of 3 numbers"):
        parse_kernel("0 0 0", 3)


def test_enlarged_maps_show_the_hand_set_filters_on_one_scale():
    model = network("cnn")
    kernels = {("conv1", k): classic_kernel("Sobel x") for k in (7, 2, 9, 4, 30)}
    result = compare_image(model, edited_model(model, kernels=kernels), image())
    pairs = edited_map_pairs(model, result, kernels, limit=4, size=56)
    assert [k for k, _, _ in pairs] == [2, 4, 7, 9]  # at most 4, in order
    k, before, after = pairs[0]
    assert before.shape == after.shape == (56, 56, 3) and before.dtype == np.uint8
    # one colour scale: the Sobel's map is far larger, so the original's pixels sit near the neutral colour
    from cnn.features import signed_rgb
    scale = max(np.abs(result.maps[2]).max(), np.abs(result.edited_maps[2]).max())
    np.testing.assert_array_equal(before[::2, ::2], signed_rgb(result.maps[2], scale))
    np.testing.assert_array_equal(after[::2, ::2], signed_rgb(result.edited_maps[2], scale))
    assert edited_map_pairs(network("mlp"), compare_image(network("mlp"), network("mlp"), image()), {}) == []


def test_epochs_of_one_network_share_a_shape_and_other_networks_do_not():
    assert network_shape(network("cnn", seed=1)) == network_shape(network("cnn", seed=2))
    assert network_shape(network("cnn")) != network_shape(network("lenet"))


# ---------------------------------------------------------------- bad input ends in our sentences

@pytest.mark.parametrize("kernels, ablate, says", [
    ({("conv1", 0): [0.0] * 10 ** 6}, None, "3x3 numbers"),
    ({("conv1", 0): np.zeros((1000, 1000))}, None, "3x3 numbers"),
    ({("conv1", 0): [[float("nan")] * 3] * 3}, None, "between -10 and 10"),
    ({("conv1", 0): [[1e6] * 3] * 3}, None, "between -10 and 10"),
    ({("conv1", 0): [["a", "b", "c"]] * 3}, None, "numbers only"),
    ({("conv1", 32): np.zeros((3, 3))}, None, "no filter of conv1 32"),
    ({("conv1", 1.5): np.zeros((3, 3))}, None, "chosen by its number"),
    ({("conv2", 0): np.zeros((3, 3))}, None, "read the image"),
    ({("conv9", 0): np.zeros((3, 3))}, None, "read the image"),
    ({f"k{i}": 0 for i in range(10 ** 5)}, None, "more edits than"),
    (None, {"conv2": list(range(10 ** 6))}, "at most that many"),
    (None, {"conv2": [64]}, "no filter or unit of conv2 64"),
    (None, {"conv2": "5"}, "at most that many"),
    (None, {"logits": [0]}, "no layer called 'logits'"),
    (None, {"conv9": [0]}, "no layer called 'conv9'"),
    ([1, 2], None, "not in the right form")])
def test_bad_edits_end_in_our_sentences(kernels, ablate, says):
    model = network("cnn")
    with pytest.raises(ValueError, match=re.escape(says)):
        edited_model(model, kernels=kernels, ablate=ablate)


def test_what_each_network_can_take():
    assert ablatable_layers(network("cnn")) == {"conv1": 32, "conv2": 64, "conv3": 128, "fc": 625}
    assert ablatable_layers(network("lenet")) == {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84}
    assert editable_kernels(network("lenet")) == {"conv1": (6, 5)}
    assert ablatable_layers(network("softmax")) == {} and editable_kernels(network("mlp")) == {}
    with pytest.raises(ValueError, match="no layer called 'conv1' whose filters or units can be removed .it has: none"):
        edited_model(network("softmax"), ablate={"conv1": [0]})
    with pytest.raises(ValueError, match="has no layer called 'fc2'"):
        ablation_sweep(network("mlp"), torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), "fc2")
    with pytest.raises(ValueError, match="values in"):
        ablation_sweep(network("cnn"), torch.full((2, 1, 28, 28), 2.0), torch.zeros(2, dtype=torch.long), "conv1")
    assert checked_edits(network("cnn"), ablate={"conv2": [5, 5, 1, np.int64(5)]})[1] == {"conv2": (1, 5)}
    assert [weight_of(v) for v in ("x", None, float("nan"), 1e9, -3.5)] == [0.0, 0.0, 0.0, 10.0, -3.5]


# ---------------------------------------------------------------- the page (AppTest; the app loads real MNIST)

def open_surgery(app):
    from pages.shared import kept

    app.session_state[kept("experiment_view")] = "surgery"
    app.switch_page("pages/experiments.py").run()
    assert not app.exception
    return app


def metrics(app) -> tuple[float, float]:
    values = {m.label.split(",")[0]: float(m.value.rstrip("%")) for m in app.metric}
    return values["Original"], values["Edited"]


def reference_accuracy(real_mnist, ablate: dict) -> float:
    """Float32 accuracy of the bundled model with the filters' rows zeroed here, by hand (not by cnn.surgery)."""
    import cnn

    model, _ = cnn.load_model("models/article-cnn.pt")
    model = copy.deepcopy(model)
    with torch.no_grad():
        for stage, indices in ablate.items():
            getattr(model, stage).weight[indices] = 0
    return 100 * evaluate(model, real_mnist.test_images, real_mnist.test_labels)["accuracy"]


@pytest.mark.mnist
def test_the_page_measures_an_edit_beside_the_original(app, real_mnist):
    from pages.shared import kept

    open_surgery(app)
    original, edited = metrics(app)
    assert original == edited
    removed = list(range(0, 32, 2))
    app.multiselect(key=kept("surgery_ablate.conv1")).set_value(removed).run()
    assert not app.exception
    original, edited = metrics(app)
    assert abs(edited - reference_accuracy(real_mnist, {"conv1": removed})) <= 0.05  # bf16 against float32
    assert edited < original - 0.5  # half of conv1 gone: a point lost here
    assert any(f"(from {original:.2f}% to {edited:.2f}%)" in m.value for m in app.markdown)
    app.selectbox(key=kept("surgery_source")).set_value("Sobel x").run()
    app.button(key="surgery_apply").click().run()
    assert not app.exception
    assert app.session_state[kept("surgery_kernels")] == {("conv1", 0): classic_kernel("Sobel x").tolist()}
    assert any(m.value.startswith("Setting filter 0 of conv1 by hand; removing filters 0, 2") for m in app.markdown)
    app.button(key="surgery_reset").click().run()
    assert metrics(app)[0] == metrics(app)[1]


@pytest.mark.mnist
def test_forged_edits_end_in_sentences(app):
    from pages.shared import kept

    open_surgery(app)
    forged = [(kept("surgery_kernels"), {("conv1", 0): [0.0] * 10 ** 6}, "3x3 numbers"),
              (kept("surgery_kernels"), {("conv1", 0): [[float("nan")] * 3] * 3}, "between -10 and 10"),
              (kept("surgery_kernels"), {("conv9", 0): [[0.0] * 3] * 3}, "read the image"),
              (kept("surgery_kernels"), "conv1", "not in the right form"),
              (kept("surgery_ablate.conv2"), list(range(10 ** 6)), "at most that many"),
              (kept("surgery_ablate.fc"), [625], "of fc")]
    for key, value, says in forged:
        app.session_state[key] = value
        app.run()
        assert not app.exception, says
        assert any(says in w.value for w in app.warning), (says, [w.value for w in app.warning])
        original, edited = metrics(app)
        assert original == edited, says  # the forged edit was cleared, not applied
    app.number_input(key=kept("surgery_filter")).set_value(10 ** 9).run()  # what a forged message sends
    assert not app.exception
    chosen = int(re.fullmatch(r"Apply to filter (\d+)", app.button(key="surgery_apply").label).group(1))
    assert 0 <= chosen <= 31  # Streamlit puts it back to its default, or the page clamps it
    for text, says in (("0 nan 0", "'nan' is not a number"), ("1e9 0 0", "too large"), ("0 0", "found 2"),
                       ("1 " * 150, "Row 2")):  # (Streamlit cuts that at max_chars)
        app.session_state[kept("surgery_row.1")] = "0 0 0"
        app.run()
        assert not app.button(key="surgery_apply").disabled
        app.session_state[kept("surgery_row.1")] = text  # what a forged message can send: any text, with a click
        app.button(key="surgery_apply").click().run()  # the callback parses again: nothing applied
        assert not app.exception
        assert ("conv1", chosen) not in app.session_state[kept("surgery_kernels")], text
        assert any(says in w.value for w in app.warning), (says, [w.value for w in app.warning])
        assert app.button(key="surgery_apply").disabled


@pytest.mark.mnist
@pytest.mark.parametrize("name, says", [("softmax", "nothing to remove"), ("mlp", "no convolution that reads")])
def test_networks_without_convolutions_say_so(app, tmp_path, name, says):
    save_run(tmp_path / "runs", name, config=ARTICLE.replace(architecture=name))
    app.session_state["active_run"] = name
    open_surgery(app)
    assert any(says in i.value for i in app.info)
    assert [m.label for m in app.multiselect] == ([] if name == "softmax" else ["Remove units of fc (625)"])


@pytest.mark.mnist
def test_the_sweep_draws_its_bars_once_asked(app):
    from pages.shared import kept

    open_surgery(app)
    app.selectbox(key=kept("surgery_sweep_layer")).set_value("conv3").run()
    assert not [chart for chart in app.get("vega_lite_chart") if "layer" in json.loads(chart.proto.spec)]
    app.button(key="surgery_sweep").click().run()
    assert not app.exception
    # The button is gone once the sweep is drawn (the walk: it stayed above the chart until the next click, and
    # then the chart jumped up in its place).
    assert not [button for button in app.button if button.key == "surgery_sweep"]
    [sweep] = [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")
               if "layer" in json.loads(chart.proto.spec)]
    bars, rule = sweep["layer"]
    accuracies = [row["accuracy"] for row in bars["data"]["values"]]
    assert len(accuracies) == 128 and accuracies == sorted(accuracies)  # every conv3 filter, the worst first
    assert sorted(row["filter"] for row in bars["data"]["values"]) == list(range(128))
    assert min(accuracies) < rule["data"]["values"][0]["accuracy"]  # the line: nothing removed
    assert any(re.match(r"Removing filter \d+ of conv3 alone hurts most", m.value) for m in app.markdown)
    assert any("on these 2,000 (not the 10,000 measured above)" in c.value and "edits left out" in c.value
               for c in app.caption)


def test_the_sweep_chart_labels_every_bar_up_to_64():
    from pages.experiments_surgery import sweep_chart

    for count, labelled in ((6, True), (64, True), (128, False)):
        rows = sweep_rows(np.linspace(0.5, 0.9, count), 0.95)
        axis = sweep_chart(rows, 0.95, "conv2")["layer"][0]["encoding"]["x"]["axis"]
        assert (axis.get("labelOverlap") is False) == labelled, count


def row_texts(app) -> list[str]:
    return [box.value for box in app.text_input if box.label.startswith("Row ")]


@pytest.mark.mnist
def test_reset_puts_the_rows_and_the_source_back_and_apply_shows_what_was_applied(app):
    import cnn
    from cnn.features import kernels as trained_kernels
    from pages.shared import kept

    open_surgery(app)
    model, _ = cnn.load_model("models/article-cnn.pt")
    trained = trained_kernels(model, "conv1")[0]
    np.testing.assert_allclose(parse_kernel(row_texts(app), 3), trained, atol=5e-5)  # filter 0 as trained
    app.selectbox(key=kept("surgery_source")).set_value("Sobel x").run()
    assert row_texts(app) == ["-1  0  1", "-2  0  2", "-1  0  1"]
    app.text_input(key=kept("surgery_row.1")).set_value("5 -10 0.125").run()
    app.button(key="surgery_apply").click().run()
    assert not app.exception
    assert app.session_state[kept("surgery_kernels")] == {("conv1", 0): [[-1, 0, 1], [5, -10, 0.125], [-1, 0, 1]]}
    assert app.selectbox(key=kept("surgery_source")).value == "as applied"  # no classic's caption over other numbers
    assert row_texts(app) == ["-1  0  1", "5  -10  0.125", "-1  0  1"]
    assert not any("Vertical edges" in c.value for c in app.caption)
    captions = [img.caption for image in app.get("image") for img in image.proto.imgs]
    assert "map 0: original" in captions and "map 0: edited" in captions  # the edited map, enlarged
    app.button(key="surgery_reset").click().run()
    assert not app.exception
    assert app.session_state[kept("surgery_kernels")] == {}
    assert app.selectbox(key=kept("surgery_source")).value == "as trained"
    assert app.selectbox(key=kept("surgery_source")).options == ["as trained", *CLASSIC_KERNELS]
    np.testing.assert_allclose(parse_kernel(row_texts(app), 3), trained, atol=5e-5)


@pytest.mark.mnist
def test_edits_survive_time_travel_and_apply_to_the_other_epoch(app, real_mnist):
    import cnn
    from pages.shared import kept

    open_surgery(app)
    app.selectbox(key=kept("surgery_source")).set_value("Sobel x").run()
    app.button(key="surgery_apply").click().run()
    app.multiselect(key=kept("surgery_ablate.conv2")).set_value([5]).run()
    assert not app.exception
    edits = ({("conv1", 0): classic_kernel("Sobel x").tolist()}, [5])
    app.select_slider[0].set_value(1).run()  # the bundled model after its first epoch
    assert not app.exception
    assert (app.session_state[kept("surgery_kernels")], app.session_state[kept("surgery_ablate.conv2")]) == edits
    assert app.multiselect(key=kept("surgery_ablate.conv2")).value == [5]
    assert any(m.value.startswith("Setting filter 0 of conv1 by hand; removing filter 5 of conv2") for m in app.markdown)
    assert not [i.value for i in app.info if "cleared" in i.value]
    # measured on epoch 1's weights: the metric is epoch 1 edited, computed here by hand in float32
    epoch1, _ = cnn.load_model("models/epoch-1.pt")
    reference = copy.deepcopy(epoch1)
    with torch.no_grad():
        reference.conv1.weight[0, 0] = torch.from_numpy(classic_kernel("Sobel x"))
        reference.conv2.weight[5] = 0
        if reference.conv2.bias is not None:
            reference.conv2.bias[5] = 0
    expected = 100 * evaluate(reference, real_mnist.test_images, real_mnist.test_labels)["accuracy"]
    assert abs(metrics(app)[1] - expected) <= 0.05  # bf16 against float32
    original = 100 * evaluate(epoch1, real_mnist.test_images, real_mnist.test_labels)["accuracy"]
    assert abs(metrics(app)[0] - original) <= 0.05


@pytest.mark.mnist
def test_edits_for_another_network_are_cleared_with_a_sentence(app, tmp_path):
    from pages.shared import kept

    open_surgery(app)
    app.multiselect(key=kept("surgery_ablate.conv2")).set_value([5]).run()
    save_run(tmp_path / "runs", "lenet", config=ARTICLE.replace(architecture="lenet"))
    app.session_state["active_run"] = "lenet"
    app.run()
    assert not app.exception
    assert any("made for another network" in i.value for i in app.info), [i.value for i in app.info]
    assert any(m.value.startswith("No edits yet") for m in app.markdown)
    assert len(row_texts(app)) == 5 and all(len(row.split()) == 5 for row in row_texts(app))  # LeNet's 5x5
    app.run()
    assert not any("made for another network" in i.value for i in app.info)  # said once
