"""Filter surgery: edit a first-layer kernel by hand or zero out ("ablate") filters and hidden units, on a copy of the
model, and measure what changes: the maps of one image, its prediction, the accuracy on the test set; and which
filters of a layer matter (the accuracy with each one removed alone).

An edit is never made on the model passed in (other sessions share it): edited_model returns a new one.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .experiments import QUICK_BATCH, _bf16_ok, check_images, eval_logits
from .features import conv_layers, dense_layers
from .model import Stage

MAX_WEIGHT = 10.0  # the largest |value| a hand-set kernel may hold: trained conv1 weights are below 1


@dataclass(frozen=True)
class ClassicKernel:
    """A named 3x3 kernel from image processing, and what it finds, in a student's words."""

    values: tuple  # 3 rows of 3 numbers
    finds: str  # one sentence: what a map made with it shows


CLASSIC_KERNELS: dict[str, ClassicKernel] = {
    "Sobel x": ClassicKernel(((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)),
                             "Vertical edges: large where the image gets brighter from left to right, negative where "
                             "it gets darker."),
    "Sobel y": ClassicKernel(((-1, -2, -1), (0, 0, 0), (1, 2, 1)),
                             "Horizontal edges: large where the image gets brighter from top to bottom."),
    "Gaussian blur": ClassicKernel(((1 / 16, 2 / 16, 1 / 16), (2 / 16, 4 / 16, 2 / 16), (1 / 16, 2 / 16, 1 / 16)),
                                   "A softened copy of the image: each pixel a weighted average of its 3x3 "
                                   "neighbourhood (a Gaussian, the centre counting most)."),
    "sharpen": ClassicKernel(((0, -1, 0), (-1, 5, -1), (0, -1, 0)),
                             "The image with its edges made crisper: a pixel minus its four neighbours, added back."),
    "Laplacian": ClassicKernel(((0, 1, 0), (1, -4, 1), (0, 1, 0)),
                               "Outlines in every direction: zero where the image is flat, large at strokes' edges."),
    "identity": ClassicKernel(((0, 0, 0), (0, 1, 0), (0, 0, 0)),
                              "The image itself, unchanged: the filter just copies each pixel."),
    "zero": ClassicKernel(((0, 0, 0), (0, 0, 0), (0, 0, 0)),
                          "Nothing: an all-zero map, as if the filter were removed."),
}


def classic_kernel(name: str, size: int = 3) -> np.ndarray:
    """(size, size) float32: CLASSIC_KERNELS[name] in the centre of a kernel of another odd size (LeNet's 5x5),
    zeros around it (the same map, as the border reads nothing)."""
    if name not in CLASSIC_KERNELS:
        raise ValueError(f"There is no classic kernel called {str(name)[:40]!r}: choose one of "
                         f"{', '.join(CLASSIC_KERNELS)}.")
    values = np.array(CLASSIC_KERNELS[name].values, dtype=np.float32)
    if size < 3 or size % 2 == 0:
        raise ValueError("A classic kernel fits an odd kernel of side 3 or more.")
    border = (size - 3) // 2
    return np.pad(values, border)


# ---------------------------------------------------------------- which layers an edit can reach

def editable_kernels(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{conv stage: (filters, kernel side)} of the conv stages whose filters read one input map (conv1): the kernels
    a student can set by hand as one kxk picture. {} for a network without one (softmax, MLP)."""
    return {layer.name: (layer.maps, layer.kernel_size) for layer in conv_layers(model) if layer.inputs == 1}


def ablatable_layers(model: nn.Module) -> dict[str, int]:
    """{stage: filters or units} that can be zeroed out: every conv stage and every hidden linear layer (not the
    logits, whose outputs are the answer itself)."""
    layers = {layer.name: layer.maps for layer in conv_layers(model)}
    layers.update({layer.name: layer.units for layer in dense_layers(model)})
    return layers


def part_word(model: nn.Module, stage: str) -> str:
    """What one of stage's outputs is called: "filter" for a conv stage (it makes a map), "unit" for a dense one."""
    return "filter" if any(layer.name == stage for layer in conv_layers(model)) else "unit"


def weight_of(value) -> float:
    """A number a browser sent for a kernel's cell, made safe: finite, within +-MAX_WEIGHT; a non-number is 0."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return float(np.clip(np.nan_to_num(number), -MAX_WEIGHT, MAX_WEIGHT))


def _stage(model: nn.Module, name: str) -> tuple[int, Stage]:
    index = next(i for i, stage in enumerate(model.stages) if stage.name == name)
    return index, model.stages[index]


def _index(value, count: int, what: str) -> int:
    """value as an int in [0, count); ValueError with a sentence for anything else (a float, a string, -1, ...)."""
    try:
        index = operator.index(value)
    except TypeError:
        raise ValueError(f"A {what} is chosen by its number, 0 to {count - 1}.") from None
    if not 0 <= index < count:
        raise ValueError(f"There is no {what} {index}: choose 0 to {count - 1}.")
    return index


def _kernel(value, side: int) -> np.ndarray:
    """value as a (side, side) float32 kernel of finite numbers within +-MAX_WEIGHT; ValueError otherwise.
    Sizes are checked before any conversion, so a forged million numbers costs nothing."""
    wrong = ValueError(f"A kernel is {side}x{side} numbers.")
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if tuple(value.shape) != (side, side):
            raise wrong
    elif not (isinstance(value, (list, tuple)) and len(value) == side
              and all(isinstance(row, (list, tuple, np.ndarray)) and len(row) == side for row in value)):
        raise wrong
    try:
        kernel = np.array(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("A kernel holds numbers only.") from None
    if kernel.shape != (side, side):
        raise wrong
    if not np.isfinite(kernel).all() or np.abs(kernel).max() > MAX_WEIGHT:
        raise ValueError(f"A kernel's numbers must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}.")
    return kernel


def checked_edits(model: nn.Module, kernels=None, ablate=None) -> tuple[dict, dict]:
    """(kernels {(stage, k): (side, side) float32}, ablate {stage: sorted tuple of unique indices}) checked against
    the model's stages; ValueError with a sentence for a stage it lacks, an index out of range, a kernel that is not
    side x side finite numbers within +-MAX_WEIGHT, or more entries than the layers have filters (forged input)."""
    editable, layers = editable_kernels(model), ablatable_layers(model)
    kernels, ablate = kernels or {}, ablate or {}
    if not isinstance(kernels, dict) or not isinstance(ablate, dict):
        raise ValueError("The edits are not in the right form; press Reset.")
    if len(kernels) > sum(count for count, _ in editable.values()):  # (ablate's keys are checked one by one below)
        raise ValueError("There are more edits than this network has filters; press Reset.")
    checked_kernels = {}
    for key, value in kernels.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in editable):
            names = ", ".join(editable) or "none: it has no convolution that reads the image"
            raise ValueError(f"Only kernels that read the image can be set by hand (this network's: {names}).")
        count, side = editable[key[0]]
        checked_kernels[(key[0], _index(key[1], count, f"filter of {key[0]}"))] = _kernel(value, side)
    checked_ablate = {}
    for stage, indices in ablate.items():
        if stage not in layers:
            names = ", ".join(layers) or "none"
            raise ValueError(f"This network has no layer called {str(stage)[:40]!r} whose filters or units can be "
                             f"removed (it has: {names}).")
        if isinstance(indices, (str, bytes)) or not hasattr(indices, "__len__") or len(indices) > layers[stage]:
            raise ValueError(f"{stage} has {layers[stage]} filters or units: choose at most that many, by number.")
        unique = {_index(i, layers[stage], f"filter or unit of {stage}") for i in indices}
        if unique:
            checked_ablate[stage] = tuple(sorted(unique))
    return checked_kernels, checked_ablate


def edits_key(kernels: dict, ablate: dict) -> tuple:
    """A hashable, order-free key of checked edits (checked_edits' output): what caches of edited results use."""
    return (tuple(sorted((stage, k, tuple(np.asarray(v, dtype=np.float32).ravel().tolist()))
                         for (stage, k), v in kernels.items())),
            tuple(sorted(ablate.items())))


def edited_model(model: nn.Module, kernels=None, ablate=None) -> nn.Module:
    """A NEW model: model's copy (eval mode, no gradients) with kernels {("conv1", k): (side, side) array} set and
    the filters/units of ablate {"conv2": [5], "fc": [1, 2]} zeroed (weights and bias: their maps/outputs are exactly
    0, and stay 0 through ReLU and pooling). model itself is never changed. ValueError with a sentence for edits the
    model cannot take (see checked_edits)."""
    kernels, ablate = checked_edits(model, kernels, ablate)
    edited = copy.deepcopy(model)  # parameters cloned; nothing is written to the shared model, not even .grad
    edited.eval()
    edited.requires_grad_(False)
    with torch.no_grad():
        for (name, k), kernel in kernels.items():
            conv = getattr(edited, _stage(edited, name)[1].module)
            conv.weight[k, 0] = torch.from_numpy(kernel).to(conv.weight)
        for name, indices in ablate.items():
            layer = getattr(edited, _stage(edited, name)[1].module)
            rows = torch.tensor(indices, dtype=torch.long)
            layer.weight[rows] = 0  # a conv's (out, in, k, k) or a linear's (out, in): the filter's/unit's row
            if layer.bias is not None:
                layer.bias[rows] = 0
    return edited


# ---------------------------------------------------------------- one image, before and after

@dataclass(frozen=True)
class ImageResult:
    """One image through a network and its edited copy."""

    maps: np.ndarray | None  # (C, H, W) the first conv stage's maps before ReLU, original; None without conv
    edited_maps: np.ndarray | None  # the same, edited network
    probabilities: np.ndarray  # (classes,) original
    edited_probabilities: np.ndarray  # (classes,) edited


@torch.inference_mode()
def compare_image(model: nn.Module, edited: nn.Module, x: torch.Tensor) -> ImageResult:
    """x (1, 1, side, side) float in [0, 1] through model and edited: the first conv layer's maps (what a kernel
    edit changes at once) and the probabilities of both. Dropout skipped, model's mode untouched."""
    check_images(model, x)
    layers = conv_layers(model)
    maps = edited_maps = None
    if layers:
        index = _stage(model, layers[0].name)[0]
        maps, edited_maps = (_prefix(net, x, index + 1)[0].float().numpy() for net in (model, edited))
    probabilities = [F.softmax(eval_logits(net, x.float()), 1)[0].float().numpy() for net in (model, edited)]
    return ImageResult(maps, edited_maps, probabilities[0], probabilities[1])


def _prefix(model: nn.Module, x: torch.Tensor, end: int) -> torch.Tensor:
    """The output of model.stages[:end] for x, dropout skipped (the eval forward), ReLU-before-pool fused."""
    return model._run(x, tuple(s for s in model.stages[:end] if s.kind != "dropout"))  # noqa: SLF001


# ---------------------------------------------------------------- which filters matter

def _next_layer(model: nn.Module, index: int) -> int:
    """The index of the first conv/linear stage after model.stages[index]: the stage that reads what it made."""
    return next(j for j in range(index + 1, len(model.stages)) if model.stages[j].kind in ("conv", "linear"))


def _contribution(layer: nn.Module, inputs: torch.Tensor, channel: int, per_channel: int) -> torch.Tensor:
    """What channel `channel` of inputs adds to layer's output, weights only (no bias): the layer applied to that
    channel alone. inputs: (N, C, H, W) for a conv, (N, C * per_channel) for a linear (a flattened map per channel)."""
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(inputs[:, channel:channel + 1], layer.weight[:, channel:channel + 1], None, layer.stride,
                        layer.padding, layer.dilation)
    part = slice(channel * per_channel, (channel + 1) * per_channel)
    return F.linear(inputs[:, part], layer.weight[:, part])


@torch.inference_mode()
def ablation_sweep(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, stage: str,
                   progress: Callable[[float], None] | None = None, fast: bool = True,
                   batch_size: int = QUICK_BATCH) -> np.ndarray:
    """(C,) accuracies on images (N, 1, side, side) float in [0, 1] with labels (N,), entry k with filter/unit k of
    stage removed alone (as edited_model(model, ablate={stage: [k]}) does). progress(fraction done) is called as it
    goes. fast: bfloat16 where this machine runs it natively, as quick_accuracy does (the same answers up to bf16
    rounding); False: float32 throughout.

    Exact, without running C networks: the stages up to the next layer's input run once per batch (a removed
    channel only zeroes its own part of that input: ReLU, pooling and flattening keep channels apart), and by
    linearity the next layer's output without channel k is its full output minus the layer applied to channel k
    alone. Only the stages after it run once per channel."""
    images, labels = check_images(model, images, labels)
    layers = ablatable_layers(model)
    if stage not in layers:
        raise ValueError(f"This network has no layer called {str(stage)[:40]!r} whose filters or units can be "
                         f"removed (it has: {', '.join(layers) or 'none'}).")
    index = _stage(model, stage)[0]
    after = _next_layer(model, index)
    layer = getattr(model, model.stages[after].module)
    rest = tuple(s for s in model.stages[after + 1:] if s.kind != "dropout")
    channels = layers[stage]
    correct = torch.zeros(channels, dtype=torch.long)
    device = next(model.parameters()).device
    convolves = any(s.kind == "conv" for s in model.stages)
    batches = range(0, len(images), batch_size)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and convolves and _bf16_ok(device)):
        for done, start in enumerate(batches):
            x = images[start:start + batch_size].to(device)
            if convolves:
                x = x.contiguous(memory_format=torch.channels_last)
            inputs = _prefix(model, x, after)  # (B, C, H, W), or (B, C * H * W) after a flatten
            full = layer(inputs)
            per_channel = inputs[0].numel() // channels
            truth = labels[start:start + batch_size].to(device)
            for k in range(channels):
                logits = model._run(full - _contribution(layer, inputs, k, per_channel), rest)  # noqa: SLF001
                correct[k] += int((logits.argmax(1) == truth).sum())
            if progress is not None:
                progress((done + 1) / len(batches))
    if not len(images):
        return np.full(channels, np.nan)
    return (correct.float() / len(images)).double().numpy()  # float32's mean, as quick_accuracy and evaluate give


# ---------------------------------------------------------------- what the page says

def sweep_rows(accuracies: np.ndarray, original: float) -> list[dict]:
    """One row per filter/unit, the most harmful removal first: {"filter", "accuracy", "drop"} (drop in points)."""
    order = np.argsort(np.asarray(accuracies), kind="stable")
    return [{"filter": int(k), "accuracy": float(accuracies[k]), "drop": round(100 * (original - accuracies[k]), 2)}
            for k in order]


def sweep_sentence(rows: list[dict], stage: str, original: float) -> str:
    """What a sweep shows, in one or two sentences."""
    worst = rows[0]
    harmless = sum(1 for row in rows if row["drop"] <= 0.1)
    return (f"Removing filter {worst['filter']} of {stage} alone hurts most: {worst['accuracy']:.1%} instead of "
            f"{original:.1%} ({worst['drop']:.1f} points). {harmless} of {len(rows)} cost 0.1 points or less: the "
            f"network spreads what it knows over many filters, so losing one is rarely a disaster.")


def _described(kernels: dict, ablate: dict) -> str:
    parts = [f"setting filter {k} of {stage} by hand" for stage, k in sorted(kernels)]
    for stage, indices in ablate.items():
        shown = ", ".join(str(i) for i in indices[:8]) + (f" and {len(indices) - 8} more" if len(indices) > 8 else "")
        parts.append(f"removing {'filter' if len(indices) == 1 else 'filters'} {shown} of {stage}")
    return "; ".join(parts)


def result_sentence(kernels: dict, ablate: dict, original: float, edited: float) -> str:
    """One sentence that reads an edit's result on the test set: "Removing filter 5 of conv1 costs 0.4 points: ..."."""
    if not kernels and not ablate:
        return f"No edits yet: the network reads {original:.2%} of the test images right."
    what, drop = _described(kernels, ablate), 100 * (original - edited)
    what = what[0].upper() + what[1:]
    if abs(drop) < 0.05:
        return (f"{what} changes almost nothing: {edited:.2%} against {original:.2%}. The network has other filters "
                "that find what was lost.")
    if drop < 0:
        return f"{what} gains {-drop:.2f} points ({edited:.2%}): a lucky edit, not a better design."
    why = ("the network relied on it and has nothing else that finds the same thing" if drop >= 5 else
           "the other filters make up for most of it")
    return f"{what} costs {drop:.2f} points (from {original:.2%} to {edited:.2%}): {why}."
