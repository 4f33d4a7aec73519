"""Predictions in words, and why: attribution maps over the 28x28 input (captum, and Grad-CAM on conv3)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

ATTRIBUTION_METHODS = {
    "grad_cam": "Grad-CAM on conv3: which regions conv3's maps found decisive (coarse, 7x7)",
    "integrated_gradients": "Integrated Gradients: how much each pixel pushed the score up (red) or down (blue)",
    "occlusion": "Occlusion: how much the score drops when a 5x5 patch is blacked out",
}
UNSURE_BELOW = 0.6  # a top probability under this is reported as "not sure"


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(1, 1, 28, 28) float32 -> the ten probabilities as a (10,) float array."""
    with torch.inference_mode():
        return F.softmax(model(x), dim=1)[0].cpu().numpy()


def describe(probabilities: np.ndarray) -> dict:
    """{digit, probability, sure, text}: the answer in words; an unsure answer names the two candidates."""
    order = np.argsort(probabilities)[::-1]
    top, second = int(order[0]), int(order[1])
    probability = float(probabilities[top])
    sure = probability >= UNSURE_BELOW
    text = (f"It's a {top} ({probability:.0%} sure)." if sure
            else f"Not sure: {top} or {second}? ({probability:.0%} vs {float(probabilities[second]):.0%})")
    return {"digit": top, "second": second, "probability": probability, "sure": sure, "text": text}


def grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM on conv3's output, upsampled to (28, 28), in [0, 1].

    The same numbers as captum's LayerGradCam(model, model.conv3) with relu_attributions=True (a test
    checks), but written without hooks, so one shared model can serve many sessions at once.
    """
    with torch.enable_grad():
        maps = model.features(x.detach())  # (1, 128, 7, 7)
        score = model.head(maps)[0, target]
        gradients, = torch.autograd.grad(score, maps)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # one weight per map
    cam = F.relu((weights * maps.detach()).sum(1, keepdim=True))  # (1, 1, 7, 7)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    return (cam / top).numpy() if top > 0 else cam.numpy()


def attribution(model: nn.Module, x: torch.Tensor, target: int, method: str = "grad_cam") -> np.ndarray:
    """(28, 28) attribution for class `target`; signed for Integrated Gradients, >= 0 otherwise."""
    x = x.detach()
    if method == "grad_cam" and not hasattr(model, "features"):
        method = "integrated_gradients"  # the softmax baseline has no conv3
    if method == "grad_cam":
        return grad_cam(model, x, target)
    if method == "integrated_gradients":
        result = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                      n_steps=16, internal_batch_size=16)
    elif method == "occlusion":
        result = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(1, 5, 5), strides=(1, 3, 3),
                                            baselines=0.0, perturbations_per_eval=256)
    else:
        raise ValueError(f"Unknown attribution method {method!r}: choose one of {', '.join(ATTRIBUTION_METHODS)}.")
    return result[0, 0].detach().numpy()


def overlay(image: np.ndarray, attributions: np.ndarray, scale: int = 8) -> np.ndarray:
    """(28, 28) input in [0, 1] and an attribution map -> (28*scale, 28*scale, 3) uint8 picture.

    The digit in grey; positive attribution tinted red, negative blue, in proportion to its size.
    """
    grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 0.6
    values = np.asarray(attributions, dtype=np.float32)
    limit = float(np.abs(values).max()) or 1.0
    strength = np.clip(values / limit, -1, 1)
    rgb = np.stack([grey, grey, grey], axis=-1)
    red, blue = np.clip(strength, 0, 1)[..., None], np.clip(-strength, 0, 1)[..., None]
    rgb = rgb * (1 - red - blue) + red * np.array([1.0, 0.2, 0.1]) + blue * np.array([0.2, 0.4, 1.0])
    rgb = np.clip(rgb * 255, 0, 255).astype(np.uint8)
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)
