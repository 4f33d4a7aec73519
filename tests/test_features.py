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
    result = convolution_at(model, acts, 1, 5, row, col)
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
    result = convolution_at(model, acts, layer, 7, size // 2, col)
    assert result["patch"].shape == (source.shape[0], 3, 3) and source.shape[0] == {2: 32, 3: 64}[layer]
    kernel = getattr(model, f"conv{layer}").weight[7].detach().numpy()
    per_channel = per_channel_reference(source, kernel, size // 2, col)
    assert np.allclose(result["per_channel"], per_channel, rtol=1e-4, atol=1e-6)
    expected = reference[f"conv{layer}"][7, size // 2, col]
    assert result["total"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert result["value"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="choose a row"):
        convolution_at(model, acts, layer, 0, size, 0)


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
    weights = kernels(model, 2, input_channel=3)
    one_hot = torch.zeros(1, 32, 5, 5)
    one_hot[0, 3, 2, 2] = 1.0
    with torch.no_grad():
        response = model.conv2(one_hot)[0, :, 1:4, 1:4]  # (64, 3, 3) around the 1
    assert weights.shape == (64, 3, 3)
    assert np.allclose(weights, response.flip(-1, -2).numpy(), atol=1e-7)
    with pytest.raises(ValueError):
        kernels(model, 2, input_channel=32)


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
        result = convolution_at(model, acts, layer, channel, row, col)
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
        sentence = convolution_sentence(result, table, layer, channel, (row, col), shown)
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
        result = convolution_at(model, acts, layer, channel, row, col)
        assert np.abs(result["patch"]).sum() > 0, layer
        assert result["value"] == acts[f"conv{layer}"][channel].max() > 0
