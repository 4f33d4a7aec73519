"""cnn.explain: answers in words, and attributions checked against captum's own Grad-CAM."""
import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from cnn.explain import ATTRIBUTION_METHODS, attribution, describe, grad_cam, overlay, predict
from cnn.model import ConvNet, SoftmaxRegression


def test_describe_sure_and_unsure():
    sure = describe(np.array([0.01] * 9 + [0.91]))
    assert sure["digit"] == 9 and sure["sure"] and sure["text"].startswith("It's a 9")
    unsure = np.zeros(10)
    unsure[4], unsure[9] = 0.5, 0.45
    answer = describe(unsure)
    assert not answer["sure"] and answer["text"].startswith("Not sure: 4 or 9?")


def test_grad_cam_equals_captum_layer_grad_cam():
    torch.manual_seed(0)
    model = ConvNet(init_std=0.1).eval()
    x = torch.rand(1, 1, 28, 28)
    mine = grad_cam(model, x, 3)
    reference = LayerGradCam(model, model.conv3).attribute(x, target=3, relu_attributions=True)
    reference = LayerAttribution.interpolate(reference, (28, 28), interpolate_mode="bilinear")[0, 0].detach()
    reference = (reference / reference.max()).numpy()
    assert np.allclose(mine, reference, atol=1e-5)


@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_gives_a_28x28_map(method):
    torch.manual_seed(0)
    model = ConvNet(init_std=0.1).eval()
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5:23, 12:16] = 1.0
    heat = attribution(model, x, 1, method)
    assert heat.shape == (28, 28) and np.isfinite(heat).all() and np.abs(heat).max() > 0
    assert not any(p.grad is not None for p in model.parameters())  # a shared model is left untouched


def test_softmax_model_falls_back_from_grad_cam():
    model = SoftmaxRegression(init_std=0.1).eval()
    assert attribution(model, torch.rand(1, 1, 28, 28), 2, "grad_cam").shape == (28, 28)


def test_predict_and_overlay():
    probabilities = predict(ConvNet().eval(), torch.rand(1, 1, 28, 28))
    assert probabilities.shape == (10,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    picture = overlay(np.zeros((28, 28)), np.eye(28) - np.eye(28)[::-1])
    assert picture.shape == (224, 224, 3) and picture.dtype == np.uint8
    assert picture[0, 0, 0] > picture[0, 0, 2]  # positive: red
    assert picture[0, -1, 2] > picture[0, -1, 0]  # negative: blue
