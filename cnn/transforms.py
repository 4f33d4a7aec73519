"""Transform the image: move, turn, scale, thicken or thin the strokes, add noise, black out a box, and see what the
network answers; accuracy on the test set as one transformation goes through its range (a robustness curve).

The lesson is the one of the Compare page's shift curve, told through every transformation: a network that
weighs each pixel on its own (softmax regression, the MLP) loses a moved digit, while convolution and pooling
find a pattern wherever it is. Nothing here changes a model or an image it is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .checkpoint import checkpoint_dataset
from .compare import (BUNDLED_COMPARISON, BUNDLED_COMPARISON_DATASET, MAX_CURVE_BYTES, ComparedRun, curve_path,
                      run_labels, shift_sentences)
from .experiments import check_images, eval_logits, quick_predictions
from .model import model_spec
from .storage import read_json_record, write_json_record

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


@dataclass(frozen=True)
class TransformRange:
    """One transformation's slider and sweep: its range, step and identity value, and its name in words."""

    low: float
    high: float
    step: float
    identity: float  # the value that leaves the image as it is
    title: str  # the slider's and the chart axis's label
    unit: str  # "px", "degrees", "x", ...

    def values(self) -> list[float]:
        """Every value from low to high in steps (the sweep chart's x axis), the identity among them."""
        count = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 6) for i in range(count + 1)]


# The sweep chart's and the sliders' ranges (the issue's: shift -8..8 px, rotation -60..60 degrees, noise 0..1).
# "shift" is horizontal here (negative: left); the page's second slider moves the image up and down.
TRANSFORM_RANGES: dict[str, TransformRange] = {
    "shift": TransformRange(-8, 8, 1, 0, "Move right (px; negative: left)", "px"),
    "rotate": TransformRange(-60, 60, 5, 0, "Turn (degrees anticlockwise)", "degrees"),
    "scale": TransformRange(0.5, 2.0, 0.1, 1.0, "Scale (x)", "x"),
    "thickness": TransformRange(-3, 3, 1, 0, "Stroke thickness (+ thicker, - thinner)", "px"),
    "noise": TransformRange(0.0, 1.0, 0.05, 0.0, "Noise (std)", "std"),
}
# The limits transform_image accepts (wider than the sliders: a caller may go further).
MAX_ROTATE = 180.0
SCALE_LIMITS = (0.25, 4.0)
MAX_THICKNESS = 3
MAX_NOISE = 1.0
# The test-set curves: 13 points each, on the first ROBUSTNESS_IMAGES test images.
CURVE_VALUES: dict[str, tuple[float, ...]] = {"shift": tuple(range(-6, 7)), "rotate": tuple(range(-60, 61, 10))}
ROBUSTNESS_IMAGES = 2000
EVAL_BATCH = 256  # images per forward: 2,000 images took 0.29 s in batches of 256, 0.33 s of 512, 0.48 s of 1,000


# ---------------------------------------------------------------- checks


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"The {name} must be a number.")
    return float(value)


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"The {name} must be a whole number.")
    return int(value)


def check_transform(side: int, shift=(0, 0), rotate=0.0, scale=1.0, thickness=0, noise=0.0, seed=0,
                    box=None) -> dict:
    """The transformation's settings as plain numbers, or ValueError with a sentence naming what is wrong."""
    if not isinstance(shift, (tuple, list)) or len(shift) != 2:
        raise ValueError("The shift must be two numbers of pixels: (down, right).")
    dy, dx = (_number(value, "shift") for value in shift)
    if abs(dy) > side or abs(dx) > side:
        raise ValueError(f"A shift must be within {side} pixels (the image's side) either way.")
    rotate = _number(rotate, "rotation")
    if abs(rotate) > MAX_ROTATE:
        raise ValueError(f"The rotation must be between -{MAX_ROTATE:g} and {MAX_ROTATE:g} degrees.")
    scale = _number(scale, "scale")
    if not SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]:
        raise ValueError(f"The scale must be between {SCALE_LIMITS[0]:g} and {SCALE_LIMITS[1]:g}.")
    thickness = _whole(thickness, "thickness")
    if abs(thickness) > MAX_THICKNESS:
        raise ValueError(f"The thickness must be a whole number from -{MAX_THICKNESS} to {MAX_THICKNESS}.")
    noise = _number(noise, "noise")
    if not 0 <= noise <= MAX_NOISE:
        raise ValueError(f"The noise must be between 0 and {MAX_NOISE:g}.")
    seed = _whole(seed, "seed")
    if box is not None:
        if not isinstance(box, (tuple, list)) or len(box) != 4:
            raise ValueError("A box is four whole numbers: (top, left, bottom, right).")
        box = tuple(_whole(value, "box") for value in box)
        top, left, bottom, right = box
        if not (0 <= top <= bottom <= side and 0 <= left <= right <= side):
            raise ValueError(f"A box must lie within the image: 0 <= top <= bottom <= {side}, "
                             f"0 <= left <= right <= {side}.")
    return {"shift": (dy, dx), "rotate": rotate, "scale": scale, "thickness": thickness, "noise": noise,
            "seed": seed, "box": box}


# ---------------------------------------------------------------- the transformations


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(N, C, H, W) moved dy rows down and dx columns right by copying: exact, zeros come in at the border."""
    moved = torch.zeros_like(x)
    height, width = x.shape[-2:]
    if abs(dx) >= width or abs(dy) >= height:
        return moved
    moved[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        x[..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return moved


def _thickened(x: torch.Tensor, steps: int) -> torch.Tensor:
    """+steps: that many 3x3 dilations (max over the neighbourhood, strokes grow by a pixel each side per step);
    -steps: erosions (min). Outside the image counts as background (0), so a stroke at the border erodes too."""
    for _ in range(abs(steps)):
        if steps > 0:
            x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, stride=1)
        else:
            x = -F.max_pool2d(F.pad(-x, (1, 1, 1, 1)), 3, stride=1)  # pad with 0: -0 is the background
    return x


def _moved(x: torch.Tensor, shift: tuple[float, float], rotate: float, scale: float) -> torch.Tensor:
    """Shift, rotation (degrees anticlockwise) and scale about the image's centre, bilinear, zeros coming in;
    a whole-pixel shift alone is a copy (torchvision's bilinear one is off by ~1e-6)."""
    dy, dx = shift
    if rotate == 0 and scale == 1:
        if dy == dx == 0:
            return x
        if float(dy).is_integer() and float(dx).is_integer():
            return _shifted(x, int(dy), int(dx))
    # torchvision turns clockwise for a positive angle; ours is the mathematical (and np.rot90's) direction.
    return TF.affine(x, angle=-rotate, translate=[dx, dy], scale=scale, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR, fill=0.0)


def transform_images(images: torch.Tensor, shift=(0, 0), rotate=0.0, scale=1.0, thickness=0, noise=0.0, seed=0, *,
                     box=None) -> torch.Tensor:
    """(N, 1, side, side) float in [0, 1] -> the same images transformed, a new tensor in [0, 1].

    In this order: strokes thickened or thinned (thickness: 3x3 dilations, negative: erosions), then moved
    (shift (dy down, dx right) px), turned (rotate degrees anticlockwise) and scaled about the centre, then the box
    (top, left, bottom, right; rows and columns [top, bottom) x [left, right)) set to black, then Gaussian noise of
    std `noise` drawn from `seed` (the same seed, the same noise) and everything clipped to [0, 1].
    The defaults return a copy of the images, unchanged.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1 \
            or images.shape[2] != images.shape[3] or not images.is_floating_point():
        raise ValueError("The images must be a (N, 1, side, side) tensor of floats in [0, 1].")
    settings = check_transform(images.shape[-1], shift, rotate, scale, thickness, noise, seed, box)
    x = images.detach().float().clone()  # a copy: the box below writes into it, the caller's images stay as they are
    x = _thickened(x, settings["thickness"])
    x = _moved(x, settings["shift"], settings["rotate"], settings["scale"])
    if settings["box"] is not None:
        top, left, bottom, right = settings["box"]
        x[..., top:bottom, left:right] = 0.0
    if settings["noise"] > 0:
        generator = torch.Generator().manual_seed(settings["seed"])
        x = x + settings["noise"] * torch.randn(x.shape, generator=generator).to(x.device)
    return x.clamp_(0.0, 1.0)


def _as_batch(image) -> torch.Tensor:
    """(side, side) float in [0, 1] (numpy or torch; uint8 is taken as 0-255) -> (1, 1, side, side) float32."""
    array = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if array.dim() != 2 or array.shape[0] != array.shape[1]:
        raise ValueError("The image must be a square (side, side) array.")
    array = array.float() / 255.0 if array.dtype == torch.uint8 else array.detach().float()
    if not torch.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("The image's values must be in [0, 1].")
    return array[None, None]


def transform_image(image, shift=(0, 0), rotate=0.0, scale=1.0, thickness=0, noise=0.0, seed=0, *, box=None):
    """One (side, side) image in [0, 1] (numpy or torch; uint8 as 0-255) -> (side, side) float32 in [0, 1],
    transformed as transform_images says: numpy in, numpy out; torch in, torch out. Defaults: an unchanged copy."""
    out = transform_images(_as_batch(image), shift, rotate, scale, thickness, noise, seed, box=box)[0, 0]
    return out if isinstance(image, torch.Tensor) else out.numpy()


def _setting(kind: str, value: float) -> dict:
    """The transform_images keywords of one value of a kind ("shift": horizontal pixels)."""
    if kind not in TRANSFORM_RANGES:
        raise ValueError(f"The transformation must be one of {', '.join(TRANSFORM_RANGES)}.")
    if kind == "shift":
        return {"shift": (0, value)}
    return {kind: int(value) if kind == "thickness" and float(value).is_integer() else value}


def _with(settings: dict | None, kind: str, value: float) -> dict:
    """settings (transform_images keywords) with kind set to value; a horizontal shift keeps the vertical one."""
    merged = dict(settings or {})
    if kind == "shift":
        merged["shift"] = (tuple(merged.get("shift", (0, 0)))[0], value)
    else:
        merged.update(_setting(kind, value))
    return merged


# ---------------------------------------------------------------- the page's sliders, settled


def settled(kind: str, value) -> float | int:
    """A slider's value forced into TRANSFORM_RANGES[kind] (a browser can send anything: a non-number or NaN counts
    as the identity, 1e9 as the end of the range); a whole number for kinds whose steps are whole."""
    spread = TRANSFORM_RANGES[kind]
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    number = spread.identity if not math.isfinite(number) else min(max(number, spread.low), spread.high)
    return int(round(number)) if float(spread.step).is_integer() else number


def box_sliders(size, row, col, side: int) -> tuple[int, int, int]:
    """The box's three slider values settled: size in [0, side // 2] (0: no box), its top-left corner (row, col)
    where the box (at least one pixel) stays inside the image; a non-number counts as 0."""
    def whole(value, high: int) -> int:
        try:
            return min(max(int(value), 0), high)
        except (TypeError, ValueError, OverflowError):
            return 0
    size = whole(size, side // 2)
    spare = side - max(size, 1)
    return size, whole(row, spare), whole(col, spare)


def box_from(size, row, col, side: int) -> tuple[int, int, int, int] | None:
    """The black box of the page's sliders (see box_sliders) as (top, left, bottom, right), or None for size 0."""
    size, top, left = box_sliders(size, row, col, side)
    return None if size == 0 else (top, left, top + size, left + size)


def settings_from(sliders: dict, side: int) -> dict:
    """transform_images keywords from the page's raw slider values {"dx", "dy", "rotate", "scale", "thickness",
    "noise", "box_size", "box_row", "box_col"} (each settled; missing ones are the identity)."""
    return {"shift": (settled("shift", sliders.get("dy", 0)), settled("shift", sliders.get("dx", 0))),
            "rotate": float(settled("rotate", sliders.get("rotate", 0))),
            "scale": float(settled("scale", sliders.get("scale", 1.0))),
            "thickness": settled("thickness", sliders.get("thickness", 0)),
            "noise": float(settled("noise", sliders.get("noise", 0.0))),
            "box": box_from(sliders.get("box_size", 0), sliders.get("box_row", 0), sliders.get("box_col", 0), side)}


def current_value(settings: dict, kind: str) -> float:
    """The value of kind in settings (settings_from's), where the sweep chart marks it ("shift": the horizontal)."""
    return float(settings["shift"][1] if kind == "shift" else settings[kind])


def sweep_range(kind: str, side: int) -> list[float]:
    """The sweep chart's values of kind: TRANSFORM_RANGES', a shift kept within the image's side."""
    return [value for value in TRANSFORM_RANGES[kind].values() if kind != "shift" or abs(value) < side]


# ---------------------------------------------------------------- what the network answers


def robustness_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, kind: str, values,
                     progress: Progress | None = None) -> list[float]:
    """The accuracy of model on images ((N, 1, side, side) float in [0, 1], labels (N,)) transformed by each of
    values of kind: "shift" (horizontal pixels, negative: left), "rotate" (degrees anticlockwise), "scale",
    "thickness" (3x3 dilations; negative: erosions) or "noise" (std; seed 0). Float32, as cnn.train.evaluate."""
    images, labels = check_images(model, images, labels)
    values = list(values)
    _setting(kind, 0)  # an unknown kind is refused even with no values
    for value in values:
        check_transform(images.shape[-1], **_setting(kind, value))  # every value checked before any work
    accuracies = []
    for index, value in enumerate(values):
        if progress is not None:
            progress(index / max(len(values), 1), f"{TRANSFORM_RANGES[kind].title}: {value:g}...")
        moved = transform_images(images, **_setting(kind, value))
        predicted = quick_predictions(model, moved, batch_size=EVAL_BATCH, fast=False)  # float32: evaluate's
        accuracies.append(float((predicted == labels).float().mean()) if len(labels)
                          else float("nan"))
    if progress is not None:
        progress(1.0, "Done.")
    return accuracies


@torch.inference_mode()
def class_sweep(model: nn.Module, image, kind: str, values, *, settings: dict | None = None) -> np.ndarray:
    """(V, classes) float32 probabilities of image ((side, side) in [0, 1]) transformed by each of values of kind,
    the other transformations held at settings (transform_images keywords; None: none). One batched forward."""
    x = _as_batch(image)
    values = list(values)
    if not values:
        return np.zeros((0, model_spec(model).num_classes), np.float32)
    batch = torch.cat([transform_images(x, **_with(settings, kind, value)) for value in values])
    check_images(model, batch)
    return F.softmax(eval_logits(model, batch).float(), dim=1).cpu().numpy()


@torch.inference_mode()
def read_transformed(model: nn.Module, image, settings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the transformed image (side, side) float32 in [0, 1], its (classes,) probabilities) for the live view."""
    moved = transform_images(_as_batch(image), **(settings or {}))
    check_images(model, moved)
    return moved[0, 0].numpy(), F.softmax(eval_logits(model, moved).float(), dim=1)[0].cpu().numpy()


def sweep_values(rows: np.ndarray, values, class_names, kind: str) -> list[dict]:
    """class_sweep's (V, classes) as long-form chart rows {kind: value, "class": name, "probability": p}."""
    return [{kind: float(value), "class": str(name), "probability": float(p)}
            for value, row in zip(values, rows) for name, p in zip(class_names, row)]


# ---------------------------------------------------------------- the test-set curves, kept on disk per checkpoint


def measure_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   progress: Progress | None = None) -> dict[str, list[float]]:
    """{kind: accuracies at CURVE_VALUES[kind]} for "shift" and "rotate" on images (N, 1, side, side) in [0, 1]."""
    curves, kinds = {}, list(CURVE_VALUES)
    for index, kind in enumerate(kinds):
        def part(fraction: float, message: str, index=index) -> None:
            progress((index + fraction) / len(kinds), message)
        curves[kind] = robustness_curve(model, images, labels, kind, CURVE_VALUES[kind],
                                        progress=part if progress is not None else None)
    return curves


def curve_networks(checkpoint: Path | str, dataset: str, active: str) -> list[tuple[str, Path]]:
    """(name, checkpoint) of the networks whose curves Transform the image shows: the active model's checkpoint
    (named active), then, on the dataset the Compare page's bundled 1-epoch set learned, those networks that are on
    disk (the active model's own file once)."""
    checkpoint = Path(checkpoint)
    found = [(active, checkpoint)]
    if dataset == BUNDLED_COMPARISON_DATASET:
        found += [(name, path) for name, (_, path) in BUNDLED_COMPARISON.items()
                  if path.is_file() and path.resolve() != checkpoint.resolve()]
    return found


def robustness_path(checkpoint: Path | str) -> Path:
    """Where a checkpoint's curves are kept: beside its Compare shift curve (cnn.compare.curve_path), a bundled
    model's in models/compare/STEM.robustness.json, a run's in runs/NAME/model.robustness.json."""
    shift = curve_path(checkpoint)
    return shift.with_name(shift.name.removesuffix(".shift.json") + ".robustness.json")


def robustness_record(card: dict, curves: dict[str, list[float]], images: int = ROBUSTNESS_IMAGES) -> dict:
    """What a curves file holds: the weights and test images they were measured on, the values, the accuracies."""
    return {"weights_sha256": card.get("weights_sha256"), "dataset": checkpoint_dataset(card), "images": images,
            "curves": {kind: {"values": list(values), "accuracy": list(curves[kind])}
                       for kind, values in CURVE_VALUES.items()}}


def _fractions(values: object, count: int) -> bool:
    return isinstance(values, list) and len(values) == count and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and 0 <= a <= 1 for a in values)


def curves_from_record(record: object, card: dict, images: int = ROBUSTNESS_IMAGES) -> dict[str, list[float]] | None:
    """The curves in a record if it is for this card's weights, dataset and images, with a fraction for each of
    CURVE_VALUES; None otherwise (a stale, foreign or damaged record is measured again, never shown)."""
    if not isinstance(record, dict) or not card.get("weights_sha256"):
        return None
    expected = {"weights_sha256": card["weights_sha256"], "dataset": checkpoint_dataset(card), "images": images}
    kept = record.get("curves")
    if any(record.get(key) != value for key, value in expected.items()) or not isinstance(kept, dict):
        return None
    curves = {}
    for kind, values in CURVE_VALUES.items():
        entry = kept.get(kind)
        if not isinstance(entry, dict) or entry.get("values") != list(values) \
                or not _fractions(entry.get("accuracy"), len(values)):
            return None
        curves[kind] = [float(a) for a in entry["accuracy"]]
    return curves


def read_robustness(checkpoint: Path | str, card: dict, images: int = ROBUSTNESS_IMAGES) -> dict | None:
    """The curves kept for these weights, or None when none fit (see curves_from_record)."""
    return curves_from_record(read_json_record(robustness_path(checkpoint), MAX_CURVE_BYTES), card, images)


def save_robustness(checkpoint: Path | str, card: dict, curves: dict[str, list[float]],
                    images: int = ROBUSTNESS_IMAGES) -> bool:
    """Keep measured curves for next time (atomically); False when the folder is not writable (they are then
    measured again on the next view: slower, but right)."""
    return write_json_record(robustness_path(checkpoint), robustness_record(card, curves, images),
                             f"the robustness curves of {Path(checkpoint).name}")


def measured_robustness(checkpoint: Path | str, model: nn.Module, card: dict, images: torch.Tensor,
                        labels: torch.Tensor, progress: Progress | None = None) -> dict[str, list[float]]:
    """The checkpoint's shift and rotation curves on the first ROBUSTNESS_IMAGES of images ((N, 1, side, side)
    in [0, 1]): read back when kept for these weights, else measured (progress says how far) and kept."""
    count = min(ROBUSTNESS_IMAGES, len(images))
    curves = read_robustness(checkpoint, card, count)
    if curves is None:
        curves = measure_curves(model, images[:count], labels[:count], progress)
        save_robustness(checkpoint, card, curves, count)
    return curves


# ---------------------------------------------------------------- what the curves say


def _at(curve: list[float], kind: str, value: float) -> float:
    """The accuracy at value, averaged with -value (either way: left and right, anticlockwise and clockwise)."""
    values = list(CURVE_VALUES[kind])
    return (curve[values.index(value)] + curve[values.index(-value)]) / 2


def curve_rows(curves: dict[str, dict[str, list[float]]], labels: dict[str, str], kind: str) -> list[dict]:
    """Long-form chart rows {"network": label, kind: value, "accuracy": a} of every network's curve of kind."""
    return [{"network": labels[name], kind: value, "accuracy": accuracy}
            for name, kinds in curves.items() for value, accuracy in zip(CURVE_VALUES[kind], kinds[kind])]


def robustness_sentences(runs: list[ComparedRun], curves: dict[str, dict[str, list[float]]],
                         shift: int = 4, angle: int = 30) -> list[str]:
    """What the charts show, derived from the measured numbers: for several networks, cnn.compare's shift sentences
    (which falls most, which keeps the most, and why) and the same for rotation; for one, its own numbers."""
    measured = [run for run in runs if run.name in curves]
    if not measured:
        return []
    if len(measured) == 1:
        kinds = curves[measured[0].name]
        return [f"Moved {shift} pixels left or right, this model reads {_at(kinds['shift'], 'shift', shift):.1%} "
                f"of the test images right (unmoved: {_at(kinds['shift'], 'shift', 0):.1%}); turned {angle} degrees "
                f"either way, {_at(kinds['rotate'], 'rotate', angle):.1%}."]
    # The Compare page's sentences read {run: [{"shift": d, "accuracy": a}]} for d >= 0: left and right averaged.
    as_compare = {run.name: [{"shift": d, "accuracy": _at(curves[run.name]["shift"], "shift", d)}
                             for d in CURVE_VALUES["shift"] if d >= 0] for run in measured}
    sentences = shift_sentences(measured, as_compare, shift)
    labels = run_labels(measured)
    turned = {run.name: _at(curves[run.name]["rotate"], "rotate", angle) for run in measured}
    drop = {name: _at(curves[name]["rotate"], "rotate", 0) - turned[name] for name in turned}
    falls, keeps = max(drop, key=drop.get), max(turned, key=turned.get)
    sentence = f"Turned {angle} degrees either way, {labels[falls]} falls most, to {turned[falls]:.1%}"
    return sentences + [sentence + (f"; {labels[keeps]} keeps the most, {turned[keeps]:.1%}." if keeps != falls
                                    else ".")]
