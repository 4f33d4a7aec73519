"""cnn.features against independent references: torch.nn.functional applied by hand, matplotlib's colour map,
conv2 fed a one-hot input; the confusion matrix on REAL MNIST counted from the model's own argmax."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps

import cnn
from cnn.features import activations, colour_bar, confusion_matrix, convolution_at, kernel_grid, kernels, maps_grid
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
