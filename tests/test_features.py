"""cnn.features: hand-computed convolutions equal the maps; grids; the confusion matrix on REAL MNIST."""
import numpy as np
import pytest
import torch

import cnn
from cnn.features import activations, colour_bar, confusion_matrix, convolution_at, kernel_grid, kernels, maps_grid
from cnn.model import ConvNet


@pytest.fixture
def model_and_acts():
    torch.manual_seed(0)
    model = ConvNet(init_std=0.2).eval()
    x = torch.rand(1, 1, 28, 28)
    return model, activations(model, x)


@pytest.mark.parametrize("row, col", [(0, 0), (13, 14), (27, 27)])
def test_conv1_pixel_sum_equals_the_map_value(model_and_acts, row, col):
    model, acts = model_and_acts
    result = convolution_at(model, acts, 1, 5, row, col)
    assert result["patch"].shape == (1, 3, 3) and result["products"].shape == (1, 3, 3)
    assert result["total"] == pytest.approx(result["value"], abs=1e-5)
    if row == 0:
        assert (result["patch"][0, 0] == 0).all()  # zero padding above the image ('SAME')


@pytest.mark.parametrize("layer, size", [(2, 14), (3, 7)])
def test_deeper_layers_sum_over_input_channels(model_and_acts, layer, size):
    model, acts = model_and_acts
    result = convolution_at(model, acts, layer, 7, size // 2, 1)
    assert result["patch"].shape[0] == {2: 32, 3: 64}[layer]
    assert result["total"] == pytest.approx(result["value"], rel=1e-4, abs=1e-5)
    assert result["total"] == pytest.approx(result["per_channel"].sum(), rel=1e-6)
    with pytest.raises(ValueError, match="choose a row"):
        convolution_at(model, acts, layer, 0, size, 0)


def test_maps_grid_and_normalisation(model_and_acts):
    _, acts = model_and_acts
    grid, low, high = maps_grid(acts["conv1"], per="map")
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert low == pytest.approx(acts["conv1"].min()) and high == pytest.approx(acts["conv1"].max())
    layer_grid, _, _ = maps_grid(acts["conv1"], per="layer")
    assert layer_grid.shape == grid.shape and not np.array_equal(layer_grid, grid)
    assert colour_bar(low, high).shape == (12, 256, 3)


def test_kernel_grid_centred_on_zero(model_and_acts):
    model, _ = model_and_acts
    weights = kernels(model, 2, input_channel=3)
    assert weights.shape == (64, 3, 3)
    assert np.array_equal(weights, model.conv2.weight.detach().numpy()[:, 3])
    image, limit = kernel_grid(weights)
    assert limit == pytest.approx(np.abs(weights).max())
    with pytest.raises(ValueError):
        kernels(model, 2, input_channel=32)


@pytest.mark.mnist
def test_confusion_matrix_on_the_real_test_set(real_mnist):
    model, card = cnn.load_model()
    matrix, predicted = confusion_matrix(model, real_mnist.test_images, real_mnist.test_labels)
    assert matrix.sum() == 10_000
    assert np.trace(matrix) / 10_000 == pytest.approx(card["accuracy"], abs=1e-4)
    assert (matrix.sum(axis=1) == np.bincount(real_mnist.test_labels.numpy(), minlength=10)).all()
