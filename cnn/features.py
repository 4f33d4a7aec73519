"""What each layer computes for one image, as arrays and images: feature maps, filters, one convolution by hand.

What a network has to show is read from its declared stages (cnn.model.Stage): its conv layers, what follows each
(ReLU, pooling), its hidden fully connected layers, and, for softmax regression, one weight image per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid

from .checkpoint import BUNDLED_MODEL
from .model import model_spec, network_spec
from .train import evaluate
from .views import capitalised, diverging_rgb

# The views of a conv layer's maps, in the order data flows, by the kind of stage that records them.
STAGES = {"conv": "before ReLU", "relu": "after ReLU", "pool": "after pooling"}
# The signed scale for maps before ReLU: 0 (the blank background, when a layer has no biases) is dark, a strong
# answer of either sign is bright, and the hue tells the sign. Blue and orange as in colour-blind-safe palettes.
SIGNED_ZERO = np.array([0.09, 0.09, 0.11], dtype=np.float32)
SIGNED_NEGATIVE = np.array([0.35, 0.70, 1.00], dtype=np.float32)
SIGNED_POSITIVE = np.array([1.00, 0.62, 0.15], dtype=np.float32)
LABEL_HEIGHT = 22  # px of the strip under each labelled tile: readable when a 16-column grid is shown 564 px wide


@dataclass(frozen=True)
class ConvLayer:
    """One conv stage of a network and what the Feature maps page can show of it, read from model.stages."""

    name: str  # the stage's name: "conv1"
    maps: int  # output channels: the maps it makes (32 for the article's conv1, 6 for LeNet's)
    inputs: int  # input channels each filter reads
    kernel_size: int  # the filters' side: 3 (the article) or 5 (LeNet)
    padding: int  # zeros added around the input on each side: 1 ('SAME' for 3x3), 2 (LeNet's conv1), 0
    bias: bool  # whether each filter adds a bias (LeNet's do; the article's have none)
    input: str  # the activation it reads: "input", or the previous block's recorded output ("pool1")
    views: dict  # {"conv": "conv1", "relu": "relu1", "pool": "pool1"}: STAGES key -> activation key, in order


@dataclass(frozen=True)
class DenseLayer:
    """A hidden fully connected layer whose output (after its ReLU) the page shows: FC 625, LeNet's FC 120 and 84."""

    name: str  # the stage's name: "fc", "fc1"
    units: int  # its outputs
    activation: str  # the key forward_with_activations records it under


def _module(model: nn.Module, name: str) -> nn.Module:
    return getattr(model, name)  # a declared stage's module: never a guessed layer name


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """The conv stages of model, each with the views that follow it (ReLU, pooling) up to the next layer; [] for
    a network without convolutions (softmax regression, the MLP)."""
    stages = tuple(getattr(model, "stages", ()))
    layers, last_recorded = [], "input"
    for i, stage in enumerate(stages):
        if stage.kind == "conv":
            conv = _module(model, stage.module)
            views = {"conv": stage.activation}
            for after in stages[i + 1:]:
                if after.kind in ("conv", "linear", "flatten"):
                    break
                if after.kind in STAGES and after.activation:
                    views[after.kind] = after.activation
            if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or isinstance(conv.padding, str):
                raise ValueError(f"{stage.name} is not a plain stride-1 convolution: the page cannot show it by hand.")
            layers.append(ConvLayer(stage.name, conv.out_channels, conv.in_channels, conv.kernel_size[0],
                                    conv.padding[0], conv.bias is not None, last_recorded, views))
        if stage.activation:
            last_recorded = stage.activation
    return layers


def conv_layer(model: nn.Module, name: str) -> ConvLayer:
    """The conv layer called name; ValueError naming the ones the network has otherwise."""
    layers = {layer.name: layer for layer in conv_layers(model)}
    if name not in layers:
        have = ", ".join(layers) or "none"
        raise ValueError(f"This network has no convolution layer called {str(name)[:20]!r} (it has: {have}).")
    return layers[name]


def dense_layers(model: nn.Module) -> list[DenseLayer]:
    """The hidden fully connected layers of model whose output is recorded (after their ReLU); the logits excluded."""
    stages = tuple(getattr(model, "stages", ()))
    linear = [i for i, stage in enumerate(stages) if stage.kind == "linear"]
    layers = []
    for i in linear[:-1]:  # the last linear stage makes the logits, shown as probabilities
        recorded = stages[i].activation
        for after in stages[i + 1:]:
            if after.kind in ("conv", "linear", "flatten"):
                break
            recorded = after.activation or recorded
        if recorded:
            layers.append(DenseLayer(stages[i].name, _module(model, stages[i].module).out_features, recorded))
    return layers


def class_templates(model: nn.Module) -> np.ndarray | None:
    """(classes, side, side), side that of the model's dataset: the weight rows of a network whose one linear
    layer maps raw pixels straight to the class scores (softmax regression), each reshaped to the image: what it
    learnt to look for in each class.

    None for any other network (an MLP's first layer leads to hidden units, not to classes).
    """
    stages = [stage for stage in getattr(model, "stages", ()) if stage.kind != "dropout"]
    kinds = [stage.kind for stage in stages]
    if kinds != ["flatten", "linear"]:
        return None
    weight = _module(model, stages[1].module).weight.detach().cpu().numpy()  # (classes, side * side)
    side = model_spec(model).side
    return weight.reshape(len(weight), side, side)


def class_template_grid(templates: np.ndarray, class_names, columns: int = 5,
                        cell: int = 84) -> tuple[np.ndarray, float]:
    """(K, side, side) weight images -> (one (H, W, 3) uint8 grid on the blue-white-red scale centred on 0, each
    image's class name under it, the scale's limit: the largest |weight|)."""
    templates = np.asarray(templates, dtype=np.float32)
    limit = float(np.abs(templates).max()) or 1.0
    rgb = diverging_rgb(templates, limit)
    return tile_grid(rgb, max(1, cell // templates.shape[-1]), columns, pad_value=255,
                     labels=[str(name) for name in class_names]), limit


def no_maps_sentence(model: nn.Module) -> str:
    """Why the page shows no feature maps for a network without convolutions, and what it shows instead; "" for a
    network with convolutions."""
    if conv_layers(model):
        return ""
    try:
        title = network_spec(getattr(model, "network", "")).title
    except ValueError:
        title = "This network"
    title = capitalised(title)
    if class_templates(model) is not None:
        return (f"{title} has no convolution layers, so there are no feature maps: it weighs every pixel directly, "
                "with one weight per pixel and class. Those weights, drawn as one image per class, are what it "
                "learnt to look for; below them, its answer for the chosen image.")
    return (f"{title} has no convolution layers, so there are no feature maps: its first layer weighs every pixel "
            "directly and never sees which pixels are neighbours. Below: what its hidden layer computes for the "
            "chosen image, and its answer.")


def history_folder(checkpoint: Path | str) -> Path | None:
    """The folder that holds a model file's training history (epoch-K.pt, filters.npz, predictions*.npy).

    A run's model.pt: its run folder. The bundled article model: models/, where its history lies beside it. Any
    other file (the bundled Fashion-MNIST model, also in models/): None, since models/' history is the article's.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.name == "model.pt" or checkpoint.resolve() == BUNDLED_MODEL.resolve():
        return checkpoint.parent
    return None


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
    """(height, width, 3) uint8: text written in dark grey, centred on white (the label under a tile); a text too
    wide for the tile is written smaller (down to 9 px) rather than cut ("#3362: 3.53" under an 84 px patch)."""
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for size in range(height - 4, 8, -1):
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= width - 4:
            break
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


def conv_weight(model: nn.Module, layer: str) -> np.ndarray:
    """The weights of the conv stage called layer: (maps, inputs, k, k)."""
    stage = next((s for s in getattr(model, "stages", ()) if s.kind == "conv" and s.name == layer), None)
    if stage is None:
        conv_layer(model, layer)  # raises the sentence naming the network's conv layers
    return _module(model, stage.module).weight.detach().cpu().numpy()


def conv_bias(model: nn.Module, layer: str) -> np.ndarray | None:
    """The biases of the conv stage called layer, (maps,), or None for a layer without them (the article's)."""
    stage = next(s for s in model.stages if s.kind == "conv" and s.name == layer)
    bias = _module(model, stage.module).bias
    return None if bias is None else bias.detach().cpu().numpy()


def kernels(model: nn.Module, layer: str, input_channel: int = 0) -> np.ndarray:
    """The kxk kernels of conv stage `layer` ("conv2") that read one input channel: (out_channels, k, k)."""
    weight = conv_weight(model, layer)  # (out, in, k, k)
    if not 0 <= input_channel < weight.shape[1]:
        raise ValueError(f"{layer} reads {weight.shape[1]} input channels; choose 0 to {weight.shape[1] - 1}.")
    return weight[:, input_channel]


def kernel_grid(weights: np.ndarray, columns: int = 16, cell: int = 30,
                limit: float | None = None) -> tuple[np.ndarray, float]:
    """(K, k, k) kernels -> (image (H, W, 3) uint8 on a blue-white-red scale centred on 0, the scale's limit).

    Each weight is a square of cell // k px (10 px for 3x3, 6 px for 5x5). limit fixes the scale (e.g. one limit
    for every training snapshot); by default it is the largest |weight|.
    """
    weights = np.asarray(weights, dtype=np.float32)
    limit = limit if limit is not None else float(np.abs(weights).max()) or 1.0
    rgb = diverging_rgb(weights, limit)
    return tile_grid(rgb, max(1, cell // weights.shape[-1]), columns, pad_value=128), limit


def convolution_at(model: nn.Module, acts: dict[str, np.ndarray], layer: str, channel: int,
                   row: int, col: int) -> dict:
    """One output value of conv stage `layer` ("conv1") computed by hand at (row, col) of map `channel`.

    Returns patch (C_in, k, k) of the layer's input (with the layer's zero border: 'SAME' for the article's 3x3,
    2 px for LeNet's conv1, none for its conv2), kernel (C_in, k, k), products, per_channel sums (C_in,), bias (the
    filter's bias, 0.0 for a layer without one), has_bias, total (the sums plus the bias), and value: the map's own
    value there before ReLU, which total equals up to float rounding; input, the name of the layer's input, size,
    the side of the output map, and padding.
    """
    info = conv_layer(model, layer)
    conv = acts[info.views["conv"]]  # (C_out, H', W')
    size = conv.shape[-1]
    if not (0 <= row < size and 0 <= col < size):
        raise ValueError(f"{layer}'s maps are {size}x{size}: choose a row and column from 0 to {size - 1}.")
    if not 0 <= channel < info.maps:
        raise ValueError(f"{layer} makes {info.maps} maps: choose a map from 0 to {info.maps - 1}.")
    source = acts[info.input]  # (C_in, H, W)
    k, pad = info.kernel_size, info.padding
    padded = np.pad(source, ((0, 0), (pad, pad), (pad, pad)))
    patch = padded[:, row:row + k, col:col + k]  # output (row, col) reads input rows row - pad .. row - pad + k - 1
    kernel = conv_weight(model, layer)[channel]  # (C_in, k, k)
    biases = conv_bias(model, layer)
    bias = float(biases[channel]) if biases is not None else 0.0
    products = patch * kernel
    per_channel = products.sum(axis=(1, 2))
    return {"patch": patch, "kernel": kernel, "products": products, "per_channel": per_channel, "bias": bias,
            "has_bias": biases is not None, "total": float(per_channel.sum()) + bias,
            "value": float(conv[channel, row, col]), "input": info.input, "size": size, "padding": pad,
            "input_size": source.shape[-1]}


def strongest_output(conv_map: np.ndarray) -> tuple[int, int]:
    """(row, col) of the largest value of one (H, W) conv map: where the filter finds its pattern.

    The pixel a convolution by hand starts on: a strong answer there comes from the ink in its patch (the centre
    of the image is often blank paper, all zeros, where a layer without biases answers 0).
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

    patch, kernel, products: (k, k) rounded to decimals; each product is the SHOWN pixel times the SHOWN weight,
    rounded, so a student can check every row by hand (a pixel of 0.996 shown as 1.00 times 1.19 is 1.19);
    shown_sum: the k * k SHOWN products added (so the table adds up), rounded to decimals;
    size: the input map's side (positions outside it are the zero border), padding: the layer's border;
    exact_sum: the channel's exact sum rounded to decimals (it may differ from shown_sum in the last digit).
    """
    def rounded(values):  # + 0.0 turns a rounded -0.0 into 0.0
        return np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0

    patch, kernel = rounded(result["patch"][channel]), rounded(result["kernel"][channel])
    products = rounded(patch * kernel)
    return {"patch": patch, "kernel": kernel, "products": products, "shown_sum": float(rounded(products.sum())),
            "exact_sum": float(rounded(result["per_channel"][channel])), "decimals": decimals,
            "size": result.get("input_size", result.get("size")), "padding": result.get("padding", 1)}


def convolution_sentence(result: dict, table: dict, layer: str, channel: int, pixel: tuple, shown: int) -> str:
    """The Markdown sentence under a convolution by hand: what the shown products add up to, at the tables' own
    precision (the sum of the shown products, and the exact sum too when rounding makes them differ), the filter's
    bias added where the layer has one (LeNet's), and the map's own value there."""
    d = table["decimals"]
    cells = "nine" if table["kernel"].size == 9 else f"{table['kernel'].size}"
    added = f"The {cells} products shown add up to **{table['shown_sum']:.{d}f}**"
    if table["shown_sum"] != table["exact_sum"]:
        added += f" (unrounded, they add up to {table['exact_sum']:.{d}f}: the difference is rounding)"
    value = f"**{result['value']:.{d}f}**"
    count = len(result["per_channel"])
    if count == 1 and not result.get("has_bias"):
        return f"{added}: {layer} map {channel} at {pixel} before ReLU = {value}."
    if count == 1:
        return (f"{added}; the filter's bias, {result['bias']:+.{d}f}, is added: **{result['total']:.{d}f}** = "
                f"{layer} map {channel} at {pixel} before ReLU, {value}.")
    bias = f", and the filter's bias, {result['bias']:+.{d}f}, is added" if result.get("has_bias") else ""
    return (f"{layer} reads {count} input maps, so the {cells} products are summed in each of them. "
            f"{added} (channel {shown}, the largest contribution), the {count} sums are added{bias}: "
            f"**{result['total']:.{d}f}** = the map's value at {pixel} before ReLU, {value}.")


def products_table(table: dict, pixel: tuple[int, int]) -> str:
    """A convolution_table as a Markdown table of k * k rows, input x weight = product, and the sum of the
    shown products, every number at the table's one precision. pixel: the (row, col) of the output map; its patch
    starts `padding` rows and columns above and left of it in the input; a position outside the input is the zero
    border."""
    d, size, pad = table["decimals"], table.get("size"), table.get("padding", 1)
    k = table["kernel"].shape[-1]
    lines = ["| input at (row, col) | input | x weight | = product |", "|:--|--:|--:|--:|"]
    for i in range(k):
        for j in range(k):
            row, col = pixel[0] + i - pad, pixel[1] + j - pad
            where = f"({row}, {col})" + (" border" if size is not None and not (0 <= row < size and 0 <= col < size) else "")
            lines.append(f"| {where} | {table['patch'][i, j]:.{d}f} | {table['kernel'][i, j]:.{d}f} "
                         f"| {table['products'][i, j]:.{d}f} |")
    lines.append(f"| **sum** | | | **{table['shown_sum']:.{d}f}** |")
    return "\n".join(lines)


def marked_patch(source: np.ndarray, row: int, col: int, size: int = 168,
                 colour: tuple[int, int, int] = (255, 40, 40), kernel_size: int = 3, padding: int = 1) -> np.ndarray:
    """One (H, W) input map (grey, 0 black to its largest value white), enlarged to ~size px, with a 2 px box
    drawn around the kxk patch that output (row, col) reads: input rows row - padding .. row - padding + k - 1
    (cut at the border, where the layer pads zeros). -> (H * r, W * r, 3) uint8 with r = size // H."""
    source = np.asarray(source, dtype=np.float32)
    height, width = source.shape
    repeat = max(1, size // height)
    rgb = enlarge(colourise(source, 0.0, float(source.max()) or 1.0, cmap="gray"), size).copy()
    first_row, first_col = row - padding, col - padding
    last_row, last_col = first_row + kernel_size - 1, first_col + kernel_size - 1
    top, left = max(first_row, 0) * repeat, max(first_col, 0) * repeat
    bottom, right = (min(last_row, height - 1) + 1) * repeat, (min(last_col, width - 1) + 1) * repeat
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


def confusion_cells(matrix: np.ndarray, class_names=None) -> list[dict]:
    """A (K, K) [true, predicted] count matrix as K * K chart rows: true, predicted (class names: "0"-"9" for
    MNIST, the default), count, fill (the cell's colour, Blues on a log scale so the few errors show beside ~1,000
    right answers) and ink (black or white, whichever contrasts more with fill: the counts stay readable on the
    dark diagonal)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    names = _names(class_names, len(matrix))
    shade = np.log1p(matrix) / max(np.log1p(matrix.max()), 1e-9)  # 0 for no image, 1 for the largest count
    colours = colormaps["Blues"](0.05 + 0.95 * shade)[..., :3]
    black, white = np.zeros(3), np.ones(3)
    cells = []
    for true in range(len(matrix)):
        for predicted in range(len(matrix)):
            fill = colours[true, predicted]
            ink = "#ffffff" if contrast_ratio(fill, white) > contrast_ratio(fill, black) else "#000000"
            cells.append({"true": names[true], "predicted": names[predicted], "count": int(matrix[true, predicted]),
                          "fill": hex_colour(fill), "ink": ink})
    return cells


def _names(class_names, count: int) -> list[str]:
    names = [str(name) for name in class_names] if class_names is not None else [str(k) for k in range(count)]
    if len(names) != count:
        raise ValueError(f"{count} classes need {count} names, not {len(names)}.")
    return names


def picked_cell(selection, class_names=None) -> tuple[int, int] | None:
    """(true, predicted) labels of the confusion cell a chart selection names, or None.

    selection: the list of points a browser sends for the chart's point selection, e.g. [{"true": "4",
    "predicted": "9"}] (class names: MNIST's "0"-"9", the default, or e.g. "Shirt"). It comes from the browser, so
    anything but one cell of two of class_names is None.
    """
    names = _names(class_names, 10) if class_names is None else [str(name) for name in class_names]
    if not isinstance(selection, (list, tuple)) or len(selection) != 1 or not isinstance(selection[0], dict):
        return None
    point = selection[0]
    picked = [point.get(field) for field in ("true", "predicted")]
    if not all(isinstance(name, str) and name in names for name in picked):
        return None
    return names.index(picked[0]), names.index(picked[1])


def confusion_matrix(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) counts [true, predicted] over uint8 images, and the predictions (N,)."""
    predicted = evaluate(model, images, labels)["predictions"].numpy()
    return confusion_counts(labels.numpy(), predicted, num_classes), predicted


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """(K, K) int64 counts [true, predicted] from two (N,) arrays of labels 0..K-1 (e.g. predictions kept by
    training)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def hidden_strip(hidden: np.ndarray, width: int | None = None) -> np.ndarray:
    """A hidden layer's activations as a (rows, width) grid image, 0 black to the largest value bright; width: the
    square's side by default (FC 625 -> 25x25, FC 120 -> 11x11 with the last row part-filled)."""
    values = np.asarray(hidden, dtype=np.float32)
    width = width or int(np.ceil(np.sqrt(values.size)))
    rows = int(np.ceil(values.size / width))
    padded = np.zeros(rows * width, dtype=np.float32)
    padded[:values.size] = values
    return colourise(padded.reshape(rows, width), 0.0, float(values.max()) or 1.0, cmap="magma")


def colour_bar(low: float, high: float, width: int = 256, height: int = 12, cmap: str = "viridis") -> np.ndarray:
    """A horizontal colour bar from low to high, (height, width, 3) uint8."""
    return np.repeat(colourise(np.linspace(low, high, width)[None, :], low, high, cmap), height, axis=0)
