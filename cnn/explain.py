"""Predictions in words (the model's dataset's class names), and why: attribution maps over the 28x28 input
(captum's Integrated Gradients and occlusion for every network, Grad-CAM where a network declares a grad_cam_stage)."""
from __future__ import annotations

import html

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

from .data import MNIST_SPEC, DatasetSpec
from .model import model_spec  # re-exported: pages and modules import it from here too

ATTRIBUTION_METHODS = {  # key -> what its map shows (the caption's second half); the first is the page's default:
    # Integrated Gradients shows something for every drawing; Grad-CAM is coarse (7x7) and empty for a few
    "integrated_gradients": "how much each pixel pushed the score up (red) or down (blue)",
    "grad_cam": "which regions {stage}'s maps found decisive (coarse: {stage}'s maps are {cells})",
    "occlusion": "how much the score drops when a 5x5 patch is blacked out",
}
METHOD_NAMES = {"grad_cam": "Grad-CAM", "integrated_gradients": "Integrated Gradients", "occlusion": "Occlusion"}
UNSURE_BELOW = 0.6  # a top probability under this is reported as "not sure"
# Grad-CAM keeps only the positive part of the weighted sum of conv3's rectified maps (7x7). Where nothing is positive,
# or the positive peak is under 2% of the negative one, a map scaled up from such a sliver would look confident and
# mean nothing: under this fraction it counts as empty (4 of the bundled model's first 300 test digits, 0 of a FAST
# model's).
EMPTY_BELOW = 0.02
GRAD_CAM_BACKGROUND = ("Grad-CAM can light up empty paper: each of {stage}'s {cells} cells sees a patch of your drawing "
                       "around it, and an empty spot is evidence too ({example}).")
EMPTY_SPOT_EXAMPLES = {True: "no stroke where a 0 would close", False: "no sleeve where a shirt would have one"}


def with_article(digit: int) -> str:
    """'a 7', 'an 8': the article a digit takes when read aloud (only 8 starts with a vowel sound among 0-9)."""
    return f"{'an' if int(digit) == 8 else 'a'} {int(digit)}"


def names_are_numbers(spec: DatasetSpec) -> bool:
    """Whether spec's class names are its labels' numbers ("0"-"9"): then an answer reads "a 7", else "Sneaker"."""
    return spec.class_names == tuple(str(label) for label in range(spec.num_classes))


def class_phrase(label: int, spec: DatasetSpec = MNIST_SPEC) -> str:
    """A class as a sentence names it: "a 7", "an 8" for digits; the class name ("Sneaker") otherwise."""
    return with_article(label) if names_are_numbers(spec) else spec.class_name(label)


ALWAYS_A_DIGIT = ("The network must always answer with one of 0-9, even for a scribble: it has no \"not a digit\" "
                  "answer, so this page checks the ink first. And \"sure\" is not \"right\": a high percentage "
                  "means the network has no doubt, not that it read your digit correctly.")


def always_an_answer(spec: DatasetSpec = MNIST_SPEC) -> str:
    """Under every answer or refusal: the network must pick a class, and "sure" is not "right"."""
    if names_are_numbers(spec):
        return ALWAYS_A_DIGIT
    return (f"The network must always answer with one of its {spec.num_classes} {spec.classes_word}, even for a "
            f"scribble: it has no \"none of these\" answer, so this page checks the drawing first. And \"sure\" is "
            f"not \"right\": a high percentage means the network has no doubt, not that it read your drawing correctly.")


def attribution_methods(model: nn.Module) -> list[str]:
    """The ATTRIBUTION_METHODS keys that apply to model: Grad-CAM needs a declared grad_cam_stage (the softmax
    baseline and the MLP have none); Integrated Gradients and occlusion apply to every network."""
    return [method for method in ATTRIBUTION_METHODS if method != "grad_cam" or getattr(model, "grad_cam_stage", "")]


def grad_cam_cells(model: nn.Module, x: torch.Tensor) -> str:
    """The size of the maps Grad-CAM weighs for an input like x, as words: "7x7" for the article's conv3."""
    with torch.inference_mode():
        height, width = model.features(x[:1])[0, 0].shape
    return f"{height}x{width}"



def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(1, 1, 28, 28) float32 -> the ten probabilities as a (10,) float array."""
    with torch.inference_mode():
        return F.softmax(model(x), dim=1)[0].cpu().numpy()


def describe(probabilities: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> dict:
    """{digit, name, second, probability, sure, text}: the answer in spec's words; an unsure answer names the two
    candidates. digit: the top label (an int, whatever the dataset); name: its class name ("7", "Sneaker")."""
    order = np.argsort(probabilities)[::-1]
    top, second = int(order[0]), int(order[1])
    probability = float(probabilities[top])
    sure = probability >= UNSURE_BELOW
    first_name, second_name = spec.class_name(top), spec.class_name(second)
    if sure:
        text = (f"It's {with_article(top)} ({probability:.0%} sure)." if names_are_numbers(spec)
                else f"Read as {first_name} ({probability:.0%} sure).")
    else:
        text = f"Not sure: {first_name} or {second_name}? ({probability:.0%} vs {float(probabilities[second]):.0%})"
    return {"digit": top, "name": first_name, "second": second, "probability": probability, "sure": sure,
            "text": text}


def answer_html(image: np.ndarray, answer: dict, spec: DatasetSpec = MNIST_SPEC) -> str:
    """The answer as one piece of HTML: the image the network read (inline, each pixel a 4x4 square), its class
    name large when sure, and describe()'s sentence in bold.

    One element instead of a row of two columns, an image and two texts: each is a message the browser renders in
    turn (~5-10 ms each on a 2-core machine), and the inline image needs no /media request.
    image: (H, W) uint8, what the network sees; answer: describe()'s dict.
    """
    from .inside import png_data_url  # cnn.inside imports the model and features; only this needs it

    height, width = image.shape[:2]
    picture = (f"<figure style='margin:0;text-align:center'><img src='{png_data_url(image, cell=4)}' "
               f"width='{4 * width}' height='{4 * height}' alt='what the network sees'>"
               f"<figcaption style='font-size:0.8rem;opacity:0.7'>what the network sees ({width}x{height})"
               "</figcaption></figure>")
    name = ""
    if answer["sure"]:  # a digit large; a class name ("Ankle boot") smaller, to fit its ~200 px column
        size = "6rem" if names_are_numbers(spec) else "2rem"
        name = f"<div style='font-size:{size};line-height:1'>{html.escape(answer['name'])}</div>"
    return (f"<div style='display:flex;gap:1rem;align-items:center'>{picture}"
            f"<div>{name}<p><strong>{html.escape(answer['text'], quote=False)}</strong></p></div></div>")


def grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM on model's grad_cam_stage, upsampled to (28, 28), in [0, 1]; all zeros when it is empty (see
    EMPTY_BELOW). Each map's weight is the mean gradient of the score at that conv layer's units (zero wherever its
    ReLU cuts a value); the maps it weighs are the rectified ones the next layer sees.

    captum's LayerGradCam(model, <that stage's layer>, attr_dim_summation=False) gives the same weights times the
    maps before the ReLU; a test checks that, its negative values cut, it sums to these numbers. Written without
    hooks, so one shared model can serve many sessions at once.
    """
    with torch.enable_grad():
        maps = model.features(x.detach())  # the article's conv3, before its ReLU: (1, 128, 7, 7)
        score = model.head(maps)[0, target]
        gradients, = torch.autograd.grad(score, maps)  # at the conv's units: 0 wherever its ReLU cuts the value
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # one weight per map
    # The maps as the next layer sees them, after the ReLU. Weighed before it, a FAST model's conv3 maps are mostly
    # negative: its Grad-CAM showed nothing for 292 of the first 300 test digits (the bundled model's: 74), against
    # 0 (and 4) rectified.
    signed = (weights * F.relu(maps.detach())).sum(1, keepdim=True)  # (1, 1, 7, 7): evidence for (+), against (-)
    if float(signed.max()) <= EMPTY_BELOW * float(signed.abs().max()):  # also when every value is 0
        return np.zeros(tuple(x.shape[-2:]), dtype=np.float32)
    cam = F.interpolate(F.relu(signed), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max()).numpy()


def attribution(model: nn.Module, x: torch.Tensor, target: int, method: str = "grad_cam") -> np.ndarray:
    """(28, 28) attribution for class `target`; signed for Integrated Gradients, >= 0 otherwise.

    ValueError for a method that does not apply to model (see attribution_methods) or is unknown.
    """
    x = x.detach()
    if method not in attribution_methods(model):
        raise ValueError(f"Unknown attribution method {method!r} for this model: choose one of "
                         f"{', '.join(attribution_methods(model))}.")
    if method == "grad_cam":
        return grad_cam(model, x, target)
    if method == "integrated_gradients":
        result = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                      n_steps=16, internal_batch_size=16)
    else:
        result = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(1, 5, 5), strides=(1, 3, 3),
                                            baselines=0.0, perturbations_per_eval=256)
    return result[0, 0].detach().numpy()


def is_empty(attributions: np.ndarray) -> bool:
    """True when a map has nothing to show (every value 0): drawn, it would be the bare digit."""
    return not bool(np.any(np.asarray(attributions) != 0))


def explain(model: nn.Module, x: torch.Tensor, target: int, method: str) -> dict:
    """{map, empty, caption, note}: one attribution and the words that go with it.

    map: (28, 28) as attribution() gives it. caption: what the picture shows, for which digit. empty: None, or the
    sentence to show instead of a blank picture. note: one more line to show under the picture, or None.
    The class is named in the model's dataset's words ("a 7", "Sneaker"); Grad-CAM's words name its stage.
    """
    heat = attribution(model, x, target, method)
    spec = model_spec(model)
    name, target_words = METHOD_NAMES[method], class_phrase(target, spec)
    others = [METHOD_NAMES[m] for m in attribution_methods(model) if m != method]
    empty = None
    if is_empty(heat):
        empty = (f"{name} finds nothing to show for this image: nothing in it pushed the score for {target_words} "
                 f"up in a way {name} can see." + (f" Try {others[0]}." if others else ""))
    words, note = ATTRIBUTION_METHODS[method], None
    if method == "grad_cam":
        stage, cells = model.grad_cam_stage, grad_cam_cells(model, x)
        words = words.format(stage=stage, cells=cells)
        note = GRAD_CAM_BACKGROUND.format(stage=stage, cells=cells, example=EMPTY_SPOT_EXAMPLES[names_are_numbers(spec)])
    return {"map": heat, "empty": empty, "caption": f"{name} for {target_words}: {words}", "note": note}


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
