"""What each layer computes for one image, as arrays and images: feature maps, filters, one convolution by hand."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import nn
from torchvision.utils import make_grid

from .train import evaluate
from .views import diverging_rgb

STAGES = {"conv": "before ReLU", "relu": "after ReLU", "pool": "after pooling"}
# The input each conv layer reads: the image, then the previous layer's pooled maps (dropout is off in eval).
CONV_INPUT = {1: "input", 2: "pool1", 3: "pool2"}


def activations(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every activation of one image (batch dimension dropped) as numpy arrays; the model must be in eval mode."""
    with torch.inference_mode():
        acts = model.forward_with_activations(x)
    return {name: tensor[0].cpu().numpy() for name, tensor in acts.items()}


def colourise(values: np.ndarray, low: float, high: float, cmap: str = "viridis") -> np.ndarray:
    """(..., H, W) values -> (..., H, W, 3) uint8 with a matplotlib colour map between low and high."""
    span = high - low if high > low else 1.0
    scaled = np.clip((np.asarray(values, dtype=np.float32) - low) / span, 0, 1)
    return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def maps_grid(maps: np.ndarray, per: str = "map", columns: int = 16, cell: int = 56) -> tuple[np.ndarray, float, float]:
    """(C, H, W) maps -> (grid image (H', W', 3) uint8, low, high).

    per="map": each map stretched to its own range (shows every map's pattern);
    per="layer": one range for all maps (shows which maps respond most). low/high are the layer's range.
    """
    maps = np.asarray(maps, dtype=np.float32)
    low, high = float(maps.min()), float(maps.max())
    if per == "map":
        mins = maps.min(axis=(1, 2), keepdims=True)
        spans = maps.max(axis=(1, 2), keepdims=True) - mins
        normalised = (maps - mins) / np.where(spans > 0, spans, 1.0)
        rgb = colourise(normalised, 0.0, 1.0)
    elif per == "layer":
        rgb = colourise(maps, low, high)
    else:
        raise ValueError("per must be 'map' or 'layer'")
    return tile_grid(rgb, max(1, cell // maps.shape[-1]), columns, pad_value=255), low, high


def tile_grid(rgb: np.ndarray, repeat: int, columns: int, pad_value: int) -> np.ndarray:
    """(K, h, w, 3) uint8 tiles -> one (H, W, 3) uint8 grid, each tile enlarged repeat times, 2 px gaps."""
    tiles = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (K, 3, h, w)
    tiles = tiles.repeat_interleave(repeat, dim=2).repeat_interleave(repeat, dim=3)
    grid = make_grid(tiles, nrow=columns, padding=2, pad_value=pad_value)
    return grid.permute(1, 2, 0).numpy().astype(np.uint8)


def enlarge(image: np.ndarray, size: int = 280) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W, ...) image so each value stays a crisp square."""
    repeat = max(1, size // image.shape[0])
    return image.repeat(repeat, axis=0).repeat(repeat, axis=1)


def kernels(model: nn.Module, layer: int, input_channel: int = 0) -> np.ndarray:
    """conv<layer>'s 3x3 kernels that read one input channel: (out_channels, 3, 3)."""
    weight = getattr(model, f"conv{layer}").weight.detach().cpu().numpy()  # (out, in, 3, 3)
    if not 0 <= input_channel < weight.shape[1]:
        raise ValueError(f"conv{layer} reads {weight.shape[1]} input channels; choose 0 to {weight.shape[1] - 1}.")
    return weight[:, input_channel]


def kernel_grid(weights: np.ndarray, columns: int = 16, cell: int = 30,
                limit: float | None = None) -> tuple[np.ndarray, float]:
    """(K, 3, 3) kernels -> (image (H, W, 3) uint8 on a blue-white-red scale centred on 0, the scale's limit).

    limit fixes the scale (e.g. one limit for every training snapshot); by default it is the largest |weight|.
    """
    limit = limit if limit is not None else float(np.abs(weights).max()) or 1.0
    rgb = diverging_rgb(np.asarray(weights, dtype=np.float32), limit)
    return tile_grid(rgb, cell // 3, columns, pad_value=128), limit


def convolution_at(model: nn.Module, acts: dict[str, np.ndarray], layer: int, channel: int,
                   row: int, col: int) -> dict:
    """One output value of conv<layer> computed by hand at (row, col) of map `channel`.

    Returns patch (C_in, 3, 3) of the layer's input (zero-padded at the edges, 'SAME'), kernel
    (C_in, 3, 3), products, per_channel sums (C_in,), total, and value: the map's own value there
    before ReLU, which total equals up to float rounding.
    """
    source = acts[CONV_INPUT[layer]]  # (C_in, H, W)
    size = source.shape[-1]
    if not (0 <= row < size and 0 <= col < size):
        raise ValueError(f"conv{layer}'s maps are {size}x{size}: choose a row and column from 0 to {size - 1}.")
    padded = np.pad(source, ((0, 0), (1, 1), (1, 1)))
    patch = padded[:, row:row + 3, col:col + 3]
    kernel = getattr(model, f"conv{layer}").weight.detach().cpu().numpy()[channel]  # (C_in, 3, 3)
    products = patch * kernel
    per_channel = products.sum(axis=(1, 2))
    return {"patch": patch, "kernel": kernel, "products": products, "per_channel": per_channel,
            "total": float(per_channel.sum()), "value": float(acts[f"conv{layer}"][channel, row, col]),
            "input": CONV_INPUT[layer]}


def confusion_matrix(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(10, 10) counts [true, predicted] over uint8 images, and the predictions (N,)."""
    predicted = evaluate(model, images, labels)["predictions"].numpy()
    return confusion_counts(labels.numpy(), predicted), predicted


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(10, 10) int64 counts [true, predicted] from two (N,) arrays of digits 0-9 (e.g. predictions kept by training)."""
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def hidden_strip(hidden: np.ndarray, width: int = 25) -> np.ndarray:
    """FC 625's activations as a (25, 25) grid image, 0 black to the largest value bright."""
    values = np.asarray(hidden, dtype=np.float32)
    rows = int(np.ceil(values.size / width))
    padded = np.zeros(rows * width, dtype=np.float32)
    padded[:values.size] = values
    return colourise(padded.reshape(rows, width), 0.0, float(values.max()) or 1.0, cmap="magma")


def colour_bar(low: float, high: float, width: int = 256, height: int = 12, cmap: str = "viridis") -> np.ndarray:
    """A horizontal colour bar from low to high, (height, width, 3) uint8."""
    return np.repeat(colourise(np.linspace(low, high, width)[None, :], low, high, cmap), height, axis=0)
