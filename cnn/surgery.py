"""Filter surgery: edit a first-layer kernel by hand or zero out ("ablate") filters and hidden units, on a copy of the
model, and measure what changes: the maps of one image, its prediction, the accuracy on the test set; and which
filters of a layer matter (the accuracy with each one removed alone).

An edit is never made on the model passed in (other sessions share it): edited_model returns a new one.
"""
from __future__ import annotations

import copy
import operator
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .experiments import QUICK_BATCH, check_images, eval_logits
from .train import bf16_native
from .features import conv_layers, dense_layers, enlarge, kernels as trained_kernels, signed_rgb
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
    "Sharpen": ClassicKernel(((0, -1, 0), (-1, 5, -1), (0, -1, 0)),
                             "The image with its edges made crisper: a pixel minus its four neighbours, added back."),
    "Laplacian": ClassicKernel(((0, 1, 0), (1, -4, 1), (0, 1, 0)),
                               "Outlines in every direction: zero where the image is flat, large at strokes' edges."),
    "Identity": ClassicKernel(((0, 0, 0), (0, 1, 0), (0, 0, 0)),
                              "The image itself, unchanged: the filter just copies each pixel."),
    "Zero": ClassicKernel(((0, 0, 0), (0, 0, 0), (0, 0, 0)),
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


def network_shape(model: nn.Module) -> tuple:
    """What edits are made for: the editable kernels and the removable layers, with their sizes. Two checkpoints of
    one network (its epochs) have the same shape, so the same edits apply to both; another network has another."""
    return tuple(editable_kernels(model).items()), tuple(ablatable_layers(model).items())


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


ROW_CHARACTERS = 200  # a kernel row is typed by hand: 5 numbers fit in ~40 characters; longer is forged


def row_text(values) -> str:
    """A kernel row as the editor shows it: "-1  0  1", "0.0625  0.125  0.0625", "-0.214  0.031  0.5" (up to 4
    decimals: a trained weight reads to 3, a blur's sixteenths stay exact), two spaces apart."""
    words = []
    for value in np.asarray(values, dtype=np.float64).ravel():
        word = np.format_float_positional(round(float(value), 4), precision=4, trim="-")
        words.append("0" if word in ("-0", "0") else word)
    return "  ".join(words)


def kernel_rows(kernel) -> list[str]:
    """(side, side) numbers -> side row texts (row_text of each)."""
    return [row_text(row) for row in np.asarray(kernel)]


def parse_row(text, side: int, row: int) -> list[float]:
    """A row typed by hand ("-1 0 1", "-1, 0, 1") -> side floats; ValueError with a sentence naming the row (1-based)
    for a wrong count, a word that is not a number, NaN or infinity, or a |value| above MAX_WEIGHT."""
    if not isinstance(text, str) or len(text) > ROW_CHARACTERS:
        raise ValueError(f"Row {row} is not {side} numbers: type them apart, like \"-1 0 1\".")
    words = text.replace(",", " ").replace(";", " ").split()
    if len(words) != side:
        # "1,5 0 -1": a decimal comma, read as a separator (a comma between two digits, no space after it)
        comma = " Write decimals with a point: 1.5, not 1,5." if re.search(r"\d,\d", text) else ""
        raise ValueError(f"Row {row} needs {side} numbers, found {len(words)}: type them apart, like "
                         f"\"{'  '.join(['0'] * side)}\".{comma}")
    values = []
    for word in words:
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"Row {row}: {word[:20]!r} is not a number.") from None
        if not np.isfinite(value):
            raise ValueError(f"Row {row}: {word[:20]!r} is not a number the network can use; type a finite one.")
        if abs(value) > MAX_WEIGHT:
            raise ValueError(f"Row {row}: {word[:20]} is too large; a kernel's numbers must be between "
                             f"-{MAX_WEIGHT:g} and {MAX_WEIGHT:g}.")
        values.append(value)
    return values


def parse_kernel(rows, side: int) -> np.ndarray:
    """side row texts -> (side, side) float32 kernel; ValueError with the first bad row's sentence."""
    if not isinstance(rows, (list, tuple)) or len(rows) != side:
        raise ValueError(f"A kernel is {side} rows of {side} numbers.")
    return np.array([parse_row(text, side, i + 1) for i, text in enumerate(rows)], dtype=np.float32)


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
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and convolves and bf16_native(device)):
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


def sweep_sentence(rows: list[dict], stage: str, original: float, part: str = "filter") -> str:
    """What a sweep shows, read from its numbers: the largest drop and whose, how many removals cost almost nothing
    (0.1 points or less), how many a lot (5 points or more), and what that says. part: "filter" or "unit"."""
    worst, count = rows[0], len(rows)
    harmless = sum(1 for row in rows if row["drop"] <= 0.1)
    heavy = sum(1 for row in rows if row["drop"] >= HEAVY_DROP)
    if worst["drop"] <= 0:
        return (f"No {part} of {stage} costs anything when removed alone: the network spreads what it knows over "
                f"many {part}s, so losing one is no disaster.")
    first = (f"Removing {part} {worst['filter']} of {stage} alone hurts most: {worst['accuracy']:.1%} instead of "
             f"{original:.1%} ({worst['drop']:.1f} points).")
    counts = f"{harmless} of {count} cost 0.1 points or less"
    if heavy == 0 and worst["drop"] < 1:
        tail = (f"{counts}, and none a whole point: the network spreads what it knows over many {part}s, so losing "
                "one is rarely a disaster.")
    elif heavy == 0:
        tail = f"{counts}, and none {HEAVY_DROP:g} points or more: losing one {part} costs a little, never a lot."
    elif heavy <= max(1, count // 8):
        tail = (f"{counts}, but {heavy} cost{'s' if heavy == 1 else ''} {HEAVY_DROP:g} points or more: a few "
                f"{part}s carry something the others cannot stand in for.")
    else:
        tail = (f"{counts}, and {heavy} cost {HEAVY_DROP:g} points or more: many of the {count} {part}s carry "
                f"something no other {part} can stand in for.")
    return f"{first} {tail}"


def _listed(indices) -> str:
    """"3", "0, 2 and 4", "0, 1, 2, 3, 4, 5, 6, 7 and 4 more": a short list of numbers."""
    indices = list(indices)
    if len(indices) > 8:
        return ", ".join(str(i) for i in indices[:8]) + f" and {len(indices) - 8} more"
    return ", ".join(str(i) for i in indices)


def _described(kernels: dict, ablate: dict, model: nn.Module | None = None) -> str:
    """"setting filter 0 of conv1 by hand; removing units 3, 7 of fc": the edits in words (model: for the part
    words, "filter" for all without it)."""
    by_stage: dict[str, list[int]] = {}
    for stage, k in sorted(kernels):
        by_stage.setdefault(stage, []).append(k)
    parts = [f"setting {'filter' if len(ks) == 1 else 'filters'} {_listed(ks)} of {stage} by hand"
             for stage, ks in by_stage.items()]
    for stage, indices in ablate.items():
        word = part_word(model, stage) if model is not None else "filter"
        parts.append(f"removing {word if len(indices) == 1 else word + 's'} {_listed(indices)} of {stage}")
    return "; ".join(parts)


def removed_instead(kernels: dict, ablate: dict) -> dict:
    """The removals of an edit with its hand-set filters removed instead of set: what a hand-set kernel's cost is
    compared with (result_sentence's `removed`)."""
    merged = {stage: set(indices) for stage, indices in ablate.items()}
    for stage, k in kernels:
        merged.setdefault(stage, set()).add(k)
    return {stage: tuple(sorted(indices)) for stage, indices in merged.items()}


def _loudest(model: nn.Module, kernels: dict) -> tuple[float, float] | None:
    """(the hand-set kernels' largest |value|, the trained filters' largest |value| at the same places), or None
    when the model is not known or a kernel is all zeros."""
    if model is None or not kernels:
        return None
    mine = max(float(np.abs(np.asarray(v, dtype=np.float32)).max()) for v in kernels.values())
    trained = max(float(np.abs(trained_kernels(model, stage)[k]).max()) for stage, k in kernels)
    return (mine, trained) if mine > 0 and trained > 0 else None


LOUDER = 2.0  # a hand-set kernel whose numbers are this many times the trained filter's floods the next layer
HEAVY_DROP = 5.0  # points: a removal or an edit that costs this much is one the network cannot make up for


def _why_it_costs(kernels: dict, ablate: dict, drop: float, model: nn.Module | None) -> str:
    """Why an edit costs drop points (> 0), from the numbers: a kernel far larger than the trained one floods the
    next layer; a removal the network relied on; or the rest making up for most of it."""
    several = len(kernels) + sum(len(indices) for indices in ablate.values()) > 1
    it, its = ("them", "their") if several else ("it", "its")
    loudest = _loudest(model, kernels)
    if loudest is not None and loudest[0] >= LOUDER * loudest[1]:
        mine, trained = loudest
        whose = "the trained filters'" if len(kernels) > 1 else "the trained filter's"
        return (f"{its} numbers reach {mine:.3g}, {whose} only {trained:.2f}, so {its} map is about "
                f"{mine / trained:.0f} times as strong and floods the next layer, whose weights were tuned to the "
                "trained map's scale")
    if drop < HEAVY_DROP:
        return "the rest of the network makes up for most of it"
    if kernels:
        return (f"the next layer reads {its} new map with weights tuned to the trained one, and gets something "
                "else than it learned to read")
    return f"the network relied on {it} and has nothing else that finds the same thing"


def result_sentence(kernels: dict, ablate: dict, original: float, edited: float, model: nn.Module | None = None,
                    removed: float | None = None) -> str:
    """One sentence that reads an edit's result on the test set: "Removing filter 5 of conv1 costs 0.4 points: ...".
    model (the original): for "units" of a dense layer and to compare a hand-set kernel's numbers with the trained
    filter's; removed: the accuracy with the hand-set filters removed instead (removed_instead), None if unknown."""
    if not kernels and not ablate:
        return f"No edits yet: the network reads {original:.2%} of the test images right."
    what, drop = _described(kernels, ablate, model), 100 * (original - edited)
    what = what[0].upper() + what[1:]
    if abs(drop) < 0.05:
        if ablate:
            word = part_word(model, next(iter(ablate))) if model is not None else "filter"
            why = f"The network has other {word}s that find what was lost."
        else:
            why = "The next layers hardly notice the change."
        return f"{what} changes almost nothing: {edited:.2%} against {original:.2%}. {why}"
    if drop < 0:
        return f"{what} gains {-drop:.2f} points ({edited:.2%}): a lucky edit, not a better design."
    compared = ""
    if kernels and removed is not None and edited < removed - 1e-9:
        instead = 100 * (original - removed)
        them = "them" if len(kernels) > 1 else "it"
        compared = f", more than removing {them} instead would ({instead:.2f} points)"
    why = _why_it_costs(kernels, ablate, drop, model)
    return f"{what} costs {drop:.2f} points (from {original:.2%} to {edited:.2%}){compared}: {why}."


# ---------------------------------------------------------------- the hand-set filters' maps, enlarged

def edited_map_pairs(model: nn.Module, result: ImageResult, kernels: dict, limit: int = 4,
                     size: int = 112) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(k, original, edited)] for the first `limit` filters of the first conv layer whose kernel was set by hand:
    map k of result (compare_image's) before and after, each (size', size', 3) uint8 on ONE colour scale centred on
    0 (the larger |value| of the two), so a kernel that floods its map shows it. [] without maps or such filters."""
    layers = conv_layers(model)
    if result.maps is None or not layers:
        return []
    first = layers[0].name
    chosen = sorted(k for stage, k in kernels if stage == first)[:limit]
    pairs = []
    for k in chosen:
        before, after = result.maps[k], result.edited_maps[k]
        scale = float(max(np.abs(before).max(), np.abs(after).max()))
        pairs.append((k, enlarge(signed_rgb(before, scale), size), enlarge(signed_rgb(after, scale), size)))
    return pairs
