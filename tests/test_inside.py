"""cnn.inside on SYNTHETIC images and random weights: receptive fields against a brute-force perturbation, per-channel
partial sums against F.conv2d, pool winners against a brute-force max, a dense unit's strongest inputs against
weight x input computed here, and the overview's columns for every network on both datasets."""
import base64
import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnn.config import ARTICLE
from cnn.data import DATASETS
from cnn.features import signed_rgb
from cnn.inside import (channel_contributions, conv_unit, dense_unit, overview_columns, overview_marks, picked_map,
                        picked_position, pool_window, pooled_from, receptive_field, resolved_unit)
from cnn.model import NETWORKS, build_model
from tests.test_app_pages import app, element_path, is_layout_style, save_run  # noqa: F401 - app: the AppTest fixture


def random_model(network: str, seed: int = 0, dataset: str = "mnist"):
    """A network with He-initialised random weights (no two units alike), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = build_model(ARTICLE.replace(architecture=network, init="kaiming", dataset=dataset), generator)
    for parameter in model.parameters():  # biases too, so a layer that has them adds one that is not 0
        if parameter.ndim == 1:
            parameter.data.uniform_(-0.1, 0.1, generator=generator)
        parameter.requires_grad_(False)  # the references below are plain arithmetic on the weights
    return model.eval()


def synthetic_image(seed: int = 0, side: int = 28) -> np.ndarray:
    """(side, side) float32 in [0, 1]: a few bright strokes on noise (SYNTHETIC)."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 0.2, (side, side)).astype(np.float32)
    image[5:22, 12:15] = 1.0
    image[8:11, 4:24] = 0.8
    return image


# ---------------------------------------------------------------- receptive fields, by brute force

def positive_model(network: str):
    """float64, every weight in [0.1, 1] and bias 0.1, eval mode: with a positive image every conv output is > 0, so
    ReLU passes changes on, and a pixel raised by 1,000 raises every value it feeds, also through max-pooling (the
    raised value wins its window). A pixel changes a unit exactly when it lies in the unit's receptive field."""
    model = random_model(network).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(0.1, 1.0, generator=generator) if parameter.ndim > 1 else parameter.fill_(0.1)
    return model


def changed_pixels(model, stage_key: str, unit: tuple, side: int = 28) -> set:
    """The input pixels whose raise by 1,000 changes unit (channel, row, col) of activation stage_key, one image per
    pixel (in chunks)."""
    base = torch.from_numpy(np.random.default_rng(2).uniform(0.1, 1.0, (side, side)))
    changed = set()
    pixels = [(r, c) for r in range(side) for c in range(side)]
    with torch.no_grad():
        reference = model.forward_with_activations(base[None, None])[stage_key][(0, *unit)].item()
        for start in range(0, len(pixels), 196):
            chunk = pixels[start:start + 196]
            batch = base.repeat(len(chunk), 1, 1, 1)
            for i, (r, c) in enumerate(chunk):
                batch[i, 0, r, c] += 1000.0
            values = model.forward_with_activations(batch)[stage_key][(slice(None), *unit)]
            changed |= {pixel for pixel, value in zip(chunk, values.tolist())
                        if abs(value - reference) > 1e-6 * max(1.0, abs(reference))}
    return changed


def box_pixels(box: tuple) -> set:
    top, left, bottom, right = box
    return {(r, c) for r in range(top, bottom) for c in range(left, right)}


# (network, stage, units): corners, an edge and the middle; pool3's last row and column are SAME's odd edge (7 -> 4).
RECEPTIVE_CASES = [
    ("cnn", "conv1", [(1, 0, 0), (1, 27, 27), (1, 13, 5)]),
    ("cnn", "pool1", [(2, 0, 13), (2, 13, 13), (2, 6, 7)]),
    ("cnn", "relu2", [(0, 0, 0), (0, 13, 6)]),
    ("cnn", "pool2", [(3, 6, 6), (3, 3, 0)]),
    ("cnn", "conv3", [(5, 6, 0), (5, 3, 3)]),
    ("cnn", "pool3", [(7, 3, 3), (7, 0, 0), (7, 2, 3), (7, 1, 2)]),
    ("lenet", "conv1", [(0, 0, 0), (0, 27, 14)]),
    ("lenet", "pool1", [(1, 13, 13), (1, 0, 6)]),
    ("lenet", "conv2", [(2, 0, 0), (2, 9, 9), (2, 4, 5)]),
    ("lenet", "pool2", [(3, 4, 4), (3, 0, 0), (3, 2, 1)]),
]


@pytest.fixture(scope="module")
def positive_models():
    return {network: positive_model(network) for network in ("cnn", "lenet")}


@pytest.mark.parametrize("network, stage, units", RECEPTIVE_CASES)
def test_receptive_field_is_exactly_the_pixels_that_change_the_unit(positive_models, network, stage, units):
    model = positive_models[network]
    key = next(s.activation for s in model.stages if s.name == stage)
    for channel, row, col in units:
        box = receptive_field(stage, row, col, model)
        assert changed_pixels(model, key, (channel, row, col)) == box_pixels(box), (stage, row, col, box)


def test_a_dense_unit_sees_the_whole_image(positive_models):
    model = positive_models["lenet"]
    assert receptive_field("fc2", 0, 0, model) == (0, 0, 28, 28)
    assert changed_pixels(model, "logits", (3,)) == box_pixels((0, 0, 28, 28))


# ---------------------------------------------------------------- per-channel partial sums, against F.conv2d

def conv_input_reference(model, image: np.ndarray, stage: str) -> tuple[torch.Tensor, torch.nn.Conv2d]:
    """(the (1, C_in, H, W) float64 input of conv stage `stage`, its Conv2d), computed here with F ops straight from
    the weights: conv (+ bias), ReLU, 2x2 SAME max-pool per block, not through the model's own forward."""
    x = torch.from_numpy(image).double()[None, None]
    convs = [getattr(model, s.module) for s in model.stages if s.kind == "conv"]
    names = [s.name for s in model.stages if s.kind == "conv"]
    for conv in convs[:names.index(stage)]:
        bias = conv.bias.double() if conv.bias is not None else None
        x = F.max_pool2d(F.relu(F.conv2d(x, conv.weight.double(), bias, padding=conv.padding)), 2, 2, ceil_mode=True)
    return x, convs[names.index(stage)]


@pytest.mark.parametrize("network, stage, units", [
    ("cnn", "conv1", [(0, 10, 13), (31, 0, 27)]),
    ("cnn", "conv2", [(5, 7, 7), (63, 13, 0), (0, 0, 0)]),
    ("cnn", "conv3", [(100, 6, 6), (7, 3, 2)]),
    ("lenet", "conv1", [(2, 14, 13), (5, 27, 0)]),  # 5x5, padding 2, a bias
    ("lenet", "conv2", [(11, 9, 0), (0, 4, 4)]),  # 5x5 over 6 maps, no padding
])
def test_channel_contributions_are_conv2d_on_each_input_channel_alone(network, stage, units):
    model, image = random_model(network), synthetic_image()
    source, conv = conv_input_reference(model, image, stage)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else None
    whole = F.conv2d(source, weight, bias, padding=conv.padding)
    for channel, row, col in units:
        contributions = channel_contributions(model, image, stage, channel, row, col)
        assert contributions.shape == (weight.shape[1],)
        for c in range(weight.shape[1]):
            alone = F.conv2d(source[:, c:c + 1], weight[channel:channel + 1, c:c + 1], padding=conv.padding)
            assert contributions[c] == pytest.approx(alone[0, 0, row, col].item(), abs=1e-5)
        added = float(contributions.sum(dtype=np.float64)) + (bias[channel].item() if bias is not None else 0.0)
        assert added == pytest.approx(whole[0, channel, row, col].item(), abs=1e-4)
        assert abs(whole[0, channel, row, col].item()) > 1e-3  # a unit that says something: the check has teeth


@pytest.mark.parametrize("stage, channel, row, col", [
    ("relu1", 0, 0, 0), ("pool1", 0, 0, 0), ("fc", 0, 0, 0), ("conv9", 0, 0, 0), ("conv1", 32, 0, 0),
    ("conv1", -1, 0, 0), ("conv2", 0, 14, 0), ("conv2", 0, 0, -1), ("conv1", 0, 1.5, 0), ("conv1", True, 0, 0),
    ("conv1", "3", 0, 0)])
def test_channel_contributions_refuses_what_is_not_a_conv_unit_with_a_sentence(stage, channel, row, col):
    with pytest.raises(ValueError) as refused:
        channel_contributions(random_model("cnn"), synthetic_image(), stage, channel, row, col)
    message = str(refused.value)  # our sentence, not a library's (an IndexError, a KeyError 'conv9')
    assert message.endswith(".") and " " in message and "Error" not in message


def test_channel_contributions_refuses_an_image_of_another_size():
    with pytest.raises(ValueError, match="28x28"):
        channel_contributions(random_model("cnn"), np.zeros((20, 20)), "conv1", 0, 0, 0)


# ---------------------------------------------------------------- pooling

@pytest.mark.parametrize("side", [7, 8, 5])
def test_pool_window_is_the_brute_force_max_of_its_window(side):
    below = np.random.default_rng(side).normal(size=(side, side)).astype(np.float32)
    pooled = F.max_pool2d(torch.from_numpy(below)[None, None], 2, 2, ceil_mode=True)[0, 0].numpy()
    for row in range(side):
        for col in range(side):
            window = pool_window(below, row, col)
            members = [(r, c) for r in range(side) for c in range(side) if r // 2 == row // 2 and c // 2 == col // 2]
            best = max(members, key=lambda rc: below[rc])
            assert window.values.size == len(members)  # 4, or 2/1 on SAME's odd edge
            assert window.winner == best and window.value == below[best] and not window.tied
            assert window.lands == (row // 2, col // 2) and pooled[window.lands] == window.value


def test_pool_window_says_when_all_four_are_tied():
    window = pool_window(np.zeros((4, 4)), 3, 2)
    assert window.tied and window.value == 0.0 and window.winner == (2, 2)


def test_a_conv_units_pool_lands_where_the_network_puts_its_pooled_value():
    model, image = random_model("cnn", seed=3), synthetic_image(3)
    with torch.no_grad():
        acts = model.forward_with_activations(torch.from_numpy(image)[None, None])
    for stage, pool, channel, row, col in [("conv1", "pool1", 4, 9, 13), ("conv3", "pool3", 9, 6, 6),
                                           ("conv2", "pool2", 17, 13, 12)]:
        unit = conv_unit(model, image, stage, channel, row, col)
        assert unit.value == pytest.approx(acts[stage][0, channel, row, col].item(), abs=1e-5)
        assert unit.relu == max(unit.value, 0.0) and unit.pool_stage == pool
        assert unit.pool.value == pytest.approx(acts[pool][(0, channel, *unit.pool.lands)].item(), abs=1e-6)
        below, window = pooled_from(model, image, pool, channel, *unit.pool.lands)
        assert below == stage and window.winner == unit.pool.winner
        assert acts[f"relu{stage[-1]}"][(0, channel, *window.winner)].item() == pytest.approx(window.value, abs=1e-6)


# ---------------------------------------------------------------- dense units

def flat_reference(model, image: np.ndarray) -> np.ndarray:
    """The article CNN's 2,048 flattened pool3 values, computed here with F ops in float64 (no biases)."""
    x = torch.from_numpy(image).double()[None, None]
    for name in ("conv1", "conv2", "conv3"):
        x = F.max_pool2d(F.relu(F.conv2d(x, getattr(model, name).weight.double(), padding=1)), 2, 2, ceil_mode=True)
    return x.reshape(-1).numpy()


def check_strongest(unit, inputs: np.ndarray, weight: np.ndarray, bias: float, shape) -> None:
    products = weight * inputs
    expected = sorted(range(len(products)), key=lambda i: -abs(products[i]))[:len(unit.strongest)]
    assert [s["index"] for s in unit.strongest] == expected
    for strong in unit.strongest:
        i = strong["index"]
        assert strong["input"] == pytest.approx(inputs[i], abs=1e-5)
        assert strong["product"] == pytest.approx(products[i], abs=1e-6)
        assert strong["where"] == (None if shape is None else tuple(np.unravel_index(i, shape)))
    assert unit.total == pytest.approx(products.sum() + bias, abs=1e-4)


def test_fc_units_strongest_inputs_are_weight_times_pool3_named_by_map_and_position():
    model, image = random_model("cnn", seed=4), synthetic_image(4)
    flat = flat_reference(model, image)
    for index in (0, 311, 624):
        unit = dense_unit(model, image, "fc", index, k=12)
        check_strongest(unit, flat, model.fc.weight[index].detach().double().numpy(), 0.0, (128, 4, 4))
        assert unit.inputs == 2048 and unit.source == "pool3" and unit.after == max(unit.total, 0.0)


def test_lenet_fc2_and_softmax_outputs_strongest_inputs():
    model, image = random_model("lenet", seed=5), synthetic_image(5)
    x = torch.from_numpy(image).double()[None, None]
    for name, padding in (("conv1", 2), ("conv2", 0)):
        conv = getattr(model, name)
        x = F.max_pool2d(F.relu(F.conv2d(x, conv.weight.double(), conv.bias.double(), padding=padding)), 2, 2,
                         ceil_mode=True)
    fc1 = F.relu(F.linear(x.reshape(1, -1), model.fc1.weight.double(), model.fc1.bias.double()))[0].numpy()
    unit = dense_unit(model, image, "fc2", 40)
    check_strongest(unit, fc1, model.fc2.weight[40].detach().double().numpy(), model.fc2.bias[40].item(), None)
    softmax = random_model("softmax", seed=6)
    unit = dense_unit(softmax, image, "logits", 3, k=20)
    check_strongest(unit, image.reshape(-1).astype(np.float64), softmax.out.weight[3].detach().double().numpy(),
                    softmax.out.bias[3].item(), (1, 28, 28))
    assert unit.after is None  # softmax, not ReLU, reads a logit
    for stage, index in (("conv1", 0), ("fc2", 84), ("relu_fc1", 0)):
        with pytest.raises(ValueError):
            dense_unit(model, image, stage, index)


# ---------------------------------------------------------------- the overview

EXPECTED_COLUMNS = {  # the path, per network: input, each conv and pool, the hidden layers, the outputs
    "cnn": ["input", "conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "fc", "logits"],
    "lenet": ["input", "conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "logits"],
    "one-conv": ["input", "conv1", "pool1", "fc", "logits"],
    "mlp": ["input", "flatten", "fc", "logits"],
    "softmax": ["input", "flatten", "logits"],
}


def test_every_network_has_an_expectation():
    assert set(EXPECTED_COLUMNS) == set(NETWORKS)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("network", sorted(EXPECTED_COLUMNS))
def test_overview_columns_follow_the_networks_stages(network, dataset):
    model, image = random_model(network, dataset=dataset), synthetic_image(7)
    columns = overview_columns(model, image)
    assert [column.stage for column in columns] == EXPECTED_COLUMNS[network]
    with torch.no_grad():
        logits = model(torch.from_numpy(image)[None, None])
    probabilities = torch.softmax(logits.double(), 1)[0].numpy()
    assert np.allclose(columns[-1].values, probabilities, atol=1e-6)  # the outputs: the model's own answer
    assert columns[-1].shape == str(DATASETS[dataset].num_classes)
    for column in columns:
        layer = getattr(model, column.stage, None)
        if isinstance(layer, torch.nn.Conv2d):
            assert column.values.shape[0] == layer.out_channels and column.signed  # before ReLU: both signs
            assert column.shape == " x ".join(str(v) for v in column.values.shape)
        elif isinstance(layer, torch.nn.Linear) and column.stage != "logits":
            assert column.values.shape == (layer.out_features,) and (column.values >= 0).all()  # after ReLU


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")  # inline: no request leaves the machine
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_overview_tiles_share_one_colour_scale_per_column_and_never_overlap():
    model, image = random_model("cnn", seed=8), synthetic_image(8)
    columns = overview_columns(model, image)
    tiles, labels = overview_marks(columns, [str(k) for k in range(10)], width=680, height=440)
    conv2 = next(column for column in columns if column.stage == "conv2")
    limit = float(np.abs(conv2.values).max())  # the column's scale, from all its maps
    for channel in (0, 17, 63):
        tile = next(t for t in tiles if t["stage"] == "conv2" and t["channel"] == channel)
        picture = decode(tile["url"])
        repeat = picture.shape[0] // 14
        assert np.array_equal(picture[::repeat, ::repeat], signed_rgb(conv2.values[channel], limit))
    assert len(tiles) == 1 + 32 * 2 + 64 * 2 + 128 * 2 + 1 + 10
    for i, a in enumerate(tiles):
        assert 0 <= a["x"] < a["x2"] <= 680 and 0 <= a["y"] < a["y2"] <= 440
        for b in tiles[i + 1:]:
            apart = a["x2"] <= b["x"] or b["x2"] <= a["x"] or a["y2"] <= b["y"] or b["y2"] <= a["y"]
            assert apart, (a["tip"], b["tip"])
    shapes = {" x ".join(label["text"]) for label in labels if label["role"] == "shape"}  # two lines: maps / size
    assert shapes >= {"32 x 28 x 28", "128 x 4 x 4", "625"}


def test_forged_selections_open_nothing():
    columns = overview_columns(random_model("cnn"), synthetic_image())
    assert picked_map([{"stage": "conv2", "channel": 63}], columns) == ("conv2", 63)
    assert picked_map([{"stage": "logits", "channel": 9}], columns) == ("logits", 9)
    for forged in (None, "conv1", [], [{"stage": "conv2", "channel": 64}], [{"stage": "conv2", "channel": -1}],
                   [{"stage": "conv2", "channel": "3"}], [{"stage": "conv2", "channel": True}],
                   [{"stage": "input", "channel": 0}], [{"stage": "conv9", "channel": 0}],
                   [{"stage": "__class__", "channel": 0}], [{"stage": "conv1", "channel": 0}] * 2, [["conv1", 0]]):
        assert picked_map(forged, columns) is None, forged
    assert picked_position([{"row": 13, "col": 0}], 14, 14) == (13, 0)
    for forged in ([{"row": 14, "col": 0}], [{"row": 0.5, "col": 0}], [{"row": False, "col": 0}], [{}], "x"):
        assert picked_position(forged, 14, 14) is None, forged


def test_a_kept_unit_is_checked_against_the_network_before_use():
    model, image = random_model("cnn", seed=9), synthetic_image(9)
    columns = overview_columns(model, image)
    conv2 = model.forward_with_activations(torch.from_numpy(image)[None, None])["conv2"][0].numpy()  # not the page's
    active = int(np.argmax(np.clip(conv2, 0, None).mean(axis=(1, 2))))  # the first conv over several maps opens
    strongest = tuple(int(v) for v in np.unravel_index(np.argmax(conv2[active]), conv2[active].shape))
    default = {"stage": "conv2", "kind": "conv", "channel": active, "row": strongest[0], "col": strongest[1]}
    for forged in ({}, None, {"stage": "fc1", "channel": 3}, {"stage": "conv2", "channel": 64},
                   {"stage": "input", "channel": 0}, {"stage": "conv1", "channel": "1"}):
        assert resolved_unit(model, columns, forged) == default, forged
    kept = {"stage": "pool2", "channel": 5, "row": 6, "col": 2}
    assert resolved_unit(model, columns, kept) == {**kept, "kind": "pool"}
    assert resolved_unit(model, columns, {"stage": "fc", "channel": 624, "row": 3, "col": 3}) == {
        "stage": "fc", "kind": "dense", "channel": 624, "row": None, "col": None}
    moved = resolved_unit(model, columns, {"stage": "conv3", "channel": 1, "row": 20, "col": 0})  # LeNet-sized row
    assert (moved["row"], moved["col"]) == tuple(np.unravel_index(np.argmax(columns[5].values[1]), (7, 7)))


# ---------------------------------------------------------------- the page (AppTest; the app loads real MNIST)

def glance_texts(app) -> str:
    return "\n".join(m.value for m in app.markdown if not is_layout_style(m)) + "\n".join(c.value for c in app.caption)


@pytest.mark.mnist
@pytest.mark.parametrize("network, says", [
    ("lenet", r"Each of the 6 input maps' 5x5 patch .* the 6 partial sums add up to \*\*-?[\d.]+\*\*, and the "
              r"filter's bias"),  # it opens on conv2, the first convolution over several maps
    ("mlp", r"fc unit \d+ weighs all 784 values of input"),
    ("softmax", r"output \S+ weighs all 784 values of input"),
    ("one-conv", r"conv1 map \d+ at row \d+, column \d+ before ReLU")])
def test_glance_opens_on_a_unit_of_whatever_network_is_active(app, tmp_path, network, says):
    save_run(tmp_path / "runs", network, config=ARTICLE.replace(architecture=network))
    app.session_state["active_run"] = network
    app.switch_page("pages/inside.py").run()
    assert not app.exception
    assert re.search(says, glance_texts(app)), glance_texts(app)[-600:]


@pytest.mark.mnist
def test_glance_ignores_a_forged_unit_and_follows_time_travel(app):
    app.switch_page("pages/inside.py").run()
    assert not app.exception
    opened = glance_texts(app)
    for forged in ({"stage": "conv9", "channel": 0}, {"stage": "conv2", "channel": 10 ** 9, "row": 0, "col": 0},
                   {"stage": "fc", "channel": -5}, "conv1", {"stage": ["conv1"], "channel": {}}):
        app.session_state["inside_unit"] = forged
        app.run()
        assert not app.exception, forged
        assert glance_texts(app) == opened, forged  # the default unit, as if nothing were chosen
    app.session_state["inside_unit"] = {"stage": "conv3", "channel": 9, "row": 2, "col": 5}
    app.run()
    final = glance_texts(app)
    assert "conv3 map 9 at row 2, column 5 before ReLU" in final
    app.select_slider[0].set_value(1).run()  # the bundled model after its first epoch
    assert not app.exception
    assert "conv3 map 9 at row 2, column 5 before ReLU" in glance_texts(app) and glance_texts(app) != final


@pytest.mark.mnist
def test_what_a_unit_wants_keeps_its_widgets_in_place_after_the_picture_is_drawn(app, monkeypatch):
    """The run that draws a unit's picture shows a progress bar; the next finds it drawn. The elements after the bar
    (the "Draw all" button) must sit at the same place in both: a bar in one run and not the next moved them by one,
    and the browser drew them anew (pages.shared.progress_place)."""
    import pages.inside_wants as wants
    from pages.shared import kept

    drawn = []
    visualize_unit = wants.visualize_unit
    monkeypatch.setattr(wants, "visualize_unit", lambda *args, **kwargs: drawn.append(args[1:3]) or visualize_unit(
        *args, **kwargs))
    app.session_state[kept("inside_view")] = "wants"
    app.switch_page("pages/inside.py").run()
    assert not app.exception and len(drawn) == 1  # the fixture emptied the server's cache: drawn, with its bar
    drawing_run = element_path(app.main, "wants_all_classes")
    app.run()
    assert not app.exception and len(drawn) == 1  # found drawn: no bar
    assert drawing_run is not None and element_path(app.main, "wants_all_classes") == drawing_run
    # "Draw all": the missing class pictures are drawn, and the page is drawn again without its button (the walk: it
    # stayed above the grid until the next click, and then the grid jumped up in its place).
    app.button(key="wants_all_classes").click().run()
    assert not app.exception
    assert sorted(drawn) == [("logits", c) for c in range(10)]  # the view opens on a class output: 9 more
    assert element_path(app.main, "wants_all_classes") is None
    assert "the ink the network counts as evidence" in str([image.proto for image in app.get("image")])  # the grid
