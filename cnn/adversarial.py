"""Fool the network: adversarial examples, images changed by at most epsilon per pixel (L-inf) that the network reads
as another class. Untargeted: one step of the fast gradient sign method (Goodfellow et al. 2015, "Explaining and
harnessing adversarial examples"); targeted: projected gradient descent (Madry et al. 2018, "Towards deep learning
models resistant to adversarial attacks"). Gradients are taken with respect to the image only, through the eval
forward (cnn.experiments.eval_logits): the model's parameters, their .grad and its mode are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .experiments import check_images, eval_logits
from .model import model_spec
from .views import diverging_rgb

MAX_STEPS = 200  # a targeted attack's steps: 20 take ~50 ms here; a forged 10**9 must not take the server
STEP_FACTOR = 2.5  # PGD's step is 2.5 * epsilon / steps (Madry et al.): the walk can cross the box and come back
EPSILON_STEP = 0.005  # the smallest-epsilon search's grid: 0.005, 0.010, ..., 0.5
SEARCH_CHUNK = 25  # epsilons attacked per batch in smallest_flipping_epsilon (0.005 to 0.125 first)
EPSILON_LIMIT = 0.5  # beyond 0.5 a pixel can be set to anything: no longer "a small change"
GREY_LEVELS = 255  # a uint8 image's grey levels above black: epsilon 0.1 is 25 of them


def epsilon_grid(step: float = EPSILON_STEP, limit: float = EPSILON_LIMIT) -> np.ndarray:
    """(K,) float64 epsilons step, 2 * step, ..., limit: where smallest_flipping_epsilon looks."""
    return np.arange(1, int(round(limit / step)) + 1, dtype=np.float64) * step


def grey_levels(epsilon: float) -> int:
    """The whole grey levels of a uint8 image (0-255) that a change of epsilon stays within: 0.1 -> 25."""
    return int(np.floor(float(epsilon) * GREY_LEVELS + 1e-9))


def clamped_epsilon(value, default: float = 0.1, limit: float = EPSILON_LIMIT, step: float = EPSILON_STEP) -> float:
    """A browser's epsilon forced onto the slider's grid in [0, limit]: NaN, infinities and non-numbers give
    default, 1e9 gives limit."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    if not np.isfinite(value):
        return default
    return round(min(max(round(value / step) * step, 0.0), limit), 6)


# ---------------------------------------------------------------- checks

def _check_image(model: nn.Module, image) -> torch.Tensor:
    """A (side, side) float image in [0, 1] (numpy or torch) -> (1, 1, side, side) float32; ValueError otherwise."""
    side = model_spec(model).side
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            raise ValueError("The image must be floats in [0, 1] (divide a uint8 image by 255).")
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"The image must be a {side}x{side} array of values in [0, 1].")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor) or tuple(image.shape) != (side, side):
        raise ValueError(f"The image must be a {side}x{side} array of values in [0, 1].")
    x, _ = check_images(model, image.detach().cpu().reshape(1, 1, side, side))
    return x.float()


def _check_epsilon(epsilon) -> float:
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError("Epsilon must be a number from 0 to 1.") from None
    if not 0.0 <= epsilon <= 1.0:  # NaN fails both comparisons
        raise ValueError("Epsilon must be a number from 0 to 1.")
    return epsilon


def _check_target(model: nn.Module, target) -> int | None:
    if target is None:
        return None
    classes = model_spec(model).num_classes
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= int(target) < classes:
        raise ValueError(f"The target must be a class from 0 to {classes - 1}, or None for any other answer.")
    return int(target)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= int(steps) <= MAX_STEPS:
        raise ValueError(f"The steps must be a whole number from 1 to {MAX_STEPS}.")
    return int(steps)


# ---------------------------------------------------------------- the attacks, batched

def _image_gradient(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """d(cross-entropy of classes)/d(image) for x (B, 1, side, side): each image's loss alone (summed, not averaged,
    so one image's gradient does not depend on the batch's size). Parameters get no .grad."""
    with torch.inference_mode(False), torch.enable_grad():  # a caller inside no_grad/inference_mode still gets one
        x = x.detach().clone().requires_grad_(True)  # clones: tensors made in inference mode cannot be saved
        loss = F.cross_entropy(eval_logits(model, x), classes.clone(), reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def _into_box(candidate: torch.Tensor, x: torch.Tensor, epsilons: torch.Tensor) -> torch.Tensor:
    """candidate clamped to x +- epsilon (per image, (B,) epsilons) and to [0, 1], as float32 that never leaves the
    box: float32's rounding of x + epsilon can land just outside it (0 + 0.1 rounds to 0.10000000149), so values a
    hair outside, measured in float64, are moved one float32 step back toward x until they are in."""
    eps = epsilons.to(torch.float64).view(-1, 1, 1, 1)
    x64 = x.to(torch.float64)
    low, high = (x64 - eps).clamp(0.0, 1.0), (x64 + eps).clamp(0.0, 1.0)
    out = torch.minimum(torch.maximum(candidate.to(torch.float64), low), high).to(torch.float32)
    for _ in range(4):  # one step back is enough in practice; the loop only makes sure
        outside = ((out.to(torch.float64) - x64).abs() > eps) | (out < 0) | (out > 1)
        if not outside.any():
            break
        out = torch.where(outside, torch.nextafter(out, x.to(torch.float32)), out)
    return torch.where(((out.to(torch.float64) - x64).abs() > eps), x.to(torch.float32), out)


def _fgsm(model: nn.Module, x: torch.Tensor, answer: torch.Tensor, epsilons: torch.Tensor) -> torch.Tensor:
    """(B, 1, side, side) untargeted FGSM images: x (1, 1, side, side) + epsilon * sign of the gradient that raises
    the loss of the model's answer, one per epsilon. The gradient is taken once: it does not depend on epsilon."""
    direction = _image_gradient(model, x, answer).sign()
    candidates = x + epsilons.view(-1, 1, 1, 1).to(torch.float32) * direction
    return _into_box(candidates, x.expand(len(epsilons), -1, -1, -1), epsilons)


def _pgd(model: nn.Module, x: torch.Tensor, target: int, epsilons: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, 1, side, side) targeted PGD images from x (1, 1, side, side), one per epsilon: `steps` steps of
    step size STEP_FACTOR * epsilon / steps down the target's cross-entropy, projected onto the box after each."""
    start = x.expand(len(epsilons), -1, -1, -1)
    step_sizes = (STEP_FACTOR * epsilons / steps).view(-1, 1, 1, 1).to(torch.float32)
    classes = torch.full((len(epsilons),), target, dtype=torch.long)
    adversarial_x = start.clone()
    for _ in range(steps):
        gradient = _image_gradient(model, adversarial_x, classes)
        adversarial_x = _into_box(adversarial_x - step_sizes * gradient.sign(), start, epsilons)
    return adversarial_x


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _attacks(model: nn.Module, x: torch.Tensor, target: int | None, epsilons: np.ndarray, steps: int) -> torch.Tensor:
    """(B, 1, side, side) float32 CPU attacked images of x (1, 1, side, side), one per epsilon."""
    device = _device(model)
    x, eps = x.to(device), torch.as_tensor(epsilons, dtype=torch.float64, device=device)
    if target is None:
        with torch.no_grad():
            answer = eval_logits(model, x).argmax(1)
        return _fgsm(model, x, answer, eps).cpu()
    return _pgd(model, x, target, eps, steps).cpu()


def adversarial(model: nn.Module, image, target: int | None = None, epsilon: float = 0.1,
                steps: int = 20) -> np.ndarray:
    """(side, side) float32 in [0, 1] within epsilon of image ((side, side) float in [0, 1]) in every pixel.

    target None: untargeted FGSM, one step of epsilon * sign of the gradient that raises the loss of the model's own
    answer. A target class: targeted PGD, `steps` steps toward the target (1 to MAX_STEPS). epsilon in [0, 1].
    ValueError with a sentence for anything else. The model is not changed (nor its .grad, nor its mode)."""
    x = _check_image(model, image)
    target, epsilon, steps = _check_target(model, target), _check_epsilon(epsilon), _check_steps(steps)
    attacked = _attacks(model, x, target, np.array([epsilon]), steps)
    # Boxed again around the image as given: a float64 image's float32 copy is up to half a float32 step away from
    # it, and the result must be within epsilon of what the caller passed (checked in float64).
    given = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).detach().cpu()
    epsilons = torch.tensor([float(epsilon)], dtype=torch.float64)
    return _into_box(attacked, given.to(torch.float64).reshape(x.shape), epsilons)[0, 0].numpy()


def answer_of(model: nn.Module, image) -> int:
    """The model's answer (a class) for one (side, side) float image in [0, 1]."""
    return int(_answers(model, _check_image(model, image))[0])


@torch.no_grad()
def _answers(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B,) the model's answers for x (B, 1, side, side), float32, eval forward."""
    return eval_logits(model, x.to(_device(model))).argmax(1).cpu()


def smallest_flipping_epsilon(model: nn.Module, image, target: int | None = None, steps: int = 20,
                              grid: np.ndarray | None = None) -> float | None:
    """The smallest epsilon of grid (default epsilon_grid(): 0.005 to 0.5 by 0.005) whose attack changes the
    model's answer (target None: FGSM) or makes it the target (PGD, `steps` steps); None when none up to the
    grid's end does. Every epsilon is attacked at once, in one batch."""
    x = _check_image(model, image)
    target, steps = _check_target(model, target), _check_steps(steps)
    grid = epsilon_grid() if grid is None else np.asarray([_check_epsilon(e) for e in grid], dtype=np.float64)
    original = int(_answers(model, x)[0])
    if target is not None and original == target:
        return 0.0  # it reads as the target already: no change needed
    # The grid in order, SEARCH_CHUNK epsilons per batch, stopping at the first batch with a hit: the same answer as
    # attacking the whole grid at once, in a quarter of the time for an image that flips below 0.125.
    for start in range(0, len(grid), SEARCH_CHUNK):
        chunk = grid[start:start + SEARCH_CHUNK]
        answers = _answers(model, _attacks(model, x, target, chunk, steps))
        flipped = answers != original if target is None else answers == target
        hits = np.nonzero(flipped.numpy())[0]
        if len(hits):
            return float(chunk[hits[0]])
    return None


# ---------------------------------------------------------------- what the page shows

@dataclass(frozen=True)
class Fooling:
    """One attack on one image, as the page shows it."""

    original: np.ndarray  # (side, side) float32 in [0, 1]
    adversarial: np.ndarray  # (side, side) float32 in [0, 1], within epsilon of original
    change: np.ndarray  # (side, side, 3) uint8: adversarial - original, blue darker ... white ... red brighter
    change_limit: float  # the change at full colour (epsilon; the scale of `change`)
    largest_change: float  # the largest |adversarial - original| of any pixel
    original_probabilities: np.ndarray  # (classes,) float32
    probabilities: np.ndarray  # (classes,) float32 of the adversarial image
    original_answer: int
    answer: int  # the adversarial image's
    target: int | None
    epsilon: float
    sentence: str


@torch.no_grad()
def _probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """(B, classes) softmax of (B, side, side) float32 images."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(_device(model))
    return torch.softmax(eval_logits(model, x), dim=1).cpu().numpy()


def fool_sentence(spec, original: int, answer: int, target: int | None, epsilon: float) -> str:
    """What happened, facts only: "Changed by at most 0.100 (25 of 255 grey levels) per pixel, it now reads as 8
    instead of 3.". The network's answers, never what the picture is: a test image it misreads may be "fooled" into
    its true class. What to do next is advice()'s: it needs the smallest epsilon, which this attack does not know."""
    name = spec.class_name
    size = f"at most {epsilon:.3f} ({grey_levels(epsilon)} of {GREY_LEVELS} grey levels) per pixel"
    if target is not None and original == target:
        return f"The network reads {name(original)} already: choose another target."
    if epsilon == 0:
        return f"With epsilon 0 nothing changes: the network reads {name(original)}."
    if target is not None and answer == target:
        return (f"Changed by {size}, it now reads as {name(answer)} instead of {name(original)}: the target is "
                "reached.")
    if answer != original:
        if target is None:
            return f"Changed by {size}, it now reads as {name(answer)} instead of {name(original)}."
        return (f"Changed by {size}, it now reads as {name(answer)} instead of {name(original)}, not yet the "
                f"target {name(target)}.")
    if target is None:
        return f"Changed by {size}, it still reads {name(original)}."
    return f"Changed by {size}, it still reads {name(original)}, not {name(target)}."


def advice(spec, original: int, answer: int, target: int | None, epsilon: float, smallest: float | None,
           steps: int = 20, limit: float = EPSILON_LIMIT) -> str:
    """What to try next, from the facts and the smallest epsilon of the grid that works (smallest_flipping_epsilon
    for the same image and target; None: none up to limit does). "" when the attack worked or the target is the
    answer already. Never "raise epsilon" unless a larger epsilon on the slider is known to work."""
    worked = answer == target if target is not None else answer != original
    if worked or (target is not None and original == target):
        return ""
    name = spec.class_name
    goal = "change the answer" if target is None else f"make it read {name(target)}"
    if smallest is None:
        if target is None:
            return (f"One FGSM step does not change this {spec.class_word}'s answer at any epsilon up to {limit}: "
                    f"try a chosen target ({steps} gradient steps), a stronger attack.")
        return f"No epsilon up to {limit} makes it read {name(target)} in {steps} steps: choose another target."
    if smallest > epsilon:
        return f"Raise epsilon to {smallest:.3f} to {goal}."
    # A smaller epsilon works but this one does not: an attack's answer need not keep once it has flipped.
    walk = ("one FGSM step goes in a straight line and a longer one can step past the other answer"
            if target is None else f"the {steps} steps grow with epsilon and can overshoot")
    return f"Epsilon {smallest:.3f} does {goal}: {walk}; go back to {smallest:.3f}."


def attack_sentence(spec, result: "Fooling", smallest: float | None, steps: int = 20) -> str:
    """The page's sentence under an attack: what happened, then what to try next (see advice)."""
    told = advice(spec, result.original_answer, result.answer, result.target, result.epsilon, smallest, steps)
    return f"{result.sentence} {told}".strip()


def picture_caption(result: "Fooling") -> str:
    """The caption of side_by_side's picture: what each panel is, and the change that full colour stands for."""
    if result.largest_change == 0:
        return ("Left: the original. Middle: the same image (epsilon 0). Right: the change, amplified: no change, "
                "all white.")
    return (f"Left: the original. Middle: changed by at most {result.epsilon:.3f}. Right: the change, amplified "
            f"(red brighter, blue darker; full colour = a change of {result.change_limit:.3f}).")


def reachable_target(answer: int, num_classes: int, search, flipped_to) -> int:
    """The first target a page offers: the class after the answer when search(it) (the smallest epsilon, None when
    none up to the limit works) finds one; else the class that flipped_to(smallest FGSM epsilon) reads, or, when
    FGSM flips nothing, the class after the answer all the same (the page then says that no epsilon is enough).
    search(None) is the FGSM search; flipped_to(epsilon) -> the FGSM image's answer."""
    following = (answer + 1) % num_classes
    if search(following) is not None:
        return following
    fgsm = search(None)
    if fgsm is None:
        return following
    return int(flipped_to(fgsm))


def side_by_side(result: Fooling, scale: int = 6, gap: int = 2) -> np.ndarray:
    """(side * scale, 3 * side * scale + 2 * gap * scale, 3) uint8: the original, the adversarial image and the
    change amplified, in one picture (it keeps its row on a phone, where columns would stack), white between."""
    def rgb(image: np.ndarray) -> np.ndarray:
        return np.repeat((np.asarray(image, dtype=np.float64) * 255).round().astype(np.uint8)[..., None], 3, axis=2)

    panels = [rgb(result.original), rgb(result.adversarial), result.change]
    space = np.full((result.change.shape[0], gap, 3), 255, dtype=np.uint8)
    strip = np.concatenate([panels[0], space, panels[1], space, panels[2]], axis=1)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def fool(model: nn.Module, image, target: int | None = None, epsilon: float = 0.1, steps: int = 20) -> Fooling:
    """adversarial() with everything the page shows: both images, the change amplified (epsilon at full colour,
    so 0.01 is as visible as 0.3), both answers and probabilities, and a sentence."""
    x = _check_image(model, image)
    target, epsilon, steps = _check_target(model, target), _check_epsilon(epsilon), _check_steps(steps)
    original = x[0, 0].numpy()
    attacked = _attacks(model, x, target, np.array([epsilon]), steps)[0, 0].numpy()
    probabilities = _probabilities(model, np.stack([original, attacked]))
    answers = probabilities.argmax(1)
    difference = attacked.astype(np.float64) - original.astype(np.float64)
    limit = epsilon if epsilon > 0 else 1.0  # nothing changed: any limit draws all white
    return Fooling(original, attacked, diverging_rgb(difference, limit), limit, float(np.abs(difference).max()),
                   probabilities[0], probabilities[1], int(answers[0]), int(answers[1]), target, epsilon,
                   fool_sentence(model_spec(model), int(answers[0]), int(answers[1]), target, epsilon))
