"""cnn.features against independent references: torch.nn.functional applied by hand, matplotlib's colour map,
conv2 fed a one-hot input; the confusion matrix on REAL MNIST counted from the model's own argmax."""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps

import cnn
from cnn.features import (LABEL_HEIGHT, activations, colour_bar, confusion_cells, confusion_matrix, convolution_at,
                          convolution_sentence, convolution_table, kernel_grid, kernels, maps_grid, marked_patch,
                          most_active_map, picked_cell, products_table, shown_decimals, signed_rgb, strongest_output)
from cnn.model import ConvNet

GAP = 2  # make_grid's padding between tiles, in pixels


@pytest.fixture
def model_and_acts():
    torch.manual_seed(0)
    model = ConvNet(init_std=0.2).eval()
    x = torch.rand(1, 1, 28, 28)
    return model, x, activations(model, x)


def reference_activations(model, x):
    """The network up to conv3 written out with torch.nn.functional, sharing nothing with the model's forward.

    (1, 1, 28, 28) -> {input (1, 28, 28), conv1 (32, 28, 28), pool1 (32, 14, 14), conv2 (64, 14, 14),
    pool2 (64, 7, 7), conv3 (128, 7, 7)}; conv maps before ReLU, pools after ReLU then 2x2 max-pool.
    """
    with torch.no_grad():
        conv1 = F.conv2d(x, model.conv1.weight, padding=1)  # 'SAME': zero border of 1
        pool1 = F.max_pool2d(F.relu(conv1), 2)  # 28 -> 14
        conv2 = F.conv2d(pool1, model.conv2.weight, padding=1)
        pool2 = F.max_pool2d(F.relu(conv2), 2)  # 14 -> 7
        conv3 = F.conv2d(pool2, model.conv3.weight, padding=1)
    return {name: t[0].numpy() for name, t in
            {"input": x, "conv1": conv1, "pool1": pool1, "conv2": conv2, "pool2": pool2, "conv3": conv3}.items()}


def test_activations_equal_the_layers_applied_by_hand(model_and_acts):
    model, x, acts = model_and_acts
    reference = reference_activations(model, x)
    for name, expected in reference.items():
        assert acts[name].shape == expected.shape, name
        assert np.allclose(acts[name], expected, rtol=1e-4, atol=1e-5), name
    # pool3 is TensorFlow 'SAME' (7 -> 4): pad the bottom row and right column with -inf, then pool.
    padded = F.pad(F.relu(torch.from_numpy(reference["conv3"]))[None], (0, 1, 0, 1), value=float("-inf"))
    assert np.allclose(acts["pool3"], F.max_pool2d(padded, 2)[0].numpy(), rtol=1e-4, atol=1e-5)


def per_channel_reference(source: np.ndarray, kernel: np.ndarray, row: int, col: int) -> np.ndarray:
    """Each input channel's share of one conv output: that channel alone convolved with its 3x3 slice. -> (C_in,)"""
    channels = source.shape[0]
    alone = F.conv2d(torch.from_numpy(source)[None], torch.from_numpy(kernel)[:, None], padding=1, groups=channels)
    return alone[0, :, row, col].numpy()


@pytest.mark.parametrize("row, col", [(0, 0), (13, 14), (27, 27)])
def test_conv1_by_hand_equals_torch_conv2d(model_and_acts, row, col):
    model, x, acts = model_and_acts
    result = convolution_at(model, acts, "conv1", 5, row, col)
    expected = F.conv2d(x, model.conv1.weight, padding=1)[0, 5, row, col].item()
    image = np.pad(x[0, 0].numpy(), 1)  # the image with its 'SAME' zero border
    assert np.array_equal(result["patch"][0], image[row:row + 3, col:col + 3])
    assert np.array_equal(result["kernel"], model.conv1.weight[5].detach().numpy())
    assert result["total"] == pytest.approx(expected, abs=1e-5)
    assert result["value"] == pytest.approx(expected, abs=1e-5)
    if row == 0:
        assert (result["patch"][0, 0] == 0).all()  # zero padding above the image ('SAME')


@pytest.mark.parametrize("layer, size, col", [(2, 14, 1), (3, 7, 6)])
def test_deeper_layers_sum_over_input_channels(model_and_acts, layer, size, col):
    model, x, acts = model_and_acts
    reference = reference_activations(model, x)
    source = reference[{2: "pool1", 3: "pool2"}[layer]]
    result = convolution_at(model, acts, f"conv{layer}", 7, size // 2, col)
    assert result["patch"].shape == (source.shape[0], 3, 3) and source.shape[0] == {2: 32, 3: 64}[layer]
    kernel = getattr(model, f"conv{layer}").weight[7].detach().numpy()
    per_channel = per_channel_reference(source, kernel, size // 2, col)
    assert np.allclose(result["per_channel"], per_channel, rtol=1e-4, atol=1e-6)
    expected = reference[f"conv{layer}"][7, size // 2, col]
    assert result["total"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert result["value"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="choose a row"):
        convolution_at(model, acts, f"conv{layer}", 0, size, 0)


def tile(grid: np.ndarray, index: int, side: int, columns: int = 16) -> np.ndarray:
    """Tile `index` (side x side pixels) of a grid laid out `columns` a row with GAP-pixel gaps."""
    top = GAP + (index // columns) * (side + GAP)
    left = GAP + (index % columns) * (side + GAP)
    return grid[top:top + side, left:left + side]


def viridis(values: np.ndarray, repeat: int) -> np.ndarray:
    """Values in [0, 1] -> matplotlib's viridis as uint8 RGB, each value a repeat x repeat square."""
    rgb = np.round(colormaps["viridis"](np.clip(values, 0, 1))[..., :3] * 255)
    return rgb.repeat(repeat, axis=0).repeat(repeat, axis=1)


def test_maps_grid_colours_each_map_by_its_own_or_the_layers_range(model_and_acts):
    model, x, acts = model_and_acts
    conv1 = reference_activations(model, x)["conv1"].astype(np.float64)  # (32, 28, 28)
    grid, low, high = maps_grid(acts["conv1"], per="map")
    assert grid.dtype == np.uint8 and grid.shape == (2 * (56 + GAP) + GAP, 16 * (56 + GAP) + GAP, 3)
    assert low == pytest.approx(conv1.min(), abs=1e-5) and high == pytest.approx(conv1.max(), abs=1e-5)
    layer_grid, _, _ = maps_grid(acts["conv1"], per="layer")
    for index in (0, 17, 31):  # first tile, one on the second row, the last
        own = (conv1[index] - conv1[index].min()) / (conv1[index].max() - conv1[index].min())
        assert np.abs(tile(grid, index, 56).astype(int) - viridis(own, 2)).max() <= 1, index
        shared = (conv1[index] - conv1.min()) / (conv1.max() - conv1.min())
        assert np.abs(tile(layer_grid, index, 56).astype(int) - viridis(shared, 2)).max() <= 1, index
    assert (grid[:GAP] == 255).all() and (grid[:, 56 + GAP:56 + 2 * GAP] == 255).all()  # white gaps
    bar = colour_bar(low, high)
    assert bar.shape == (12, 256, 3)
    assert np.abs(bar[:, 0].astype(int) - viridis(np.zeros(1), 1)[0]).max() <= 1  # low end: viridis(0)
    assert np.abs(bar[:, -1].astype(int) - viridis(np.ones(1), 1)[0]).max() <= 1  # high end: viridis(1)


def test_kernels_are_what_the_layer_applies(model_and_acts):
    """conv2 fed a single 1 in input channel 3 answers with each filter's 3x3 slice for that channel, mirrored
    (a convolution layer slides the kernel as a cross-correlation)."""
    model, _, _ = model_and_acts
    weights = kernels(model, "conv2", input_channel=3)
    one_hot = torch.zeros(1, 32, 5, 5)
    one_hot[0, 3, 2, 2] = 1.0
    with torch.no_grad():
        response = model.conv2(one_hot)[0, :, 1:4, 1:4]  # (64, 3, 3) around the 1
    assert weights.shape == (64, 3, 3)
    assert np.allclose(weights, response.flip(-1, -2).numpy(), atol=1e-7)
    with pytest.raises(ValueError):
        kernels(model, "conv2", input_channel=32)


def test_kernel_grid_is_centred_on_zero():
    """0 is white, the largest positive weight the deepest red, the most negative the deepest blue, half-way between."""
    weights = np.array([[[0.0, 1.0, 2.0], [-2.0, -1.0, 0.0], [0.5, 0.0, 0.0]]], dtype=np.float32)  # (1, 3, 3)
    image, limit = kernel_grid(weights)
    assert limit == 2.0
    pixel = {(r, c): tile(image, 0, 30)[10 * r + 5, 10 * c + 5].astype(int) for r in range(3) for c in range(3)}
    white, red, half_red, blue, half_blue = pixel[0, 0], pixel[0, 2], pixel[0, 1], pixel[1, 0], pixel[1, 1]
    assert (white == 255).all()
    assert red[0] > red[1] and red[0] > red[2] and blue[2] > blue[0] and blue[2] > blue[1]
    for half, full in ((half_red, red), (half_blue, blue)):  # half the weight: half-way from white
        assert np.abs(half - (white + full) / 2).max() <= 1
    fixed, fixed_limit = kernel_grid(weights, limit=4.0)  # a fixed scale: 2.0 is now only half-way
    assert fixed_limit == 4.0
    assert np.array_equal(tile(fixed, 0, 30)[5, 25], half_red)


@pytest.mark.mnist
def test_confusion_matrix_on_the_real_test_set(real_mnist):
    model, card = cnn.load_model()
    matrix, predicted = confusion_matrix(model, real_mnist.test_images, real_mnist.test_labels)
    with torch.inference_mode():  # the reference: the model's argmax, counted pair by pair
        expected_predicted = torch.cat([model(batch.float().div(255)[:, None]).argmax(1)
                                        for batch in real_mnist.test_images.split(1000)]).numpy()
    labels = real_mnist.test_labels.numpy()
    assert np.array_equal(predicted, expected_predicted)
    expected = np.bincount(labels * 10 + expected_predicted, minlength=100).reshape(10, 10)  # [true, predicted]
    assert np.array_equal(matrix, expected)
    assert matrix.sum() == 10_000
    assert np.trace(matrix) / 10_000 == pytest.approx(card["accuracy"], abs=1e-4)


# ---------------------------------------------------------------- issue 11: readable maps, a convolution that adds up

def test_most_active_map_is_the_one_that_lets_most_through_relu():
    maps = np.zeros((4, 5, 5), dtype=np.float32)  # map 0 blank, as conv3's map 0 often is
    maps[1] = -3.0  # the largest |value|, but ReLU lets none of it through
    maps[2, 1:4, 1:4] = 1.0  # mean 9/25
    maps[3, 0, 0] = 5.0  # the largest value, but one pixel: mean 5/25
    assert most_active_map(maps) == 2


def test_signed_scale_is_dark_at_zero_with_opposite_hues_for_the_signs():
    limit = 2.0
    values = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0], dtype=np.float32)
    rgb = signed_rgb(values, limit).astype(int)
    neg_far, neg_full, neg_half, zero, pos_half, pos_full, pos_far = rgb
    assert zero.max() < 40, "0 (the blank background) must be the dark neutral, not the brightest colour"
    assert neg_full[2] > neg_full[0] + 100 and pos_full[0] > pos_full[2] + 100  # blue below 0, orange above
    assert (neg_far == neg_full).all() and (pos_far == pos_full).all()  # clipped at the limit
    for half, full in ((neg_half, neg_full), (pos_half, pos_full)):  # linear from the neutral colour
        assert np.abs(half - (zero + full) / 2).max() <= 1
        assert half.sum() > zero.sum() and full.sum() > half.sum()  # brighter the stronger the answer


def test_maps_before_relu_are_centred_on_zero_and_numbered():
    maps = np.zeros((3, 4, 4), dtype=np.float32)
    maps[0, 0, 0], maps[0, 3, 3] = 0.5, -1.0  # map 0's largest |value| is 1.0
    maps[2, 1, 1] = 8.0
    grid, low, high = maps_grid(maps, per="map", signed=True, numbered=True, columns=3)
    assert (low, high) == (-8.0, 8.0)
    side = 56  # 4 px maps, enlarged 14 times
    def tile_at(index):
        left = GAP + index * (side + GAP)
        return grid[GAP:GAP + side, left:left + side]
    zero = signed_rgb(np.zeros(1), 1.0)[0]
    assert (tile_at(1) == zero).all()  # an all-zero map is the neutral colour, not stretched to full brightness
    assert (tile_at(0)[-1, -1] == signed_rgb(np.array([-1.0]), 1.0)[0]).all()  # -1 is map 0's full blue
    assert (tile_at(0)[0, 0] == signed_rgb(np.array([0.5]), 1.0)[0]).all()  # 0.5 half-way to orange
    assert (tile_at(0)[5, 20] == zero).all()
    strips = [grid[GAP + side:GAP + side + LABEL_HEIGHT, GAP + k * (side + GAP):GAP + k * (side + GAP) + side]
              for k in range(3)]
    for strip in strips:
        assert (strip.min(axis=-1) < 100).sum() > 10, "each tile has its number written under it"
    assert not np.array_equal(strips[0], strips[1]) and not np.array_equal(strips[1], strips[2])


def numbers_in(markdown: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+\.\d+", markdown)]


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_convolution_by_hand_adds_up_at_the_shown_precision(model_and_acts, layer):
    """What a student reads: nine rows input x weight = product and their sum, all at one precision; the
    products written there add up to the sum written there, and the sum is the true one up to rounding."""
    model, _, acts = model_and_acts
    size = acts[f"conv{layer}"].shape[-1]
    for channel, row, col in ((3, size // 2, size // 2), (11, 0, size - 1)):
        result = convolution_at(model, acts, f"conv{layer}", channel, row, col)
        shown = int(np.argmax(np.abs(result["per_channel"])))
        decimals = shown_decimals(result["kernel"][shown])
        table = convolution_table(result, shown, decimals)
        text = products_table(table, (row, col))
        rows = [line for line in text.splitlines()[2:-1]]
        assert len(rows) == 9
        written = [re.findall(r"-?\d+\.(\d+)", line) for line in rows]
        assert all(len(d) == decimals for line in written for d in line[-3:]), "one precision in every column"
        triples = [numbers_in(line)[-3:] for line in rows]
        product_sum = sum(p for _, _, p in triples)
        written_sum = numbers_in(text.splitlines()[-1])[-1]
        assert round(product_sum, decimals) == pytest.approx(written_sum, abs=1e-9)
        # Each row checks by hand: the product written is the pixel written times the weight written, rounded.
        for pixel, weight, product in triples:
            assert product == pytest.approx(round(pixel * weight, decimals) + 0.0, abs=1e-9)
        # And the written sum is the true one up to the rounding of the factors and of the products.
        exact = float(result["per_channel"][shown])
        half = 0.5 * 10 ** -decimals
        slack = sum(half * (abs(p) + abs(w)) + half * half + half for p, w, _ in triples)
        assert abs(written_sum - exact) <= slack + 1e-9
        sentence = convolution_sentence(result, table, f"conv{layer}", channel, (row, col), shown)
        assert f"add up to **{written_sum:.{decimals}f}**" in sentence


def test_shown_decimals_give_a_typical_weight_two_significant_digits():
    assert shown_decimals(np.full((3, 3), 0.35)) == 2
    assert shown_decimals(np.full((3, 3), 0.035)) == 3
    assert shown_decimals(np.full((3, 3), 0.0004)) == 4  # at most 4
    assert shown_decimals(np.full((3, 3), 3.5)) == 2  # at least 2


def test_marked_patch_draws_a_box_around_the_3x3_patch():
    source = np.zeros((7, 7), dtype=np.float32)
    source[3, 3] = 1.0
    red = (255, 40, 40)
    image = marked_patch(source, 2, 4, size=70)  # 10 px per value: the patch is rows 1-3, columns 3-5
    assert image.shape == (70, 70, 3)
    assert (image[10, 30:60] == red).all() and (image[39, 30:60] == red).all()  # top and bottom edges
    assert (image[10:40, 30] == red).all() and (image[10:40, 59] == red).all()  # left and right edges
    assert (image[35, 35] == 255).all()  # inside: the input's white pixel at (3, 3), not covered
    assert (image[9, 30:60] != red).any(axis=-1).all() and (image[10:40, 60] != red).any(axis=-1).all()
    corner = marked_patch(source, 0, 0, size=70)  # at the border the box is cut where 'SAME' pads zeros
    assert (corner[0, 0:20] == red).all() and (corner[19, 0:20] == red).all()


def wcag_luminance(hex_colour: str) -> float:
    """The WCAG 2 relative luminance of #rrggbb, written out here as the standard gives it."""
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_confusion_cells_write_every_count_readably():
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.fill_diagonal(matrix, [978, 1129, 1022, 1007, 976, 882, 948, 1020, 966, 1000])
    matrix[4, 9], matrix[7, 2], matrix[5, 3] = 3, 30, 300
    cells = confusion_cells(matrix)
    assert len(cells) == 100 and sum(c["count"] for c in cells) == matrix.sum()
    by_cell = {(int(c["true"]), int(c["predicted"])): c for c in cells}
    for (true, predicted), cell in by_cell.items():
        assert cell["count"] == matrix[true, predicted]
        lighter, darker = sorted((wcag_luminance(cell["fill"]), wcag_luminance(cell["ink"])), reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 4.5, (true, predicted, cell)  # WCAG AA for text
    assert all(by_cell[d, d]["ink"] == "#ffffff" for d in range(10))  # the dark diagonal: white counts
    assert by_cell[0, 1]["ink"] == "#000000"  # an empty cell is light: black counts
    assert wcag_luminance(by_cell[5, 3]["fill"]) < wcag_luminance(by_cell[4, 9]["fill"])  # more errors, darker


def test_a_picked_cell_is_read_only_from_one_well_formed_point():
    assert picked_cell([{"true": "4", "predicted": "9"}]) == (4, 9)
    for forged in (None, [], "4,9", [{"true": "4"}], [{"true": "44", "predicted": "9"}],
                   [{"true": "-1", "predicted": "9"}], [{"true": "4", "predicted": "9"}] * 2, [["4", "9"]]):
        assert picked_cell(forged) is None, forged


@pytest.mark.mnist
def test_the_default_pixel_of_a_convolution_by_hand_is_on_the_digit(real_mnist):
    """Test image 0 (a 7) with the bundled model: the default map and pixel of each layer read some ink."""
    model, _ = cnn.load_model()
    image = real_mnist.test_images[0].float().div(255)[None, None]
    acts = activations(model, image)
    assert acts["input"][0, 14, 14] == 0 and not acts["input"][0, 13:16, 13:16].any()  # the centre is blank paper
    for layer in (1, 2, 3):
        channel = most_active_map(acts[f"relu{layer}"])
        assert acts[f"relu{layer}"][channel].max() > 0
        row, col = strongest_output(acts[f"conv{layer}"][channel])
        result = convolution_at(model, acts, f"conv{layer}", channel, row, col)
        assert np.abs(result["patch"]).sum() > 0, layer
        assert result["value"] == acts[f"conv{layer}"][channel].max() > 0


# ---------------------------------------------------------------- issue 12: what a page shows is read from the stages

from cnn.checkpoint import BUNDLED_FASHION_MODEL, BUNDLED_MODEL  # noqa: E402
from cnn.config import ARTICLE  # noqa: E402
from cnn.data import FASHION_SPEC, MNIST_SPEC  # noqa: E402
from cnn.features import (class_template_grid, class_templates, confusion_counts, conv_layers,  # noqa: E402
                          dense_layers, hidden_strip, history_folder, no_maps_sentence)
from cnn.model import Stage, StagedNetwork, build_model  # noqa: E402
from cnn.views import diverging_rgb  # noqa: E402


def network(name: str, dataset: str = "mnist", seed: int = 0, init_std: float = 0.1):
    """A fresh network of NETWORKS, in eval mode, with weights large enough to give non-trivial maps."""
    torch.manual_seed(seed)
    model = build_model(ARTICLE.replace(architecture=name, dataset=dataset, init_std=init_std)).eval()
    with torch.no_grad():  # biases start at 0: give them values, so a test can see whether they are added
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    return model


def weight_shape(model, name: str) -> tuple:
    """(out, in, k, k) of a conv layer read from the state_dict, not through cnn.features."""
    return tuple(model.state_dict()[f"{name}.weight"].shape)


@pytest.mark.parametrize("name, expected", [
    ("cnn", [("conv1", 32, 1, 3, "input"), ("conv2", 64, 32, 3, "pool1"), ("conv3", 128, 64, 3, "pool2")]),
    ("lenet", [("conv1", 6, 1, 5, "input"), ("conv2", 16, 6, 5, "pool1")]),
    ("one-conv", [("conv1", 32, 1, 3, "input")]),
    ("mlp", []),
    ("softmax", []),
])
def test_conv_layers_are_read_from_the_networks_stages(name, expected):
    """Feature maps lists the conv layers a network declares: LeNet two of 6 and 16 maps with 5x5 filters, the
    first block alone one, the MLP and softmax none; each layer's maps and filters are its weights' own."""
    model = network(name)
    layers = conv_layers(model)
    assert [(l.name, l.maps, l.inputs, l.kernel_size, l.input) for l in layers] == expected
    x = torch.rand(1, 1, 28, 28)
    acts = activations(model, x)
    for layer in layers:
        out, inputs, k, _ = weight_shape(model, layer.name)
        assert (layer.maps, layer.inputs, layer.kernel_size) == (out, inputs, k)
        assert list(layer.views) == ["conv", "relu", "pool"]  # before ReLU, after ReLU, after pooling, in order
        assert all(acts[key].shape[0] == out for key in layer.views.values())
        assert acts[layer.input].shape[0] == inputs  # what the layer reads has as many maps as its filters read
        assert layer.bias == (name == "lenet")  # LeNet's convolutions have biases, the article's have none
        assert kernels(model, layer.name).shape == (out, k, k)
    assert (no_maps_sentence(model) == "") == bool(layers)
    if not layers:
        assert "no convolution layers, so there are no feature maps" in no_maps_sentence(model)


class EdgesOnly(StagedNetwork):
    """A network declared here with names no page knows: one conv called 'edges', a ReLU, no pooling."""

    stages = (Stage("edges", "conv", module="edges", activation="edge_maps"),
              Stage("edge_relu", "relu", activation="edge_relu"),
              Stage("flatten", "flatten"),
              Stage("logits", "linear", module="out", activation="logits"))
    explanations = {}

    def __init__(self):
        super().__init__()
        self.edges = torch.nn.Conv2d(1, 4, 3)  # no padding: 28 -> 26
        self.out = torch.nn.Linear(4 * 26 * 26, 10)


def test_any_declared_conv_is_shown_with_only_the_views_that_follow_it():
    model = EdgesOnly().eval()
    [layer] = conv_layers(model)
    assert (layer.name, layer.maps, layer.kernel_size, layer.padding, layer.bias) == ("edges", 4, 3, 0, True)
    assert layer.views == {"conv": "edge_maps", "relu": "edge_relu"}  # no pooling follows it: none offered
    x = torch.rand(1, 1, 28, 28)
    acts = activations(model, x)
    result = convolution_at(model, acts, "edges", 2, 25, 0)  # the last row: no padding, so it reads rows 25-27
    assert np.array_equal(result["patch"][0], x[0, 0, 25:28, 0:3].numpy())
    assert result["total"] == pytest.approx(F.conv2d(x, model.edges.weight, model.edges.bias)[0, 2, 25, 0].item(),
                                            abs=1e-5)
    with pytest.raises(ValueError, match="no convolution layer called 'conv1'"):
        convolution_at(model, acts, "conv1", 0, 0, 0)


@pytest.mark.parametrize("name, expected", [("cnn", [("fc", 625)]), ("lenet", [("fc1", 120), ("fc2", 84)]),
                                            ("one-conv", [("fc", 625)]), ("mlp", [("fc", 625)]), ("softmax", [])])
def test_hidden_layers_are_read_from_the_stages(name, expected):
    model = network(name)
    layers = dense_layers(model)
    assert [(l.name, l.units) for l in layers] == expected
    acts = activations(model, torch.rand(1, 1, 28, 28))
    for layer in layers:
        hidden = F.relu(torch.from_numpy(acts[layer.activation]))  # recorded after its ReLU: no negative value
        assert acts[layer.activation].shape == (layer.units,) and torch.equal(hidden, torch.from_numpy(acts[layer.activation]))
        strip = hidden_strip(acts[layer.activation])
        side = int(np.ceil(np.sqrt(layer.units)))  # FC 625: 25 rows of 25, FC 120: 11 of 11, FC 84: 9 of 10
        assert strip.shape[1] == side and strip.shape[0] * side >= layer.units > (strip.shape[0] - 1) * side


@pytest.mark.parametrize("dataset", ["mnist", "fashion"])
def test_softmax_weight_images_are_its_weight_rows(dataset):
    model = network("softmax", dataset)
    templates = class_templates(model)
    weight = model.state_dict()["out.weight"].numpy()  # (10, 784)
    assert templates.shape == (10, 28, 28)
    assert np.array_equal(templates, weight.reshape(10, 28, 28))
    # The orientation a student reads: each class's score is its image of weights times the input image, plus bias.
    x = torch.rand(1, 1, 28, 28)
    scores = (templates * x[0, 0].numpy()).sum(axis=(1, 2)) + model.state_dict()["out.bias"].numpy()
    with torch.no_grad():
        assert np.allclose(model(x)[0].numpy(), scores, atol=1e-5)
    grid, limit = class_template_grid(templates, (MNIST_SPEC if dataset == "mnist" else FASHION_SPEC).class_names)
    assert limit == pytest.approx(np.abs(weight).max())
    side = 28 * 3  # 84 px tiles: each weight a 3x3 square
    top, left = GAP, GAP + 3 * (side + GAP)  # class 3's tile, first row
    assert np.array_equal(grid[top:top + side:3, left:left + side:3], diverging_rgb(templates[3], limit))
    for name in ("cnn", "mlp", "lenet", "one-conv"):  # only softmax regression maps pixels straight to classes
        assert class_templates(network(name)) is None


@pytest.mark.parametrize("channel, row, col", [(0, 0, 0), (3, 14, 9), (5, 27, 27)])
def test_lenet_conv1_by_hand_with_a_5x5_kernel_and_bias_equals_conv2d(channel, row, col):
    model = network("lenet", seed=1)
    x = torch.rand(1, 1, 28, 28)
    acts = activations(model, x)
    weight, bias = model.state_dict()["conv1.weight"], model.state_dict()["conv1.bias"]
    expected = F.conv2d(x, weight, bias, padding=2)[0, channel, row, col].item()  # LeNet's conv1: 5x5, a 2 px border
    result = convolution_at(model, acts, "conv1", channel, row, col)
    image = np.pad(x[0, 0].numpy(), 2)
    assert result["patch"].shape == (1, 5, 5)
    assert np.array_equal(result["patch"][0], image[row:row + 5, col:col + 5])
    assert result["bias"] == pytest.approx(bias[channel].item()) and abs(result["bias"]) > 1e-3
    assert result["total"] == pytest.approx(expected, abs=1e-5)
    assert result["value"] == pytest.approx(expected, abs=1e-5)
    assert float(result["per_channel"].sum()) == pytest.approx(expected - bias[channel].item(), abs=1e-5)


@pytest.mark.parametrize("row, col", [(0, 0), (9, 4)])
def test_lenet_conv2_by_hand_sums_six_5x5_patches_and_its_bias(row, col):
    model = network("lenet", seed=2)
    x = torch.rand(1, 1, 28, 28)
    acts = activations(model, x)
    sd = model.state_dict()
    with torch.no_grad():  # written out here: conv1 (pad 2), ReLU, 2x2 max-pool, then conv2 with no border
        pool1 = F.max_pool2d(F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], padding=2)), 2)
        expected = F.conv2d(pool1, sd["conv2.weight"], sd["conv2.bias"])[0, 11, row, col].item()
    result = convolution_at(model, acts, "conv2", 11, row, col)
    assert result["patch"].shape == (6, 5, 5)
    assert np.allclose(result["patch"], pool1[0, :, row:row + 5, col:col + 5].numpy(), atol=1e-6)
    assert result["total"] == pytest.approx(expected, abs=1e-4)
    assert result["value"] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="10x10"):  # 14 - 5 + 1 = 10: no row 10
        convolution_at(model, acts, "conv2", 0, 10, 0)


def test_a_5x5_convolution_table_lists_25_products_and_says_the_bias_is_added():
    model = network("lenet", seed=3)
    acts = activations(model, torch.rand(1, 1, 28, 28))
    for layer, channel, (row, col), first in (("conv1", 4, (1, 26), (-1, 24)), ("conv2", 7, (3, 5), (3, 5))):
        result = convolution_at(model, acts, layer, channel, row, col)
        shown = int(np.argmax(np.abs(result["per_channel"])))
        table = convolution_table(result, shown, 3)
        text = products_table(table, (row, col))
        rows = text.splitlines()[2:-1]
        assert len(rows) == 25
        assert rows[0].startswith(f"| ({first[0]}, {first[1]})")  # the patch's top-left input position
        assert ("border" in rows[0]) == (layer == "conv1")  # conv1's 2 px border lies outside the image there
        assert round(sum(numbers_in(line)[-1] for line in rows), 3) == pytest.approx(table["shown_sum"], abs=1e-9)
        sentence = convolution_sentence(result, table, layer, channel, (row, col), shown)
        assert f"bias, {result['bias']:+.3f}, is added" in sentence
        assert f"**{result['total']:.3f}**" in sentence and f"**{result['value']:.3f}**" in sentence
        assert "25 products" in sentence


def test_marked_patch_boxes_a_5x5_patch_with_no_border():
    source = np.zeros((14, 14), dtype=np.float32)
    red = (255, 40, 40)
    image = marked_patch(source, 2, 3, size=140, kernel_size=5, padding=0)  # rows 2-6, columns 3-7, 10 px each
    assert (image[20, 30:80] == red).all() and (image[69, 30:80] == red).all()
    assert (image[20:70, 30] == red).all() and (image[20:70, 79] == red).all()
    assert (image[19, 30:80] != red).any(axis=-1).all() and (image[20:70, 80] != red).any(axis=-1).all()


def test_the_confusion_matrix_is_labelled_with_the_datasets_class_names():
    labels = np.array([0, 0, 6, 6, 6, 9])
    predicted = np.array([0, 6, 6, 0, 0, 7])
    matrix = confusion_counts(labels, predicted, FASHION_SPEC.num_classes)
    cells = confusion_cells(matrix, FASHION_SPEC.class_names)
    by_names = {(c["true"], c["predicted"]): c["count"] for c in cells}
    assert len(cells) == 100 and set(by_names) == {(t, p) for t in FASHION_SPEC.class_names
                                                   for p in FASHION_SPEC.class_names}
    assert by_names["Shirt", "T-shirt/top"] == 2 and by_names["Ankle boot", "Sneaker"] == 1
    assert by_names["T-shirt/top", "T-shirt/top"] == 1 and sum(by_names.values()) == 6
    names = FASHION_SPEC.class_names
    assert picked_cell([{"true": "Shirt", "predicted": "T-shirt/top"}], names) == (6, 0)
    for forged in ([{"true": "6", "predicted": "0"}], [{"true": "Shirt", "predicted": "Hat"}],
                   [{"true": ["Shirt"], "predicted": "Bag"}]):
        assert picked_cell(forged, names) is None, forged
    assert [c["true"] for c in confusion_cells(np.eye(10, dtype=int))][::10] == [str(d) for d in range(10)]  # MNIST


def test_only_a_models_own_history_is_offered(tmp_path):
    """models/ holds the bundled article model's epochs and filter snapshots: not the Fashion model's history."""
    assert history_folder(tmp_path / "runs" / "lenet" / "model.pt") == tmp_path / "runs" / "lenet"
    assert history_folder(BUNDLED_MODEL) == BUNDLED_MODEL.parent
    assert history_folder(BUNDLED_FASHION_MODEL) is None


# ---------------------------------------------------------------- the page, run by Streamlit's AppTest

@pytest.fixture
def page_app(tmp_path, monkeypatch):
    """The app (AppTest) with its runs under tmp_path, as a laptop's one user; -> (AppTest, runs folder)."""
    import streamlit as st
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CNN_CLASS_DIR", str(tmp_path / "class"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    address = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield AppTest.from_file(str(ROOT / "app.py"), default_timeout=180), tmp_path / "runs"
    config.set_option("server.address", address)
    st.cache_resource.clear()


def saved_run(runs, name: str, network_name: str, dataset: str = "mnist"):
    """A finished run of network_name on dataset, fresh weights, saved as training leaves it."""
    from cnn.checkpoint import make_card, save_checkpoint

    model = network(network_name, dataset)
    config = ARTICLE.replace(architecture=network_name, dataset=dataset)
    save_checkpoint(runs / name / "model.pt", model,
                    make_card(config, model, status="finished", epochs=1, steps=10, accuracy=0.1, run=name))
    return model


def chart_values(app, field_name: str) -> list[list[dict]]:
    """The data rows of each Vega-Lite chart on the page that has field_name (Streamlit sends them as Arrow)."""
    import json

    import pyarrow

    charts = []
    for chart in app.get("vega_lite_chart"):
        rows = pyarrow.ipc.open_stream(chart.proto.data.data).read_all().to_pylist() if chart.proto.data.data else []
        if rows and field_name in rows[0]:
            charts.append(rows)
        else:
            charts.extend(d for d in [json.loads(chart.proto.spec).get("data", {}).get("values", [])]
                          if d and field_name in d[0])
    return charts


@pytest.mark.mnist
def test_the_page_shows_lenets_two_conv_layers_and_its_biases(page_app):
    from pages.shared import kept

    app, runs = page_app
    saved_run(runs, "lenet-run", "lenet")
    app.session_state["active_run"] = "lenet-run"
    app.session_state[kept("layer")] = "conv3"  # kept from the article's network: LeNet has no conv3
    app.session_state[kept("map_index")] = 100  # and a map number beyond LeNet's 6
    app.switch_page("pages/features.py").run()
    assert not app.exception
    layer = next(r for r in app.radio if r.label == "Layer")
    assert layer.options == ["conv1 (6 maps)", "conv2 (16 maps)"] and layer.value == "conv1"
    assert [r.options for r in app.radio if r.label == "Stage"] == [["before ReLU", "after ReLU", "after pooling"]]
    assert "The filters of conv1: 6 filters of 5x5, each with a bias" in [h.value for h in app.subheader]
    layer.set_value("conv2").run()
    assert not app.exception
    captions = [image.proto.imgs[0].caption for image in app.get("image")]
    assert "conv2, before ReLU: 16 maps of 10x10, numbered 0 to 15" in captions
    assert app.slider[0].max == 5  # each conv2 filter reads LeNet's 6 pooled maps
    assert "The filters of conv2: 16 filters of 5x5 over 6 input maps, each with a bias" in [h.value for h in app.subheader]
    assert any("the filter's bias" in m.value and "conv2 reads 6 input maps" in m.value for m in app.markdown)
    assert {"FC 120 activations (11x11, bright = strong)", "FC 84 activations (9x10, bright = strong)"} <= set(captions)


@pytest.mark.mnist
def test_the_page_shows_what_an_mlp_has_and_says_why_there_are_no_maps(page_app):
    app, runs = page_app
    saved_run(runs, "mlp-run", "mlp")
    app.session_state["active_run"] = "mlp-run"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert not [r for r in app.radio if r.label == "Layer"]
    assert any("An MLP has no convolution layers, so there are no feature maps" in i.value for i in app.info)
    assert "FC 625 activations (25x25, bright = strong)" in [image.proto.imgs[0].caption for image in app.get("image")]
    assert any(re.match(r"[\d,]+ of 10,000 right", c.value) for c in app.caption)  # its confusion matrix


@pytest.mark.fashion
def test_a_fashion_softmax_model_shows_its_weight_images_and_the_class_names(page_app):
    app, runs = page_app
    model = saved_run(runs, "softmax-fashion", "softmax", "fashion")
    app.session_state["active_run"] = "softmax-fashion"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any("Softmax regression has no convolution layers" in i.value for i in app.info)
    captions = [image.proto.imgs[0].caption for image in app.get("image")]
    assert any(c.startswith("What softmax regression learnt: its 28x28 weights for each class") for c in captions)
    names = list(FASHION_SPEC.class_names)
    with torch.inference_mode():  # the reference: the model called directly on Fashion test image 0
        from cnn.data import load_dataset
        data = load_dataset("fashion")
        read_as = int(model(data.test_images[:1].float().div(255)[:, None]).argmax(1))
    label = names[int(data.test_labels[0])]
    assert any(c.value == f"Input: test image #0 (label {label}), read as {names[read_as]}." for c in app.caption)
    [probabilities] = chart_values(app, "class")
    assert [row["class"] for row in probabilities] == names
    [cells] = chart_values(app, "fill")
    assert {row["true"] for row in cells} == set(names) and sum(row["count"] for row in cells) == 10_000
    assert next(r for r in app.radio if r.label == "Pick").options == ["by index", "by class", "misclassified"]


@pytest.mark.mnist
def test_time_travel_shows_a_lenet_run_as_it_was_after_an_epoch(page_app):
    from cnn.checkpoint import make_card, save_checkpoint

    app, runs = page_app
    final = saved_run(runs, "lenet-run", "lenet")
    earlier = network("lenet", seed=7)  # another set of weights: what the run was after epoch 1
    config = ARTICLE.replace(architecture="lenet")
    save_checkpoint(runs / "lenet-run" / "epoch-1.pt", earlier,
                    make_card(config, earlier, status="finished", epochs=1, steps=5, accuracy=0.1, run="lenet-run"))

    def first_filter_row(model) -> str:  # filter 0's top row, as the page writes it
        return " ".join(f"{v:+.2f}" for v in model.state_dict()["conv1.weight"][0, 0, 0].tolist())

    assert first_filter_row(final) != first_filter_row(earlier)
    app.session_state["active_run"] = "lenet-run"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    filters = next(frame.value for frame in app.dataframe if "filter 0" in frame.value.columns)
    assert filters["filter 0"][0] == first_filter_row(final)
    app.select_slider[0].set_value(1).run()  # the model as it was after epoch 1
    assert not app.exception
    filters = next(frame.value for frame in app.dataframe if "filter 0" in frame.value.columns)
    assert filters["filter 0"][0] == first_filter_row(earlier)
    assert [r.options for r in app.radio if r.label == "Layer"] == [["conv1 (6 maps)", "conv2 (16 maps)"]]


def test_a_label_too_wide_for_its_tile_is_written_smaller_not_cut():
    """Under an 84 px patch, "#3362: 3.53" at the strip's usual size ran past both edges: its ink must now end
    inside the tile, with white at both edges; a short label keeps the usual size."""
    from cnn.features import LABEL_HEIGHT, label_strip

    narrow = label_strip("#3362: 3.53", 84)
    ink = np.nonzero((narrow < 128).any(axis=(0, 2)))[0]
    assert narrow.shape == (LABEL_HEIGHT, 84, 3) and len(ink) > 0
    assert ink.min() > 0 and ink.max() < 83  # nothing touches the tile's edges: the text is whole
    roomy = label_strip("#3362: 3.53", 400)
    roomy_ink = np.nonzero((roomy < 128).any(axis=(0, 2)))[0]
    assert roomy_ink.max() - roomy_ink.min() > ink.max() - ink.min()  # with room, the same text is drawn larger
