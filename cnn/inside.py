"""Inside the network: what one unit of a network reads, and how its value is made, derived from the declared stages.

A unit is a position (row, col) in one channel of a stage's output. Its receptive field is the input patch that can
change it; a conv unit's value is a sum over its input channels (channel_contributions), each a 3x3 patch times
a kernel: the "often-overlooked intermediate computation" CNN Explainer's study found learners lose their way in.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .features import activations, colourise, conv_layer, conv_layers, convolution_at, dense_layers, enlarge, signed_rgb
from .model import ConvNet, model_spec, pooled_size


def _stage_geometry(model: nn.Module, stage: str) -> list[tuple[int, int, int]] | None:
    """(kernel, stride, padding) of each step from the input to stage's output, in order; None when stage comes after
    flatten (its units see the whole image). ValueError for a stage model does not declare."""
    steps = []
    for declared in model.stages:
        if declared.kind == "flatten":
            if declared.name == stage:
                return None
            break
        if declared.kind == "conv":
            conv = getattr(model, declared.module)
            steps.append((conv.kernel_size[0], conv.stride[0], conv.padding[0]))
        elif declared.kind == "pool":  # pool_same: 2x2, stride 2; SAME's padding is at the bottom/right only
            steps.append((2, 2, 0))
        if declared.name == stage:
            return steps
    if stage in (declared.name for declared in model.stages):
        return None  # declared after flatten: a dense layer
    raise ValueError(f"{type(model).__name__} has no stage called {str(stage)[:40]!r}: its stages are "
                     f"{', '.join(declared.name for declared in model.stages)}.")


def receptive_field(stage: str, row: int, col: int, model: nn.Module | None = None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels that can change the unit at (row, col) of stage's output:
    half-open, in input pixels, clipped to the image. model: the network (None: the article's CNN).

    Walked back from the stage to the input: an output index i of a step with kernel k, stride s and padding p
    reads inputs i*s - p to i*s - p + k - 1. A stage after flatten sees the whole image.
    """
    model = model if model is not None else ConvNet()
    side = model_spec(model).side
    steps = _stage_geometry(model, stage)
    if steps is None:
        return 0, 0, side, side
    top, bottom, left, right = row, row + 1, col, col + 1  # half-open, in the stage's own cells
    for kernel, stride, padding in reversed(steps):
        top, bottom = top * stride - padding, (bottom - 1) * stride - padding + kernel
        left, right = left * stride - padding, (right - 1) * stride - padding + kernel
    return max(top, 0), max(left, 0), min(bottom, side), min(right, side)


# ---------------------------------------------------------------- the network at a glance

# Which stages make the overview's columns, and why: a conv stage is shown BEFORE its ReLU (blue below 0, orange
# above), since that is the value its per-channel partial sums add up to and what ReLU then cuts; the pooled maps
# after it are relu(pool(conv)) == pool(relu(conv)), so the ReLU's effect shows in the pool column without a column
# of its own (CNN Explainer's conv+relu, pool). Dropout is the identity in eval mode and flatten only relays the
# last maps as a vector, so neither makes a column, except a flatten straight after the input (softmax regression,
# the MLP): there it is the lesson, the image read as one vector of pixels. Hidden dense layers are shown after
# their ReLU (what the next layer reads), the last linear stage as the softmax's probabilities.
MAP_KINDS = ("conv", "pool")
OPENS = ("maps", "vector", "outputs")  # the kinds of column a click opens: those that hold units


@dataclass(frozen=True)
class Column:
    """One column of the overview: a stage's output for one image."""

    stage: str  # the stage it shows ("conv1", "pool1", "fc", "logits"), or "input"
    kind: str  # "input", "maps" (conv or pool: a thumbnail per map), "flat" (flatten), "vector" (a dense layer's
    # units), "outputs" (a square per class). All but the input and flatten can be opened (they hold units)
    values: np.ndarray  # (C, H, W) float32 maps, or (units,) for a vector, or (classes,) probabilities
    signed: bool  # the colour scale is centred on 0 (a conv stage before ReLU); else 0 (dark) to the column's max

    @property
    def shape(self) -> str:
        """Its shape in words, beneath the column: "32 x 28 x 28", "625"."""
        return " x ".join(str(size) for size in self.values.shape)

    @property
    def limit(self) -> float:
        """The top of the column's one colour scale (all its maps share it, so they compare): its largest |value|."""
        return float(np.abs(self.values).max()) or 1.0


def _check_image(model: nn.Module, image) -> torch.Tensor:
    """(side, side) float in [0, 1] -> (1, 1, side, side) float32 tensor on the model's device; ValueError else."""
    side = model_spec(model).side
    array = np.asarray(image, dtype=np.float32)
    if array.shape != (side, side) or not np.isfinite(array).all():
        raise ValueError(f"The image must be {side}x{side} numbers from 0 to 1.")
    device = next(model.parameters()).device
    return torch.from_numpy(np.clip(array, 0.0, 1.0))[None, None].to(device)


def _activations(model: nn.Module, image) -> dict[str, np.ndarray]:
    """Every recorded activation of one (side, side) image, batch dimension dropped (the model must be in eval
    mode: it is never switched here, a shared model is never touched)."""
    return activations(model, _check_image(model, image))


def overview_columns(model: nn.Module, image) -> list[Column]:
    """The overview's columns for one (side, side) image in [0, 1], in the order data flows: the input, each conv
    stage's maps (before ReLU) and each pool's, a flatten that comes straight after the input, each hidden dense
    layer (after its ReLU), and the probabilities. Read from model.stages (see MAP_KINDS' comment for why these)."""
    acts = _activations(model, image)
    columns = [Column("input", "input", acts["input"], signed=False)]
    dense = {layer.name: layer.activation for layer in dense_layers(model)}
    stages = tuple(model.stages)
    for i, stage in enumerate(stages):
        if stage.kind in MAP_KINDS and stage.activation:
            columns.append(Column(stage.name, "maps", acts[stage.activation], signed=stage.kind == "conv"))
        elif stage.kind == "flatten" and all(before.kind == "dropout" for before in stages[:i]):
            columns.append(Column(stage.name, "flat", acts["input"].reshape(-1), signed=False))
        elif stage.name in dense:
            columns.append(Column(stage.name, "vector", acts[dense[stage.name]], signed=False))
    last = [stage for stage in stages if stage.kind == "linear"][-1]
    columns.append(Column(last.name, "outputs", acts["probabilities"], signed=False))
    return columns


def strip_shape(units: int) -> tuple[int, int]:
    """(rows, cols) of the tall strip a vector of units is drawn as (about 4 times taller than wide, row by row):
    625 -> (49, 13), 784 -> (56, 14), 84 -> (17, 5)."""
    cols = max(1, math.ceil(math.sqrt(units / 4)))
    return math.ceil(units / cols), cols


def column_pictures(column: Column) -> np.ndarray:
    """(K, h, w, 3) uint8: one picture per map (or the one strip of a vector), all on the column's one scale:
    signed_rgb for a conv stage, grey for the input, magma from 0 to the column's max otherwise."""
    if column.kind == "maps":
        if column.signed:
            return signed_rgb(column.values, column.limit)
        return colourise(column.values, 0.0, column.limit, cmap="magma")
    if column.kind == "input":
        return colourise(column.values, 0.0, 1.0, cmap="gray")
    if column.kind == "outputs":  # one square per class, as bright as its probability
        return colourise(column.values.reshape(-1, 1, 1), 0.0, 1.0, cmap="magma")
    rows, cols = strip_shape(column.values.size)
    padded = np.full(rows * cols, np.nan, dtype=np.float32)
    padded[:column.values.size] = column.values
    rgb = colourise(np.nan_to_num(padded), 0.0, column.limit, cmap="magma").reshape(1, rows, cols, 3)
    rgb[0].reshape(-1, 3)[column.values.size:] = 255  # the part-filled last row's empty cells: white, not a unit
    return rgb


def png_data_url(rgb: np.ndarray, cell: int = 1) -> str:
    """(h, w, 3) uint8 -> "data:image/png;base64,...", each value a cell x cell square (crisp when a chart enlarges
    it: a browser smooths an image it scales up). Inline, so no request leaves the machine."""
    picture = Image.fromarray(np.ascontiguousarray(rgb).repeat(cell, axis=0).repeat(cell, axis=1))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(count: int, width: float, height: float) -> tuple[int, float]:
    """(per row, tile side) of count square tiles filling a width x height box with the largest tiles."""
    best = (1, 0.0)
    for per_row in range(1, count + 1):
        side = min(width / per_row, height / math.ceil(count / per_row))
        if side > best[1]:
            best = (per_row, side)
    return best


def overview_marks(columns: list[Column], class_names, width: float = 680, height: float = 440) -> tuple[list, list]:
    """(tiles, labels): the overview laid out in a width x height box (chart units, y down), ready for a chart.

    tiles: one dict per picture: stage, channel (the map's index; 0 for a vector's one strip; the class for an
    output), x, x2, y, y2, url (a PNG data: URL) and tip (words for a tooltip). labels: text, x, y, role ("title"
    above a column, "shape" beneath it, "class" beside an output). Outputs get twice a column's width (names)."""
    weights = [2.0 if column.kind == "outputs" else 1.0 for column in columns]
    unit = width / sum(weights)
    tiles, labels, left = [], [], 0.0
    top, bottom = 18.0, height - 30.0
    for column, weight in zip(columns, weights):
        slot, pictures = unit * weight, column_pictures(column)
        title = "outputs" if column.kind == "outputs" else column.stage  # they show softmax's probabilities
        labels.append({"text": title, "x": left + slot / 2, "y": 8.0, "role": "title"})
        # Two lines, maps over their size ("32" / "28 x 28"): one line overlapped its neighbours on a phone
        maps, _, size = column.shape.partition(" x ")
        labels.append({"text": [maps, size] if size else [maps], "x": left + slot / 2, "y": height - 18.0,
                       "role": "shape"})
        tiles.extend(_column_tiles(column, pictures, class_names, left, slot, top, bottom, labels))
        left += slot
    return tiles, labels


def _column_tiles(column: Column, pictures: np.ndarray, class_names, left: float, slot: float, top: float,
                  bottom: float, labels: list) -> list[dict]:
    """The tiles of one column, centred in its slot; an output's class name and probability go into labels."""
    gap, room = 1.0, bottom - top
    if column.kind == "outputs":
        side = min(slot / 3, room / len(pictures))
        per_row, count = 1, len(pictures)
    elif column.kind in ("vector", "flat"):
        rows, cols = pictures.shape[1:3]
        cell = min((slot - 6) / cols, room / rows)
        x, y = left + (slot - cols * cell) / 2, top + (room - rows * cell) / 2
        return [{"stage": column.stage, "channel": 0, "x": x, "x2": x + cols * cell, "y": y, "y2": y + rows * cell,
                 "url": png_data_url(pictures[0], _crisp(rows)), "tip": f"{column.stage}: {column.shape} units"}]
    else:
        count = len(pictures)
        per_row, side = _grid(count, slot - 6, room)
    rows_used = math.ceil(count / per_row)
    x0, y0 = left + (slot - per_row * side) / 2, top + (room - rows_used * side) / 2
    if column.kind == "outputs":
        x0 = left + 4
    tiles = []
    for k in range(count):
        x, y = x0 + (k % per_row) * side, y0 + (k // per_row) * side
        tip = f"{column.stage} map {k}" if column.kind == "maps" else column.stage
        if column.kind == "outputs":
            name = str(class_names[k]) if k < len(class_names) else str(k)
            tip = f"{name}: {column.values[k]:.1%}"
            labels.append({"text": tip, "x": x + side + 4, "y": y + side / 2, "role": "class"})
        tiles.append({"stage": column.stage, "channel": k, "x": x + gap / 2, "x2": x + side - gap / 2, "y": y + gap / 2,
                      "y2": y + side - gap / 2, "url": png_data_url(pictures[k], _crisp(pictures.shape[1])),
                      "tip": tip})
    return tiles


def _crisp(side: int) -> int:
    """How many times to enlarge a side-value picture in its PNG so it stays crisp at a tile's size (~32 px)."""
    return max(1, math.ceil(32 / side))


def picked_map(selection, columns: list[Column]) -> tuple[str, int] | None:
    """(stage, channel) of the overview tile a chart selection names, or None. It comes from a browser: anything
    but one point naming a map of a maps column, a vector or an output (the input cannot be opened) is None."""
    if not isinstance(selection, (list, tuple)) or len(selection) != 1 or not isinstance(selection[0], dict):
        return None
    stage, channel = selection[0].get("stage"), selection[0].get("channel")
    by_stage = {column.stage: column for column in columns if column.kind in OPENS}
    if not isinstance(stage, str) or stage not in by_stage or isinstance(channel, bool) or not isinstance(channel, int):
        return None
    column = by_stage[stage]
    count = len(column.values) if column.kind in ("maps", "outputs") else 1
    return (stage, channel) if 0 <= channel < count else None


def picked_position(selection, rows: int, cols: int) -> tuple[int, int] | None:
    """(row, col) of the enlarged map's cell a chart selection names, or None for anything else a browser sends."""
    if not isinstance(selection, (list, tuple)) or len(selection) != 1 or not isinstance(selection[0], dict):
        return None
    row, col = selection[0].get("row"), selection[0].get("col")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (row, col)):
        return None
    return (row, col) if 0 <= row < rows and 0 <= col < cols else None


def enlarged_cells(column: Column, channel: int) -> list[dict]:
    """One map of a maps column (or a vector's strip) as heat-map cells for a chart: row, col, value, fill (the
    column's colour scale, as a hex colour) and, for a vector, unit (its index; the strip's empty cells left out)."""
    if column.kind == "maps":
        values = column.values[channel]
        fills = _with_limit(column, values)
        return [{"row": r, "col": c, "value": float(values[r, c]), "fill": fills[r][c]}
                for r in range(values.shape[0]) for c in range(values.shape[1])]
    rows, cols = strip_shape(column.values.size)
    picture = column_pictures(column)[0]
    return [{"row": u // cols, "col": u % cols, "unit": u, "value": float(column.values[u]),
             "fill": _hex(picture[u // cols, u % cols])} for u in range(column.values.size)]


def _with_limit(column: Column, values: np.ndarray) -> list[list[str]]:
    """Hex colours of one map on its column's scale (not the map's own: the enlarged map reads like its tile)."""
    if column.signed:
        rgb = signed_rgb(values, column.limit)
    else:
        rgb = colourise(values, 0.0, column.limit, cmap="magma")
    return [[_hex(pixel) for pixel in row] for row in rgb]


def _hex(pixel: np.ndarray) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in pixel[:3])


# ---------------------------------------------------------------- one neuron, end to end

def _whole(value, name: str) -> int:
    """value as a Python int; ValueError with a sentence for anything else (a float, a bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"The {name} must be a whole number, not {str(value)[:20]!r}.")
    return int(value)


def channel_contributions(model: nn.Module, image, stage: str, channel: int, row: int, col: int) -> np.ndarray:
    """(C_in,) float32: what each input channel adds to the conv unit (stage, channel, row, col) for one (side, side)
    image in [0, 1]: its kxk patch of that input map times the filter's kernel for it, summed. Their sum, plus the
    filter's bias where the layer has one, is the unit's value before ReLU. stage: a conv stage ("conv2");
    ValueError with a sentence for any other stage or a channel, row or col out of range."""
    channel, row, col = (_whole(v, n) for v, n in ((channel, "map"), (row, "row"), (col, "column")))
    conv_layer(model, stage)  # a sentence naming the network's conv layers for anything else
    return convolution_at(model, _activations(model, image), stage, channel, row, col)["per_channel"]


@dataclass(frozen=True)
class PoolWindow:
    """The 2x2 window of a pool that holds one position of the map below it, and which value wins it."""

    values: np.ndarray  # (h, w) the window's values, h, w in {1, 2}: SAME pooling's odd last row/column has fewer
    top: int  # the window's first row and column in the map below
    left: int
    winner: tuple[int, int]  # (row, col) of the largest value in the map below (the first, in reading order, on ties)
    tied: bool  # more than one value equals the largest (e.g. all 0 after ReLU): the winner is then the first
    lands: tuple[int, int]  # (row, col) where the pooled value lands in the pool's output
    value: float  # the pooled value: the largest of values


def pool_window(below: np.ndarray, row: int, col: int) -> PoolWindow:
    """The 2x2 stride-2 window (pool_same: TensorFlow SAME, an odd edge's window is cut short) of the (H, W) map
    below a pool that holds (row, col), and its winner."""
    height, width = np.shape(below)
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"The map is {height}x{width}: choose a row from 0 to {height - 1} and a column from 0 to "
                         f"{width - 1}.")
    top, left = row - row % 2, col - col % 2
    values = np.asarray(below, dtype=np.float32)[top:top + 2, left:left + 2]
    best = int(np.argmax(values))  # the first largest in reading order
    largest = float(values.flat[best])
    return PoolWindow(values, top, left, (top + best // values.shape[1], left + best % values.shape[1]),
                      int((values == largest).sum()) > 1, (row // 2, col // 2), largest)


@dataclass(frozen=True)
class ConvUnit:
    """One conv unit end to end: its receptive field, per-channel partial sums, value, ReLU and pool."""

    stage: str
    channel: int
    row: int
    col: int
    box: tuple[int, int, int, int]  # its receptive field in input pixels, half-open (receptive_field)
    source: str  # the activation it reads: "input" or the previous block's ("pool1")
    patches: np.ndarray  # (C_in, k, k) the patch of each input map it reads (the zero border included)
    kernel: np.ndarray  # (C_in, k, k) its filter
    contributions: np.ndarray  # (C_in,) each input channel's partial sum (channel_contributions)
    bias: float  # the filter's bias (0.0 for a layer without one)
    has_bias: bool
    value: float  # the unit's value before ReLU, as the network computed it
    relu: float  # after ReLU
    pool: PoolWindow | None  # the window of the pool after it (over the ReLU'd map), None when no pool follows
    pool_stage: str  # that pool's stage name ("" for none)


def conv_unit(model: nn.Module, image, stage: str, channel: int, row: int, col: int) -> ConvUnit:
    """Everything the page shows of one conv unit for one (side, side) image in [0, 1]; ValueError as
    channel_contributions."""
    channel, row, col = (_whole(v, n) for v, n in ((channel, "map"), (row, "row"), (col, "column")))
    layer = conv_layer(model, stage)
    acts = _activations(model, image)
    done = convolution_at(model, acts, stage, channel, row, col)  # the arithmetic lives there, once
    relu_map = np.maximum(acts[layer.views["conv"]][channel], 0.0)  # ReLU's output, whatever its recorded name
    pool_key = layer.views.get("pool")
    pool_stage = next((s.name for s in model.stages if s.kind == "pool" and s.activation == pool_key), "")
    return ConvUnit(stage, channel, row, col, receptive_field(stage, row, col, model), done["input"], done["patch"],
                    done["kernel"], done["per_channel"], done["bias"], done["has_bias"], done["value"],
                    max(done["value"], 0.0), pool_window(relu_map, row, col) if pool_key else None, pool_stage)


def pooled_from(model: nn.Module, image, stage: str, channel: int, row: int, col: int) -> tuple[str, PoolWindow]:
    """(the conv stage below, the window) of pool unit (stage, channel, row, col): which of the (up to) four ReLU'd
    conv values it took. ValueError for a stage that is not a pool after a conv layer, or a unit out of range."""
    channel, row, col = (_whole(v, n) for v, n in ((channel, "map"), (row, "row"), (col, "column")))
    declared = {s.name: s for s in model.stages}
    layer = next((layer for layer in conv_layers(model) if stage in declared
                  and declared[stage].kind == "pool" and layer.views.get("pool") == declared[stage].activation), None)
    if layer is None:
        raise ValueError(f"{str(stage)[:40]!r} is not a pooling stage of this network.")
    below = np.maximum(_activations(model, image)[layer.views["conv"]], 0.0)  # (C, H, W) after ReLU
    pooled_side = pooled_size(below.shape[-1], 1)
    if not (0 <= channel < len(below) and 0 <= row < pooled_side and 0 <= col < pooled_side):
        raise ValueError(f"{stage} has {len(below)} maps of {pooled_side}x{pooled_side}: choose a map from 0 to "
                         f"{len(below) - 1} and a row and column from 0 to {pooled_side - 1}.")
    return layer.name, pool_window(below[channel], 2 * row, 2 * col)


@dataclass(frozen=True)
class DenseUnit:
    """One unit of a fully connected layer and what it reads most."""

    stage: str  # the linear stage ("fc", "fc1", "logits")
    unit: int
    source: str  # the activation it reads ("pool3", "fc", "input")
    strongest: list[dict]  # the inputs with the largest |weight x input|: index, where ((channel, row, col) of the
    # source's maps, None for a vector), input, weight, product; largest first
    bias: float
    total: float  # all the products plus the bias: the unit's value before its ReLU (a logit for the outputs)
    after: float | None  # after its ReLU (None for the logits, which softmax reads)
    inputs: int  # how many inputs it weighs (2,048 for the article's FC 625)


def dense_unit(model: nn.Module, image, stage: str, unit: int, k: int = 12) -> DenseUnit:
    """The k strongest inputs (largest |weight x input|) of unit `unit` of linear stage `stage` for one (side, side)
    image in [0, 1]; each named by (channel, row, col) of the maps before flatten when there are maps (the input
    image itself for softmax regression and the MLP). ValueError for another stage or a unit out of range."""
    unit, k = _whole(unit, "unit"), max(1, min(_whole(k, "count"), 100))
    stages = tuple(model.stages)
    index = next((i for i, s in enumerate(stages) if s.name == stage and s.kind == "linear"), None)
    if index is None:
        names = ", ".join(s.name for s in stages if s.kind == "linear")
        raise ValueError(f"{str(stage)[:40]!r} is not a fully connected layer of this network (it has: {names}).")
    source = next((s.activation for s in reversed(stages[:index]) if s.activation), "input")  # dropout: identity
    layer = getattr(model, stages[index].module)
    if not 0 <= unit < layer.out_features:
        raise ValueError(f"{stage} has {layer.out_features} units: choose one from 0 to {layer.out_features - 1}.")
    read = _activations(model, image)[source]  # (C, H, W) maps or (units,)
    inputs = read.reshape(-1)
    weight = layer.weight[unit].detach().cpu().numpy()
    products = weight * inputs
    bias = float(layer.bias[unit].detach()) if layer.bias is not None else 0.0
    order = np.argsort(-np.abs(products), kind="stable")[:k]
    strongest = [{"index": int(i), "where": tuple(int(v) for v in np.unravel_index(i, read.shape))
                  if read.ndim == 3 else None, "input": float(inputs[i]), "weight": float(weight[i]),
                  "product": float(products[i])} for i in order]
    total = float(products.sum(dtype=np.float64)) + bias
    is_last = stages[index] is [s for s in stages if s.kind == "linear"][-1]
    return DenseUnit(stage, unit, source, strongest, bias, total, None if is_last else max(total, 0.0), inputs.size)


def boxed_input(image, box: tuple[int, int, int, int], size: int = 168,
                colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """(side, side) image in [0, 1] -> (side * r, side * r, 3) uint8 grey, r = size // side, with a 2 px box around
    the half-open (top, left, bottom, right) pixels: a unit's receptive field drawn on the input."""
    image = np.asarray(image, dtype=np.float32)
    repeat = max(1, size // image.shape[0])
    rgb = enlarge(colourise(image, 0.0, 1.0, cmap="gray"), size).copy()
    top, left, bottom, right = (v * repeat for v in box)
    rgb[top:top + 2, left:right] = colour
    rgb[bottom - 2:bottom, left:right] = colour
    rgb[top:bottom, left:left + 2] = colour
    rgb[top:bottom, right - 2:right] = colour
    return rgb


def resolved_unit(model: nn.Module, columns: list[Column], chosen: dict) -> dict | None:
    """The unit the detail shows: chosen ({"stage", "channel", "row", "col"}, as kept in a session, so possibly from
    another network or forged) when it names a unit of these columns, with a missing position filled in by the
    map's strongest; otherwise the most active map, at its strongest, of the first convolution over several maps
    (conv2), else of the first column that holds units (conv1; a network without convolutions: its first hidden
    layer's most active unit, or its most likely output). -> {"stage", "kind" ("conv", "pool" or "dense"),
    "channel", "row", "col"} (row and col None for a dense unit), None for no columns."""
    kinds = {stage.name: stage.kind for stage in model.stages}
    opens = {column.stage: column for column in columns if column.kind in OPENS}
    chosen = chosen if isinstance(chosen, dict) else {}
    stage, channel = chosen.get("stage"), chosen.get("channel")
    if not _holds_unit(opens, stage, channel):
        if not opens:
            return None
        # The first convolution over several maps (the article's conv2: 32 partial sums, where CNN Explainer's study
        # found learners get lost), else the first column that holds units (conv1, or a dense layer without convs).
        several = [c for c in opens.values() if kinds.get(c.stage) == "conv" and conv_layer(model, c.stage).inputs > 1]
        column = several[0] if several else next(iter(opens.values()))
        stage, chosen = column.stage, {}
        channel = int(np.argmax(np.clip(column.values, 0, None).reshape(len(column.values), -1).mean(axis=1)))
    column = opens[stage]
    if column.kind != "maps":
        return {"stage": stage, "kind": "dense", "channel": int(channel), "row": None, "col": None}
    values = column.values[channel]
    row, col = chosen.get("row"), chosen.get("col")
    if picked_position([{"row": row, "col": col}], *values.shape) is None:
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(values)), values.shape))
    return {"stage": stage, "kind": kinds[stage], "channel": int(channel), "row": int(row), "col": int(col)}


def _holds_unit(opens: dict, stage, channel) -> bool:
    """Whether stage names one of the columns opens and channel one of its maps (or units, for a dense layer)."""
    if not isinstance(stage, str) or stage not in opens or isinstance(channel, bool) or not isinstance(channel, int):
        return False
    column = opens[stage]
    return 0 <= channel < (column.values.size if column.kind == "vector" else len(column.values))


# ---------------------------------------------------------------- the same, in words and chart rows

def contribution_rows(unit: ConvUnit) -> list[dict]:
    """A conv unit's partial sums as chart rows, largest first: channel (its input map's name, "pool1 map 7"), map
    (its number alone, "7": the bar's label), sum, sign ("adds" or "takes away"): the bars of the sorted chart."""
    order = np.argsort(-unit.contributions, kind="stable")
    return [{"channel": f"{unit.source} map {int(c)}" if len(unit.contributions) > 1 else unit.source,
             "map": str(int(c)), "sum": float(unit.contributions[c]),
             "sign": "adds" if unit.contributions[c] >= 0 else "takes away"} for c in order]


def conv_sentence(unit: ConvUnit) -> str:
    """Markdown: the partial sums add up (plus the bias) to the value before ReLU, then ReLU, then the pool."""
    k, count = unit.kernel.shape[-1], len(unit.contributions)
    name = f"{unit.stage} map {unit.channel} at row {unit.row}, column {unit.col}"
    summed = (f"Each of the {count} input maps' {k}x{k} patch times the filter's {k}x{k} kernel for it gives one "
              f"partial sum; the {count} partial sums add up to **{float(unit.contributions.sum()):.3f}**"
              if count > 1 else f"The {k}x{k} patch times the filter's kernel adds up to "
              f"**{float(unit.contributions.sum()):.3f}**")
    if unit.has_bias:
        total = float(unit.contributions.sum()) + unit.bias
        summed += f", and the filter's bias {unit.bias:+.3f} makes **{total:.3f}**"
    text = f"{summed}: {name} before ReLU, **{unit.value:.3f}**. "
    text += (f"ReLU keeps it: **{unit.relu:.3f}**." if unit.value > 0 else
             "ReLU sets it to **0**: this unit says nothing here.")
    if unit.pool is not None:
        text += " " + pool_sentence(unit.pool, unit.stage, unit.pool_stage, unit.channel, (unit.row, unit.col))
    return text


def pool_sentence(window: PoolWindow, below: str, pool: str, channel: int, unit: tuple[int, int] | None) -> str:
    """Markdown: which of the (up to) four ReLU'd values of below's map wins the 2x2 window and where it lands in
    pool's map; unit: the position in below whose fate is told (None: the pool unit's own view)."""
    cells = window.values.size
    shown = ", ".join(f"{v:.3f}" for v in window.values.reshape(-1))
    which = {4: "the largest of the four values", 2: "the larger of only two values (an odd edge: SAME pooling "
             "cuts its last window short)", 1: "the one value (the odd corner: SAME pooling cuts its last window "
             "short)"}[cells]
    bottom, right = window.top + window.values.shape[0] - 1, window.left + window.values.shape[1] - 1
    text = (f"The 2x2 pool takes {which} of its window after ReLU ({shown}, rows {window.top}-{bottom}, "
            f"columns {window.left}-{right}): ")
    if window.tied:
        text += f"a tie at {window.value:.3f}, so it passes **{window.value:.3f}** whichever it takes"
    else:
        text += f"row {window.winner[0]}, column {window.winner[1]} wins with **{window.value:.3f}**"
        if unit is not None:
            text += " (this unit)" if tuple(unit) == window.winner else " (not this unit: its value goes no further)"
    return text + f", and lands in {pool} map {channel} at row {window.lands[0]}, column {window.lands[1]}."


def dense_sentence(unit: DenseUnit, class_name=str) -> str:
    """Markdown: how many inputs a dense unit weighs, its total (plus its bias) and what follows (ReLU, softmax)."""
    name = f"output {class_name(unit.unit)}" if unit.after is None else f"{unit.stage} unit {unit.unit}"
    text = (f"{name} weighs all {unit.inputs:,} values of {unit.source}: weight x input, {unit.inputs:,} products"
            + (f" and its bias {unit.bias:+.3f}" if unit.bias else "") + f", add up to **{unit.total:.3f}**")
    if unit.after is None:
        return text + ": its score (logit), which softmax turns into a probability with the other outputs'."
    return text + (f"; ReLU keeps it: **{unit.after:.3f}**." if unit.total > 0 else "; ReLU sets it to **0**.")


def strongest_rows(unit: DenseUnit) -> list[dict]:
    """A dense unit's strongest inputs as table rows: input (named by (channel, row, col) of the maps it reads, else
    by its index), its value, weight, weight x input (the sentence's words)."""
    def named(strong: dict) -> str:
        if strong["where"] is None:
            return f"{unit.source} unit {strong['index']}"
        channel, row, col = strong["where"]
        return f"pixel ({row}, {col})" if unit.source == "input" else f"{unit.source} map {channel} at ({row}, {col})"

    return [{"input": named(s),
             "its value": round(s["input"], 4), "weight": round(s["weight"], 4),
             "weight x input": round(s["product"], 4)}
            for s in unit.strongest]
