"""What each layer computes for one image, as arrays and images: feature maps, filters, one convolution by hand."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid

from .train import evaluate
from .views import diverging_rgb

STAGES = {"conv": "before ReLU", "relu": "after ReLU", "pool": "after pooling"}
# The input each conv layer reads: the image, then the previous layer's pooled maps (dropout is off in eval).
CONV_INPUT = {1: "input", 2: "pool1", 3: "pool2"}
# The signed scale for maps before ReLU: 0 (the blank background, as the layers have no biases) is dark, a strong
# answer of either sign is bright, and the hue tells the sign. Blue and orange as in colour-blind-safe palettes.
SIGNED_ZERO = np.array([0.09, 0.09, 0.11], dtype=np.float32)
SIGNED_NEGATIVE = np.array([0.35, 0.70, 1.00], dtype=np.float32)
SIGNED_POSITIVE = np.array([1.00, 0.62, 0.15], dtype=np.float32)
LABEL_HEIGHT = 22  # px of the strip under each labelled tile: readable when a 16-column grid is shown 564 px wide


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


def signed_rgb(values: np.ndarray, limit: float | np.ndarray) -> np.ndarray:
    """(...) values -> (..., 3) uint8 on a diverging scale centred on 0: dark at 0, blue below, orange above.

    The colour goes linearly from SIGNED_ZERO to the sign's colour as |value| goes from 0 to limit (clipped); limit
    may be an array that broadcasts against values (e.g. one limit per map).
    """
    limit = np.where(np.asarray(limit, dtype=np.float32) > 0, limit, 1.0)
    t = np.clip(np.asarray(values, dtype=np.float32) / limit, -1.0, 1.0)[..., None]
    rgb = np.where(t >= 0, SIGNED_ZERO + t * (SIGNED_POSITIVE - SIGNED_ZERO),
                   SIGNED_ZERO + (-t) * (SIGNED_NEGATIVE - SIGNED_ZERO))
    return (rgb * 255).round().astype(np.uint8)


def most_active_map(maps: np.ndarray) -> int:
    """The index of the map of (C, H, W) that lets most through ReLU: the largest mean of its positive values.

    The map a page opens first: map 0 of conv3 is often all zeros for a given digit.
    """
    maps = np.asarray(maps, dtype=np.float32)
    return int(np.argmax(np.clip(maps, 0, None).reshape(len(maps), -1).mean(axis=1)))


def maps_grid(maps: np.ndarray, per: str = "map", columns: int = 16, cell: int = 56, signed: bool = False,
              numbered: bool = False) -> tuple[np.ndarray, float, float]:
    """(C, H, W) maps -> (grid image (H', W', 3) uint8, low, high).

    per="map": each map stretched to its own range (shows every map's pattern);
    per="layer": one range for all maps (shows which maps respond most). low/high are the layer's range,
    or (-limit, limit) when signed: maps before ReLU on signed_rgb's scale, 0 dark, centred on 0 with the
    largest |value| of each map (per="map") or of the layer as the limit. numbered: each tile's number 0..C-1
    written under it.
    """
    maps = np.asarray(maps, dtype=np.float32)
    low, high = float(maps.min()), float(maps.max())
    if per not in ("map", "layer"):
        raise ValueError("per must be 'map' or 'layer'")
    repeat = max(1, cell // maps.shape[-1])
    numbers = [str(k) for k in range(len(maps))]
    if signed:
        limits = np.abs(maps).max(axis=(1, 2), keepdims=True) if per == "map" else max(abs(low), abs(high))
        limit = max(abs(low), abs(high))
        rgb = signed_rgb(maps, limits)
        return tile_grid(rgb, repeat, columns, pad_value=255, labels=numbers if numbered else None), -limit, limit
    if per == "map":
        mins = maps.min(axis=(1, 2), keepdims=True)
        spans = maps.max(axis=(1, 2), keepdims=True) - mins
        normalised = (maps - mins) / np.where(spans > 0, spans, 1.0)
        rgb = colourise(normalised, 0.0, 1.0)
    else:
        rgb = colourise(maps, low, high)
    return tile_grid(rgb, repeat, columns, pad_value=255, labels=numbers if numbered else None), low, high


def tile_grid(rgb: np.ndarray, repeat: int, columns: int, pad_value: int, labels: list[str] | None = None) -> np.ndarray:
    """(K, h, w, 3) uint8 tiles -> one (H, W, 3) uint8 grid, each tile enlarged repeat times, 2 px gaps.

    labels: K texts, each written in a white strip of LABEL_HEIGHT px under its tile.
    """
    tiles = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (K, 3, h, w)
    tiles = tiles.repeat_interleave(repeat, dim=2).repeat_interleave(repeat, dim=3)
    if labels is not None:
        strips = torch.from_numpy(np.stack([label_strip(text, tiles.shape[-1]) for text in labels]))
        tiles = torch.cat([tiles, strips.permute(0, 3, 1, 2)], dim=2)  # (K, 3, h + LABEL_HEIGHT, w)
    grid = make_grid(tiles, nrow=columns, padding=2, pad_value=pad_value)
    return grid.permute(1, 2, 0).numpy().astype(np.uint8)


def label_strip(text: str, width: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8: text written in dark grey, centred on white (the label under a tile)."""
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=height - 4)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), text,
              fill=(30, 30, 30), font=font)
    return np.asarray(strip, dtype=np.uint8)


def thumbnail_grid(images: np.ndarray, labels: list[str], columns: int = 4) -> np.ndarray:
    """(K, 28, 28) uint8 digits -> one (H, W, 3) uint8 grid of 56 px thumbnails, each text of labels under its own."""
    rgb = np.repeat(np.asarray(images, dtype=np.uint8)[..., None], 3, axis=-1)
    return tile_grid(rgb, 2, columns, pad_value=255, labels=labels)


def map_colour_scale(low: float, high: float, signed: bool, per: str) -> tuple[np.ndarray, str]:
    """(colour bar (12, 256, 3) uint8, its caption) for a grid made by maps_grid with the same arguments."""
    if signed:
        bar = signed_rgb(np.linspace(low, high, 256)[None, :], high).repeat(12, axis=0)
        text = f"colour scale: blue negative, dark 0, orange positive (-{high:.2f} to {high:.2f})"
        return bar, text + (" - each map is scaled to its own largest value" if per == "map" else "")
    text = f"colour scale: {low:.2f} (dark) to {high:.2f} (bright)"
    return colour_bar(low, high), text + (" - each map is stretched to its own range" if per == "map" else "")


def enlarged_map(values: np.ndarray, signed: bool, size: int = 280) -> np.ndarray:
    """One (H, W) map -> (size', size', 3) uint8, on its own range (signed: centred on 0), crisp squares."""
    values = np.asarray(values, dtype=np.float32)
    if signed:
        rgb = signed_rgb(values, float(np.abs(values).max()))
    else:
        rgb = colourise(values, float(values.min()), float(values.max()))
    return enlarge(rgb, size)


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
    before ReLU, which total equals up to float rounding; input, the name of the layer's input, and size, its side.
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
            "input": CONV_INPUT[layer], "size": size}


def strongest_output(conv_map: np.ndarray) -> tuple[int, int]:
    """(row, col) of the largest value of one (H, W) conv map: where the filter finds its pattern.

    The pixel a convolution by hand starts on: the layers have no biases, so a non-zero answer there comes from
    non-zero input in its 3x3 patch (the centre of the image is often blank paper, all zeros).
    """
    row, col = np.unravel_index(int(np.argmax(conv_map)), np.shape(conv_map))
    return int(row), int(col)


def shown_decimals(kernel: np.ndarray) -> int:
    """The one precision a convolution by hand shows its numbers at: 2 significant digits of a typical
    (median) |weight|, between 2 and 4 decimals (conv1's weights are mostly 0.01-0.1)."""
    typical = float(np.median(np.abs(kernel)))
    if typical <= 0:
        return 2
    return int(np.clip(1 - np.floor(np.log10(typical)), 2, 4))


def convolution_table(result: dict, channel: int, decimals: int) -> dict:
    """One input channel of a convolution_at result, rounded the way a page shows it.

    patch, kernel, products: (3, 3) rounded to decimals; each product is the SHOWN pixel times the SHOWN weight,
    rounded, so a student can check every row by hand (a pixel of 0.996 shown as 1.00 times 1.19 is 1.19);
    shown_sum: the nine SHOWN products added (so the table adds up), rounded to decimals;
    size: the input map's side (positions outside it are the zero border);
    exact_sum: the channel's exact sum rounded to decimals (it may differ from shown_sum in the last digit).
    """
    def rounded(values):  # + 0.0 turns a rounded -0.0 into 0.0
        return np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0

    patch, kernel = rounded(result["patch"][channel]), rounded(result["kernel"][channel])
    products = rounded(patch * kernel)
    return {"patch": patch, "kernel": kernel, "products": products, "shown_sum": float(rounded(products.sum())),
            "exact_sum": float(rounded(result["per_channel"][channel])), "decimals": decimals,
            "size": result.get("size")}


def convolution_sentence(result: dict, table: dict, layer: int, channel: int, pixel: tuple, shown: int) -> str:
    """The Markdown sentence under a convolution by hand: what the shown products add up to, at the tables' own
    precision (the sum of the shown products, and the exact sum too when rounding makes them differ)."""
    d = table["decimals"]
    added = f"The nine products shown add up to **{table['shown_sum']:.{d}f}**"
    if table["shown_sum"] != table["exact_sum"]:
        added += f" (unrounded, they add up to {table['exact_sum']:.{d}f}: the difference is rounding)"
    if layer == 1:
        return f"{added}: conv1 map {channel} at {pixel} before ReLU = **{result['value']:.{d}f}**."
    count = len(result["per_channel"])
    return (f"conv{layer} reads {count} input maps, so the nine products are summed in each of them. "
            f"{added} (channel {shown}, the largest contribution), and the {count} sums are added: "
            f"**{result['total']:.{d}f}** = the map's value at {pixel} before ReLU, **{result['value']:.{d}f}**.")


def products_table(table: dict, pixel: tuple[int, int]) -> str:
    """A convolution_table as a Markdown table of nine rows, input x weight = product, and the sum of the
    shown products, every number at the table's one precision. pixel: the (row, col) the 3x3 patch is centred on;
    a position outside the map is the zero border ('SAME')."""
    d, size = table["decimals"], table.get("size")
    lines = ["| input at (row, col) | input | x weight | = product |", "|:--|--:|--:|--:|"]
    for i in range(3):
        for j in range(3):
            row, col = pixel[0] + i - 1, pixel[1] + j - 1
            where = f"({row}, {col})" + (" border" if size is not None and not (0 <= row < size and 0 <= col < size) else "")
            lines.append(f"| {where} | {table['patch'][i, j]:.{d}f} | {table['kernel'][i, j]:.{d}f} "
                         f"| {table['products'][i, j]:.{d}f} |")
    lines.append(f"| **sum** | | | **{table['shown_sum']:.{d}f}** |")
    return "\n".join(lines)


def marked_patch(source: np.ndarray, row: int, col: int, size: int = 168,
                 colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """One (H, W) input map (grey, 0 black to its largest value white), enlarged to ~size px, with a 2 px box
    drawn around the 3x3 patch centred on (row, col) (cut at the border, where 'SAME' pads zeros).
    -> (H * r, W * r, 3) uint8 with r = size // H."""
    source = np.asarray(source, dtype=np.float32)
    height, width = source.shape
    repeat = max(1, size // height)
    rgb = enlarge(colourise(source, 0.0, float(source.max()) or 1.0, cmap="gray"), size).copy()
    top, left = max(row - 1, 0) * repeat, max(col - 1, 0) * repeat
    bottom, right = (min(row + 1, height - 1) + 1) * repeat, (min(col + 1, width - 1) + 1) * repeat
    rgb[top:top + 2, left:right] = colour
    rgb[bottom - 2:bottom, left:right] = colour
    rgb[top:bottom, left:left + 2] = colour
    rgb[top:bottom, right - 2:right] = colour
    return rgb


def relative_luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG 2 relative luminance of (..., 3) sRGB values in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def contrast_ratio(first: np.ndarray, second: np.ndarray) -> float:
    """WCAG 2 contrast ratio of two sRGB colours in [0, 1]: 1 (same) to 21 (black on white)."""
    lighter, darker = sorted((float(relative_luminance(first)), float(relative_luminance(second))), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def hex_colour(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(float(v) * 255)):02x}" for v in rgb[:3])


def confusion_cells(matrix: np.ndarray) -> list[dict]:
    """A (10, 10) [true, predicted] count matrix as 100 chart rows: true, predicted (strings "0"-"9"), count,
    fill (the cell's colour, Blues on a log scale so the few errors show beside ~1,000 right answers) and
    ink (black or white, whichever contrasts more with fill: the counts stay readable on the dark diagonal)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    shade = np.log1p(matrix) / max(np.log1p(matrix.max()), 1e-9)  # 0 for no image, 1 for the largest count
    colours = colormaps["Blues"](0.05 + 0.95 * shade)[..., :3]
    black, white = np.zeros(3), np.ones(3)
    cells = []
    for true in range(10):
        for predicted in range(10):
            fill = colours[true, predicted]
            ink = "#ffffff" if contrast_ratio(fill, white) > contrast_ratio(fill, black) else "#000000"
            cells.append({"true": str(true), "predicted": str(predicted), "count": int(matrix[true, predicted]),
                          "fill": hex_colour(fill), "ink": ink})
    return cells


def picked_cell(selection) -> tuple[int, int] | None:
    """(true, predicted) of the confusion cell a chart selection names, or None.

    selection: the list of points a browser sends for the chart's point selection, e.g. [{"true": "4",
    "predicted": "9"}]. It comes from the browser, so anything but one cell of digits 0-9 is None.
    """
    if not isinstance(selection, (list, tuple)) or len(selection) != 1 or not isinstance(selection[0], dict):
        return None
    point = selection[0]
    digits = [str(point.get(name, "")) for name in ("true", "predicted")]
    if not all(len(d) == 1 and d in "0123456789" for d in digits):
        return None
    return int(digits[0]), int(digits[1])


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
