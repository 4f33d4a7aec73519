"""What a unit wants to see: an input that excites one unit most (feature visualisation by optimisation), and the
test images whose patches excite it most.

Split as lucent's optvis (greentfrapp/lucent): *objectives* (channel_values: a unit's measure, its map's largest value
or its own value, which unit_activation gives for test images too; spread_values, a softer form while shaping), a
*parameterisation* (the image is the sigmoid of a free latent, so every pixel stays in [0, 1]), *transforms* (a random
shift each step, so the picture cannot rely on one exact pixel), *regularisers* (total variation, and a pull towards
the black background MNIST's images share) and one render loop (visualize_unit) that combines them: first it shapes
the picture with all of them, then it polishes the unit's own measure.

The shared model is only read: gradients are taken with torch.autograd.grad with respect to the latent alone, so its
parameters' .grad and its train/eval mode stay as they were, and dropout stages are skipped (the eval forward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .features import conv_layers, dense_layers, tile_grid
from .inside import receptive_field
from .model import Stage, model_spec

BATCH = 1000  # test images per forward in top_patches / unit_activation: ~25 MB of conv1 maps at a time


# ---------------------------------------------------------------- objectives

def unit_stage(model: nn.Module, stage: str) -> tuple[int, Stage]:
    """(index in model.stages, the Stage) whose output holds stage's units.

    stage: a declared stage that records an activation ("conv2", "relu2", "pool3", "logits"), or an activation key
    (the article's "fc" is recorded by the ReLU after the linear stage "fc": its units are FC 625 after ReLU).
    ValueError with a sentence for anything else.
    """
    stages = tuple(getattr(model, "stages", ()))
    for by in ("name", "activation"):
        for index, declared in enumerate(stages):
            if declared.activation and getattr(declared, by) == stage:
                return index, declared
    names = ", ".join(declared.name for declared in stages if declared.activation) or "none"
    raise ValueError(f"This network has no layer called {str(stage)[:40]!r} to look at (it has: {names}).")


def stage_output(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    """The output of model.stages[index] for x (N, 1, side, side), with gradients when enabled.

    The eval forward whatever the model's mode: dropout stages are skipped here rather than calling .eval() on a
    model other sessions share. forward_with_activations would detach, and the full forward would run past the stage.
    """
    for declared in model.stages[:index + 1]:
        if declared.kind != "dropout":
            x = model._run_stage(declared, x)  # noqa: SLF001 - the network's own step, declared once
    return x


def channel_of(output: torch.Tensor, channel: int) -> torch.Tensor:
    """A stage's output (N, C, H, W) or (N, C) -> the channel's maps (N, H, W) or values (N,); ValueError with a
    sentence for a channel the stage does not have."""
    if not 0 <= channel < output.shape[1]:
        raise ValueError(f"There is no unit {channel} here: this layer has {output.shape[1]} (0 to "
                         f"{output.shape[1] - 1}).")
    return output[:, channel]


def channel_values(output: torch.Tensor, channel: int) -> torch.Tensor:
    """The measure of a unit on a stage's output: (N, C, H, W) -> the channel's largest value anywhere in its map,
    (N,); (N, C) -> the unit's value (a dense unit, or the class's logit for "logits").

    The largest value, not the map's mean: a conv stage is linear before its ReLU, so its mean is nearly a fixed
    weighting of the image's total ink (a white or black square maximises it), and a digit fills only part of a
    map. The largest value is what the strongest test patch shows (top_patches), so both sides are measured alike.
    """
    values = channel_of(output, channel)
    return values.flatten(1).amax(dim=1) if values.dim() > 1 else values


def spread_values(output: torch.Tensor, channel: int, sharpness: float) -> torch.Tensor:
    """The objective while a picture is shaped: (N, C, H, W) -> (N,), a softmax-weighted mean of the channel's map
    that leans towards its largest values (sharpness: in standard deviations of the map). Unlike the hard max it
    lets several positions pull at once, so the ascent is not stuck on the first position that led (often at the
    edge, where the zero padding gives a kernel's negative weights a black input for free). Dense units: their value.
    """
    values = channel_of(output, channel)
    if values.dim() == 1:
        return values
    values = values.flatten(1)
    scale = values.std(dim=1, keepdim=True).clamp_min(1e-12)
    weights = torch.softmax(sharpness * values / scale, dim=1).detach()  # where to pull, not something to ascend
    return (weights * values).sum(dim=1)


def unit_activation(model: nn.Module, images: torch.Tensor, stage: str, channel: int) -> np.ndarray:
    """(N, 1, side, side) float in [0, 1] -> (N,) float32: each image's value of the measure visualize_unit
    maximises (channel_values: a map's largest value for a conv, ReLU or pool stage; the unit's value for a dense
    stage; the class's logit for "logits"). Batched, without gradients."""
    index, _ = unit_stage(model, stage)
    values = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            values.append(channel_values(stage_output(model, images[start:start + BATCH], index), channel))
    return torch.cat(values).float().cpu().numpy() if values else np.zeros(0, dtype=np.float32)


# ---------------------------------------------------------------- parameterisation, transforms, regularisers

def image_of(latent: torch.Tensor) -> torch.Tensor:
    """The box constraint: any latent (1, 1, side, side) -> an image in (0, 1)."""
    return torch.sigmoid(latent)


def jittered(image: torch.Tensor, generator: torch.Generator, pixels: int) -> torch.Tensor:
    """image moved by a random whole-pixel shift of up to +-pixels each way, the edge filled with black (MNIST's
    background): the picture must excite the unit wherever it lands, not through one exact pixel."""
    if pixels <= 0:
        return image
    dy, dx = (torch.randint(-pixels, pixels + 1, (2,), generator=generator)).tolist()
    padded = F.pad(image, (pixels, pixels, pixels, pixels))
    side_y, side_x = image.shape[-2:]
    return padded[..., pixels + dy:pixels + dy + side_y, pixels + dx:pixels + dx + side_x]


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels: small for smooth strokes, large for speckle."""
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()


# ---------------------------------------------------------------- the render loop

@dataclass(frozen=True)
class Recipe:
    """How visualize_unit renders: the steps and the weights of its regularisers (chosen by looking, see the note)."""

    steps: int = 320  # gradient steps on the latent (~0.3-1 s for the article's CNN on a 2-core CPU)
    learning_rate: float = 0.12  # Adam's, on the latent
    jitter: int = 2  # the largest random shift per step while shaping, in pixels
    total_variation: float = 0.3  # weight of total_variation per pixel, the objective's gradient having RMS 1
    darkness: float = 0.3  # weight of the mean pixel while shaping (ink costs): strokes on black, as in the dataset
    start: float = -2.0  # the latent's start: sigmoid(-2) = 0.12, a dark image with a little noise
    sharpness: float = 1.0  # how much spread_values leans to the map's largest values while shaping
    polish: float = 0.4  # the last fraction of the steps: no jitter, no darkness, the hard maximum ascended

READABLE = Recipe()


def visualize_unit(model: nn.Module, stage: str, channel: int, seed: int = 0, recipe: Recipe = READABLE,
                   progress: Callable[[float], None] | None = None) -> np.ndarray:
    """(side, side) float32 in [0, 1] (multiples of 1/255), side the model's dataset's: an input that excites unit
    `channel` of `stage` (a class output is stage "logits", channel the class) by gradient ascent on a
    sigmoid-parameterised latent.

    Deterministic for a seed. The model is only read (see the module's docstring). progress(fraction) after steps.
    """
    index, _ = unit_stage(model, stage)
    side = model_spec(model).side
    generator = torch.Generator().manual_seed(int(seed))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    latent = (recipe.start + 0.1 * torch.randn(1, 1, side, side, generator=generator)).to(device)
    latent.requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=recipe.learning_rate)
    with torch.enable_grad():
        for step in range(recipe.steps):
            shaping = step < recipe.steps * (1 - recipe.polish)  # shaped with every regulariser, then sharpened
            image = image_of(latent)
            moved = jittered(image, generator, recipe.jitter) if shaping else image
            output = stage_output(model, moved, index)
            value = (spread_values(output, channel, recipe.sharpness) if shaping else channel_values(output, channel))[0]
            # The latent's gradient only: the model's parameters' .grad stay untouched.
            (ascent,) = torch.autograd.grad(value, latent, retain_graph=True)
            # Units differ in size by 100x (conv1's values ~0.1, logits ~10): the objective's gradient is scaled to
            # an RMS of 1 per pixel, so one set of regulariser weights reads the same for every unit.
            ascent = ascent / ascent.pow(2).mean().sqrt().clamp_min(1e-12)
            latent.grad = -ascent
            penalty = recipe.total_variation * total_variation(image) + shaping * recipe.darkness * image.mean()
            latent.grad += torch.autograd.grad(penalty * latent.numel(), latent)[0]
            optimiser.step()
            if progress is not None and (step + 1) % 16 == 0:
                progress((step + 1) / recipe.steps)
    # On the dataset's 256 grey levels, as every test image is: a sigmoid never reaches 0 exactly, and a unit whose
    # kernel is all negative is at its best (0) on pure black, which the test images have and the latent can't.
    picture = image_of(latent.detach()).squeeze().cpu().numpy()
    return (np.round(picture * 255.0) / 255.0).astype(np.float32)


# ---------------------------------------------------------------- the test images that excite a unit most

@dataclass(frozen=True)
class Patch:
    """One of the test images that excite a unit most, and the part of it the unit sees."""

    index: int  # the image's index in the images given
    row: int | None  # the position of the unit's strongest value in its map; None for a dense unit or a logit
    col: int | None
    value: float  # the unit's value there: unit_activation's measure of this image
    box: tuple[int, int, int, int]  # (top, left, bottom, right) of the receptive field, half-open, input pixels
    patch: np.ndarray  # (bottom - top, right - left) float32 in [0, 1]: the image cropped to box


@dataclass(frozen=True)
class LayerMaxima:
    """Every channel's strongest value in each image, for one layer: one pass over the images serves every unit of
    the layer (top_patches for one unit is then a sort, not a pass over 10,000 images)."""

    values: np.ndarray  # (N, C) float32: channel c's largest value in image n (a dense unit's or logit's own value)
    positions: np.ndarray  # (N, C) int32: where in its map (flat index); zeros for a dense layer
    width: int | None  # the map's width; None for a dense layer or the logits


def layer_maxima(model: nn.Module, images: torch.Tensor, stage: str) -> LayerMaxima:
    """Each channel's strongest value and its position for every image of (N, 1, side, side) float in [0, 1], at
    stage (any stage unit_activation accepts). Batched, without gradients."""
    index, _ = unit_stage(model, stage)
    values, positions, width = [], [], None
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            output = stage_output(model, images[start:start + BATCH], index)  # (B, C, H, W) or (B, C)
            width = output.shape[-1] if output.dim() == 4 else None
            flat = output.flatten(2) if output.dim() == 4 else output[..., None]  # (B, C, H*W) or (B, C, 1)
            best, where = flat.max(dim=2)
            values.append(best.float())
            positions.append(where.to(torch.int32))
    if not values:
        return LayerMaxima(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int32), None)
    return LayerMaxima(torch.cat(values).cpu().numpy(), torch.cat(positions).cpu().numpy(), width)


def top_patches(model: nn.Module, images: torch.Tensor, stage: str, channel: int, k: int = 9,
                maxima: LayerMaxima | None = None) -> list[Patch]:
    """The k images of (N, 1, side, side) float in [0, 1] whose unit excites most (distinct images, strongest first,
    ties to the lower index), each cropped to the receptive field of its strongest position
    (cnn.inside.receptive_field); a dense unit's or a logit's patch is the whole image. maxima: layer_maxima of
    the same model, images and stage, when already computed (then no forward pass is made)."""
    unit_stage(model, stage)  # an unknown stage: its sentence, before any work
    if len(images) == 0:
        return []
    maxima = maxima if maxima is not None else layer_maxima(model, images, stage)
    units = maxima.values.shape[1]
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < units:
        raise ValueError(f"There is no unit {str(channel)[:20]} here: this layer has {units} (0 to {units - 1}).")
    values, positions, width = maxima.values[:, channel], maxima.positions[:, channel], maxima.width
    order = np.lexsort((np.arange(len(values)), -values))[:max(int(k), 0)]  # by value, then by index
    name = unit_stage(model, stage)[1].name
    patches = []
    for i in order.tolist():
        row, col = divmod(int(positions[i]), width) if width is not None else (None, None)
        box = receptive_field(name, row or 0, col or 0, model)  # a dense unit's box: the whole image
        top, left, bottom, right = box
        patch = images[i, 0, top:bottom, left:right].detach().cpu().numpy().astype(np.float32)
        patches.append(Patch(int(i), row, col, float(values[i]), box, patch))
    return patches


# ---------------------------------------------------------------- the acceptance check

@dataclass(frozen=True)
class UnitCheck:
    """One unit's optimised input against the test images, on unit_activation's measure."""

    stage: str
    channel: int
    optimised: float  # the unit's value for visualize_unit's picture
    best_image: float  # its largest value over the test images
    best_index: int  # which test image gave it

    @property
    def beats(self) -> bool:
        return self.optimised >= self.best_image


def check_units(model: nn.Module, images: torch.Tensor, units: list[tuple[str, int]], seed: int = 0,
                recipe: Recipe = READABLE,
                progress: Callable[[float], None] | None = None) -> list[UnitCheck]:
    """For each (stage, channel) of units: visualize_unit's picture against the best of images (N, 1, side, side).

    The issue's acceptance: the picture must excite its unit at least as strongly as the best test image for at
    least 90% of the units tried (beating_fraction).
    """
    best_of = {stage: best_images(model, images, stage) for stage in dict.fromkeys(stage for stage, _ in units)}
    checks = []
    for done, (stage, channel) in enumerate(units):
        picture = torch.from_numpy(visualize_unit(model, stage, channel, seed=seed, recipe=recipe))[None, None]
        optimised = float(unit_activation(model, picture, stage, channel)[0])
        values, indices = best_of[stage]
        checks.append(UnitCheck(stage, int(channel), optimised, float(values[channel]), int(indices[channel])))
        if progress is not None:
            progress((done + 1) / len(units))
    return checks


def best_images(model: nn.Module, images: torch.Tensor, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """((C,) float32, (C,) int64): for each unit of stage, its largest unit_activation over images and which image
    gave it; one forward per batch for all the stage's units."""
    index, _ = unit_stage(model, stage)
    best, which = None, None
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            output = stage_output(model, images[start:start + BATCH], index)
            values = output.flatten(2).amax(dim=2) if output.dim() == 4 else output  # (B, C): channel_values per unit
            top, where = values.max(dim=0)  # (C,): the batch's best; an earlier batch keeps a tie
            if best is None:
                best, which = top, where + start
            else:
                better = top > best
                best, which = torch.where(better, top, best), torch.where(better, where + start, which)
    return best.float().cpu().numpy(), which.cpu().numpy()


def beating_fraction(checks: list[UnitCheck]) -> float:
    """The fraction of checked units whose optimised input beats (or ties) every test image."""
    return sum(check.beats for check in checks) / len(checks) if checks else 0.0


# ---------------------------------------------------------------- what the page shows

def visualisable_layers(model: nn.Module) -> dict[str, int]:
    """{stage: how many units} a page offers, in the order data flows: each conv stage (its maps), each hidden dense
    layer (its units, after ReLU: the article's "fc"), and "logits" (one per class). Read from the declared stages."""
    layers = {layer.name: layer.maps for layer in conv_layers(model)}
    layers.update({layer.activation: layer.units for layer in dense_layers(model)})
    last = [stage for stage in model.stages if stage.activation == "logits"]
    if last:
        layers["logits"] = getattr(model, last[0].module).out_features
    return layers


def layer_of(model: nn.Module, stage: str) -> str | None:
    """The visualisable layer a recorded stage belongs to ("pool2" and "relu2" -> "conv2", "fc" -> "fc"); None when
    model has no such stage (another network's choice, or a forged one)."""
    layers = visualisable_layers(model)
    if stage in layers:
        return stage
    return next((layer.name for layer in conv_layers(model) if stage in layer.views.values()), None)


def tiles_grid(images: list[np.ndarray], labels: list[str], columns: int, cell: int = 84) -> np.ndarray:
    """K (h, w) float images in [0, 1], of any sizes (patches clipped at the image's edge are smaller) -> one
    (H, W, 3) uint8 grid: each centred on a mid-grey square as large as the largest of them (grey is no pixel of
    the image: MNIST's background is black), enlarged to about cell px, its label under it."""
    side = max(max(image.shape) for image in images)
    tiles = np.full((len(images), side, side, 3), 128, dtype=np.uint8)
    for tile, image in zip(tiles, images):
        top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
        grey = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
        tile[top:top + image.shape[0], left:left + image.shape[1]] = grey[..., None]
    return tile_grid(tiles, max(1, cell // side), columns, pad_value=255, labels=labels)
