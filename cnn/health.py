"""Layer health while training: per conv and linear layer, its weights' and activations' histograms, the share of
its ReLUs that never fire on the evaluation subset ("dead"), and its gradient's norm, from the loop's callbacks.

Layers are read from the network's declared stages, so every network (and both datasets) is covered. Nothing here
changes training: no random numbers are drawn, no train/eval mode is flipped, the evaluation pass runs under
no_grad, and the gradients are only read.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .jobs import ThinnedHistory
from .train import Callback, EvalEvent, prepare_batch, uses_channels_last
from .views import PALETTE, READABLE, chart_or_sentence, extent

GRADIENT_EVERY = 10  # steps between two gradient-norm readings: ~5 norms, tiny next to a step, but not free
HISTOGRAM_BINS = 32  # divisible by 4: widen() merges pairs of bins and pads a quarter on each side
HEALTH_IMAGES = 1000  # the evaluation subset's images the activations are measured on, at most
HEALTH_BATCH = 250  # images per pass: conv1's 250 x 32 x 28 x 28 floats are 25 MB
HISTOGRAM_IMAGES = 250  # the activation histograms count the first of them (histc is the costly part); dead: all
SMALLEST_LIMIT = 2.0 ** -16  # the narrowest histogram range, [-2^-16, 2^-16] (all-zero weights: softmax's start)
# Steps at least between two measures at quick evaluations (each epoch's full test is measured too). One measure
# costs ~1.3 quick evaluations (~0.25 s for the article's CNN on 2 cores): at every 100 steps of ~0.09 s that was
# ~2.7% of a run's time, at every 200 ~1.4%. At a float32 evaluation the measure counts the evaluation's own pass
# (ActivationTally): 0.05-0.1 s on top of it, where a pass of its own took ~0.19 s.
MEASURE_EVERY = 200
MAX_GRADIENT_POINTS = 500  # gradient readings kept, thinned evenly over a long run
MAX_HEALTH_EVALS = 200  # evaluations kept, thinned evenly


@dataclass(frozen=True)
class HealthLayer:
    """A layer with weights, as the network declares it."""

    name: str  # its stage ("conv1", "fc", "logits"): the name in every chart
    kind: str  # "conv" or "linear"
    module: str  # the attribute holding its weights
    relu: str  # the ReLU stage that follows it ("relu1"), "" for none (the output layer)


def health_layers(model: nn.Module) -> tuple[HealthLayer, ...]:
    """Every conv and linear stage of model, with the ReLU stage between it and the next such layer, if any."""
    stages = tuple(getattr(model, "stages", ()))
    layers = []
    for i, stage in enumerate(stages):
        if stage.kind not in ("conv", "linear"):
            continue
        relu = ""
        for later in stages[i + 1:]:
            if later.kind in ("conv", "linear"):
                break
            if later.kind == "relu":
                relu = later.name
                break
        layers.append(HealthLayer(stage.name, stage.kind, stage.module, relu))
    return tuple(layers)


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """{layer: L2 norm of the gradient of all its parameters (weights and bias together)}, 0.0 where none yet."""
    norms = {}
    for layer in health_layers(model):
        grads = [p.grad.detach() for p in getattr(model, layer.module).parameters() if p.grad is not None]
        squares = sum(float(torch.linalg.vector_norm(g, dtype=torch.float64)) ** 2 for g in grads)
        norms[layer.name] = math.sqrt(squares)
    return norms


def covering_limit(max_abs: float, limit: float | None = None) -> float:
    """The histogram range [-L, L] that holds max_abs: limit doubled as often as needed; with no limit yet, the
    smallest power of two at least max_abs (at least SMALLEST_LIMIT). Ranges only grow, so frames stay comparable."""
    limit = limit or SMALLEST_LIMIT
    if not math.isfinite(max_abs):
        return limit
    while limit < max_abs:
        limit *= 2
    return limit


def histogram(values: torch.Tensor, limit: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """(bins,) int64 counts of the finite values over [-limit, limit] in equal bins (values outside are not counted:
    choose limit with covering_limit)."""
    return _histc(_finite(values), limit, bins)


def _histc(finite: torch.Tensor, limit: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    return torch.histc(finite.float(), bins=bins, min=-limit, max=limit).to(torch.int64).cpu().numpy()


def _in_memory_order(values: torch.Tensor) -> torch.Tensor:
    """values itself, or for a channels_last map (N, C, H, W) its view as (N, H, W, C), which is contiguous: reshaping
    it costs no copy. A training model's maps are channels_last; flatten(1) and reshape(-1) of those copied them."""
    if values.dim() == 4 and not values.is_contiguous() and values.is_contiguous(memory_format=torch.channels_last):
        return values.permute(0, 2, 3, 1)
    return values


def _rows(values: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, units): each image's values in memory order (no copy for a contiguous or channels_last map),
    so a reduction over images copies nothing. Units come in (C, H, W) or (H, W, C) order: only counts use them."""
    return _in_memory_order(values).reshape(len(values), -1)


def _flat(values: torch.Tensor) -> torch.Tensor:
    """values as one dimension in memory order (no copy, as _rows), for what ignores order: counts, extremes, norms."""
    return _in_memory_order(values).reshape(-1)


def _finite(values: torch.Tensor) -> torch.Tensor:
    """values itself when all are finite (no copy: a training's NaN is rare), else its finite values, flat."""
    values = _flat(values.detach())
    if values.numel():
        low, high = torch.aminmax(values)  # NaN and inf show in the extremes: one pass, no mask in the usual case
        if math.isfinite(float(low)) and math.isfinite(float(high)):
            return values
    return values[torch.isfinite(values)]


def widen(counts: np.ndarray, times: int = 1) -> np.ndarray:
    """Counts over [-L, L] -> the same values' counts over [-2^times L, 2^times L], as many bins: each doubling merges
    pairs of bins into the middle half and pads a quarter of empty bins on each side (exact: edges line up)."""
    counts = np.asarray(counts, dtype=np.int64)
    bins = len(counts)
    if bins % 4:
        raise ValueError("A histogram must have a multiple of 4 bins to be widened.")
    for _ in range(times):
        merged = counts.reshape(-1, 2).sum(1)
        pad = np.zeros(bins // 4, dtype=np.int64)
        counts = np.concatenate([pad, merged, pad])
    return counts


def max_abs(values: torch.Tensor) -> float:
    """The largest finite |value| (0.0 for none)."""
    return _max_abs(_finite(values))


def _max_abs(finite: torch.Tensor) -> float:
    if not finite.numel():
        return 0.0
    low, high = torch.aminmax(finite)  # one pass, no |x| copy
    return max(-float(low), float(high))


def _frame(values: torch.Tensor, limit: float | None = None) -> dict:
    """{"limit", "counts", "values", "nonfinite", "sum_squares"} of values, in a range that covers them (limit
    widened if needed)."""
    return _merge({"limit": limit, "counts": None, "values": 0, "nonfinite": 0, "sum_squares": 0.0}, values)


def _merge(frame: dict | None, values: torch.Tensor) -> dict:
    """frame's counts plus those of values, in a range that covers both (the older counts widened exactly)."""
    if frame is None:
        return _frame(values)
    finite = _finite(values)
    limit = covering_limit(_max_abs(finite), frame["limit"])
    counts = _histc(finite, limit)
    if frame["counts"] is not None:
        counts = counts + widen(np.asarray(frame["counts"]), round(math.log2(limit / frame["limit"])))
    total = frame["values"] + values.numel()
    sum_squares = float(torch.linalg.vector_norm(finite.float())) ** 2 if finite.numel() else 0.0
    return {"limit": limit, "counts": counts.tolist(), "values": total, "nonfinite": int(total - counts.sum()),
            "sum_squares": frame["sum_squares"] + sum_squares}


def weight_histograms(model: nn.Module, limits: dict[str, float] | None = None) -> dict[str, dict]:
    """{layer: {"limit", "counts", "values", "nonfinite", "sum_squares"}} of each layer's weights (not its bias);
    limits: the ranges used so far, widened where the weights outgrew them."""
    limits = limits or {}
    return {layer.name: _frame(getattr(model, layer.module).weight, limits.get(layer.name))
            for layer in health_layers(model)}


def _segments(model: nn.Module) -> list[tuple]:
    """model's stages without dropout (eval mode's identity), cut before each conv and linear stage: the stages
    before the first layer, then each layer's followers ((ReLU, pool, flatten, ...)), the layer itself left out."""
    segments: list[list] = [[]]
    for stage in model.stages:
        if stage.kind in ("conv", "linear"):
            segments.append([])
        elif stage.kind != "dropout":
            segments[-1].append(stage)
    return [tuple(segment) for segment in segments]


@torch.inference_mode()
def activation_health(model: nn.Module, images: torch.Tensor, limits: dict[str, float] | None = None,
                      batch_size: int = HEALTH_BATCH, histogram_images: int = HISTOGRAM_IMAGES) -> dict[str, dict]:
    """{layer: {"limit", "counts", "values", "nonfinite", "sum_squares", "dead", "units"}} on images (N, side, side)
    uint8.

    counts: the layer's outputs before its ReLU (what the ReLU cuts at 0), over the first histogram_images images
    (a sample of the subset: counting every value cost more than the evaluation itself). dead: over all images, the
    fraction of its ReLU's units (every channel at every position, or every feature) that are 0 for every image; None
    for a layer without ReLU. Dropout stages are skipped, as in eval mode: no random numbers are drawn and the
    model's mode is untouched.
    """
    tally = ActivationTally(model, limits, histogram_images)
    device = next(model.parameters()).device
    channels_last = uses_channels_last(model)  # as the model is laid out while it trains: no conversions
    for start in range(0, len(images), batch_size):
        tally.run(prepare_batch(images[start:start + batch_size].to(device), channels_last))  # (B, 1, side, side)
    return tally.result()


class ActivationTally:
    """activation_health's counting, one batch at a time: run(x) takes a prepared batch through the model's stages as
    its eval-mode forward does (the same kernels), counts its images until `images` have been counted, and returns
    the logits; result() is activation_health's answer for the images counted. An evaluation that passes its first
    images through a tally measures layer health on them without a second pass (train.evaluate's tally)."""

    def __init__(self, model: nn.Module, limits: dict[str, float] | None = None,
                 histogram_images: int = HISTOGRAM_IMAGES, images: int | None = None):
        self.model = model
        self.images = images  # how many images to count in all (None: every image run)
        self.layers = health_layers(model)
        self._has_relu = {layer.name for layer in self.layers if layer.relu}
        self._segments = _segments(model)
        self._stages = [next(s for s in model.stages if s.name == layer.name) for layer in self.layers]
        self._histogram_images = histogram_images
        self._frames = {layer.name: {"limit": limits[layer.name], "counts": None, "values": 0, "nonfinite": 0,
                                     "sum_squares": 0.0}
                        for layer in self.layers if limits and layer.name in limits}
        self._fired: dict[str, torch.Tensor] = {}  # (units,) bool: fired for some image so far
        self.counted = 0  # images counted so far

    def wants_more(self) -> bool:
        """Whether run() still counts images."""
        return self.images is None or self.counted < self.images

    @torch.inference_mode()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, side, side), prepared as the model is laid out -> its logits; its images are counted until
        `images` have been."""
        model, start = self.model, self.counted
        count = len(x) if self.images is None else max(0, min(len(x), self.images - start))
        histogram = max(0, min(count, self._histogram_images - start))
        x = model._run(x, self._segments[0])
        for layer, stage, after in zip(self.layers, self._stages, self._segments[1:]):
            x = model._run_stage(stage, x)
            if histogram:
                self._frames[layer.name] = _merge(self._frames.get(layer.name), x[:histogram])
            if count and layer.name in self._has_relu:  # its ReLU's output is above 0 exactly where x is
                now = (_rows(x[:count]) > 0).any(0)  # per unit, in memory order: only the count and share are used
                fired = self._fired.get(layer.name)
                self._fired[layer.name] = now if fired is None else fired | now
            x = model._run(x, after)  # its ReLU (fused with a pool, as forward runs it) and what follows
        self.counted += count
        return x

    def result(self) -> dict[str, dict]:
        result = {}
        for layer in self.layers:
            frame = dict(self._frames.get(layer.name) or _frame(torch.empty(0)))
            frame["counts"] = frame["counts"] if frame["counts"] is not None else [0] * HISTOGRAM_BINS  # no images
            seen = self._fired.get(layer.name)
            frame["units"] = int(seen.numel()) if seen is not None else 0
            frame["dead"] = float(1.0 - seen.float().mean()) if seen is not None and seen.numel() else None
            result[layer.name] = frame
        return result


class HealthMonitor(Callback):
    """Listens to the training loop and keeps what the Train page's "Layer health" shows, bounded for a long run.

    images: the evaluation subset, (N, side, side) uint8 (at most HEALTH_IMAGES are used). lock: the lock the
    records are written under (the job manager's, so a page's copy never sees half an update); the measuring
    itself happens outside it.
    """

    def __init__(self, images: torch.Tensor, lock: threading.Lock | None = None, every: int = GRADIENT_EVERY,
                 measure_every: int = MEASURE_EVERY):
        self.images = images[:HEALTH_IMAGES]
        self.gradients_every = every
        self.measure_every = measure_every
        self._lock = lock or threading.Lock()
        self.layers: list[dict] = []  # [{"name", "kind", "relu"}] in the network's order
        self.gradients = ThinnedHistory(MAX_GRADIENT_POINTS)  # {"step", "norms": {layer: norm}}
        self.evaluations = ThinnedHistory(MAX_HEALTH_EVALS)  # {"step", "epoch", "dead": {layer: fraction}}
        self.first: dict[str, dict] = {}  # {"weights", "activations"} at step 0: {layer: frame}
        self.latest: dict[str, dict] = {}  # the same at the latest evaluation, with its "step"
        self._weight_limits: dict[str, float] = {}  # ranges so far: only the measuring thread reads them
        self._activation_limits: dict[str, float] = {}
        self._tally: tuple[int, ActivationTally] | None = None  # (step, tally) offered to the evaluation at step

    def measure(self, step: int, epoch: int, model: nn.Module, activations: dict[str, dict] | None = None) -> None:
        """Weight and activation histograms and dead ReLUs now (at step, of epoch), recorded as the latest.
        activations: activation_health's answer on this monitor's images, when an evaluation has just counted them."""
        weights = weight_histograms(model, self._weight_limits)
        if activations is None:
            activations = activation_health(model, self.images, self._activation_limits)
        self._weight_limits = {name: frame["limit"] for name, frame in weights.items()}
        self._activation_limits = {name: frame["limit"] for name, frame in activations.items()}
        point = {"step": step, "epoch": epoch,
                 "dead": {name: frame["dead"] for name, frame in activations.items() if frame["dead"] is not None}}
        with self._lock:
            if not self.first:
                self.first = {"weights": weights, "activations": activations}
            self.latest = {"step": step, "weights": weights, "activations": activations}
            self.evaluations.append(point)

    def on_start(self, model: nn.Module) -> None:
        layers = [{"name": layer.name, "kind": layer.kind, "relu": layer.relu} for layer in health_layers(model)]
        with self._lock:
            self.layers = layers
        self.measure(0, 0, model)

    def on_gradients(self, step: int, model: nn.Module) -> None:
        norms = gradient_norms(model)
        with self._lock:
            self.gradients.append({"step": step, "norms": norms})

    def _due(self, step: int, full: bool) -> bool:
        """Whether an evaluation at step is measured: every epoch's test, and quick ones measure_every steps apart."""
        since = step - self.latest.get("step", 0)
        return since != 0 and (full or since >= self.measure_every)  # 0: the epoch's test after a quick one

    def evaluation_tally(self, step: int, full: bool, model: nn.Module,
                         images: torch.Tensor) -> ActivationTally | None:
        """A tally for the evaluation about to run at step over images (train.evaluate's tally), when this monitor
        measures there and its images are the evaluation's first: on_eval then reads the activations the evaluation
        counted instead of passing the same images through the model again. None otherwise."""
        n = len(self.images)
        if not n or not self._due(step, full) or len(images) < n or not torch.equal(images[:n], self.images):
            return None
        self._tally = (step, ActivationTally(model, self._activation_limits, images=n))
        return self._tally[1]

    def on_eval(self, event: EvalEvent, model: nn.Module) -> None:
        offered, self._tally = self._tally, None
        if not self._due(event.step, event.full):
            return
        shared = (offered is not None and offered[0] == event.step and offered[1].counted == len(self.images)
                  and offered[1].model is model)  # an evaluation that counted them all (a bf16 one counts none)
        self.measure(event.step, event.epoch, model, offered[1].result() if shared else None)

    def view(self) -> dict:
        """Plain data for a page (a copy): layers, gradients, evaluations, first, latest. Call it holding the lock."""
        return copy.deepcopy({"layers": list(self.layers), "gradients": self.gradients.points(),
                "evaluations": self.evaluations.points(), "first": self.first, "latest": self.latest})

    def snapshot(self) -> dict:
        """view(), taking the lock."""
        with self._lock:
            return self.view()


# ---------------------------------------------------------------- what the Train page draws (plain Vega-Lite dicts)

def rms(frame: dict) -> float:
    """The root mean square of the values a frame counted (0.0 for none)."""
    counted = frame["values"] - frame["nonfinite"]
    return math.sqrt(frame["sum_squares"] / counted) if counted else 0.0


def _layer_colours(layers: list[str], shown: list[str]) -> dict:
    """The colours of the shown layers: one per layer of the network, in its order, the same in every chart."""
    return {"domain": list(shown), "range": [PALETTE[layers.index(name) % len(PALETTE)] for name in shown]}


def gradient_rows(health: dict) -> list[dict]:
    """{"step", "layer", "gradient norm"} per reading and layer; zero norms are left out (a log scale has no 0)."""
    return [{"step": point["step"], "layer": name, "gradient norm": norm}
            for point in health["gradients"] for name, norm in point["norms"].items()
            if math.isfinite(norm) and norm > 0]


def dead_rows(health: dict) -> list[dict]:
    """{"step", "layer", "dead"} per evaluation and layer with a ReLU."""
    return [{"step": point["step"], "layer": name, "dead": fraction}
            for point in health["evaluations"] for name, fraction in point["dead"].items()]


def _over_steps(values: list[dict], y: dict, title: str, layers: list[str]) -> dict:
    shown = [name for name in layers if any(row["layer"] == name for row in values)]  # dead: no output layer
    x_domain = extent(values, "step", zero=True)
    if x_domain and len({row["step"] for row in values}) == 1:  # one reading so far: an axis from 0, not -0.5..0.5
        x_domain = [0, max(1, values[0]["step"])]
    return {"data": {"values": values}, "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "step", "type": "quantitative", "title": "step",
                               **({"scale": {"domain": x_domain}} if x_domain else {})},
                         "y": y, "color": {"field": "layer", "type": "nominal", "scale": _layer_colours(layers, shown),
                                           "legend": {"orient": "right", "title": None}},
                         "tooltip": [{"field": "layer", "type": "nominal"}, {"field": "step", "type": "quantitative"},
                                     {"field": y["field"], "type": "quantitative", "format": ".3"}]},
            "title": title, "height": 240, "config": READABLE}  # the height is the whole chart's, axes included


def gradient_chart(values: list[dict], layers: list[str]) -> dict:
    """Each layer's gradient norm over the steps, on a log scale (norms span several powers of ten)."""
    low, high = extent(values, "gradient norm") or [1e-8, 1.0]
    y = {"field": "gradient norm", "type": "quantitative", "title": "gradient norm (log)", "axis": {"format": "~g"},
         "scale": {"type": "log", "domain": [low, high] if high > low else [low / 2, low * 2]}}
    return _over_steps(values, y, "gradient norm per layer", layers)


def dead_chart(values: list[dict], layers: list[str]) -> dict:
    """Each layer's share of ReLUs that never fire on the test subset, at each evaluation."""
    y = {"field": "dead", "type": "quantitative", "title": "ReLUs that never fire", "axis": {"format": ".0%"},
         "scale": {"domain": [0, 1]}}
    return _over_steps(values, y, "dead ReLUs per layer", layers)


def histogram_rows(frame: dict, start: dict | None = None) -> list[dict]:
    """{"from", "to", "share", "when"} per bin of frame ("now") and of start in frame's range ("at the start")."""
    frames = [("now", frame["counts"], frame["values"])]
    if start and start["limit"] <= frame["limit"]:  # ranges only grow: the start fits the latest bins exactly
        doublings = round(math.log2(frame["limit"] / start["limit"]))
        frames.append(("at the start", widen(start["counts"], doublings), start["values"]))
    rows = []
    for when, counts, total in frames:
        width = 2 * frame["limit"] / len(counts)
        rows += [{"from": -frame["limit"] + i * width, "to": -frame["limit"] + (i + 1) * width,
                  "share": int(count) / max(total, 1), "when": when} for i, count in enumerate(counts)]
    return rows


def histogram_chart(layer: str, frame: dict, start: dict | None, what: str) -> dict:
    """One layer's histogram (bars: now; grey steps: at the start, same bins); fixed axes: never an empty extent."""
    rows = histogram_rows(frame, start)
    top = max([row["share"] for row in rows] + [1e-9])
    x = {"field": "from", "type": "quantitative", "title": f"{what}, RMS {rms(frame):.2g}",
         "scale": {"domain": [-frame["limit"], frame["limit"]]},
         "axis": {"format": "~g" if frame["limit"] >= 0.01 else ".0e", "tickCount": 4}}  # "-6e-5", not "-0.00006"
    y = {"field": "share", "type": "quantitative", "title": None, "scale": {"domain": [0, top]},
         "axis": {"format": ".0%", "tickCount": 3}}
    return {"data": {"values": rows}, "height": 190, "title": layer, "config": READABLE,  # ~90 px of bars
            "layer": [{"mark": {"type": "bar", "color": PALETTE[0]}, "transform": [{"filter": "datum.when === 'now'"}],
                       "encoding": {"x": x, "x2": {"field": "to"}, "y": y, "y2": {"datum": 0}}},
                      {"mark": {"type": "line", "interpolate": "step-after", "color": "#999999"},
                       "transform": [{"filter": "datum.when === 'at the start'"}], "encoding": {"x": x, "y": y}}]}


def init_words(config: dict) -> str:
    """How a run's weights start, in a student's words."""
    if config.get("init") == "kaiming":
        return "He's initialisation"
    std = float(config.get("init_std", 0.0) or 0.0)
    return f"weights drawn from N(0, {std:g})" if std > 0 else "all-zero weights"


def possessive(name: str) -> str:
    """"conv1's", "logits'"."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def health_sentence(health: dict, config: dict) -> str:
    """What the numbers say for a class: how big the signal and the gradients were at the start, and dead ReLUs now."""
    layers = [layer["name"] for layer in health.get("layers", [])]
    start = (health.get("first") or {}).get("activations") or {}
    if not layers or not start:
        return "Layer health starts with the run's first step."
    first, last = layers[0], layers[-1]
    words = init_words(config)
    if len(layers) == 1:
        sentence = (f"This network has one layer ({words}): its gradient reaches its weights directly, with no layer "
                    "below to fade through.")
    else:
        shrank = rms(start[last]) < 0.01 * max(rms(start[first]), 1e-12)
        sentence = (f"At the start ({words}), {possessive(first)} outputs were {rms(start[first]):.2g} in size (RMS) "
                    f"and {possessive(last)} {rms(start[last]):.2g}: ")
        gradients = health.get("gradients") or []
        largest = max(gradients[0]["norms"].values()) if gradients else None
        said = f" (at most {largest:.1g} at step {gradients[0]['step']})" if largest is not None else ""
        if shrank:
            sentence += (f"each layer shrank the signal, so the scores hardly depend on the weights and every gradient "
                         f"is tiny{said}; the first steps barely move anything, which is why this start is slow.")
            if config.get("init") != "kaiming":
                sentence += (" FAST's He initialisation sizes each layer's weights to its inputs, so the signal keeps "
                             "its size.")
        else:
            sentence += (f"the signal kept its size through the layers, so the gradients{said} move every layer from "
                         "the first steps.")
    dead = (health.get("evaluations") or [{}])[-1].get("dead") or {}
    if dead:
        worst = max(dead, key=dead.get)
        sentence += (f" Now {dead[worst]:.0%} of {possessive(worst)} ReLUs never fire on the test subset"
                     + (": those units no longer learn." if dead[worst] >= 0.5 else "."))
    return sentence


def health_items(health: dict | None, config: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(line charts, weight histograms, activation histograms) as chart_or_sentence items for the page."""
    health = health or {"layers": [], "gradients": [], "evaluations": []}
    layers = [layer["name"] for layer in health["layers"]]
    lines = [chart_or_sentence("gradient norm per layer", gradient_rows(health),
                               lambda values: gradient_chart(values, layers),
                               f"No gradient yet: the first is read at step {GRADIENT_EVERY}."),
             chart_or_sentence("dead ReLUs per layer", dead_rows(health), lambda values: dead_chart(values, layers),
                               "No ReLU to watch in this network." if layers else "No evaluation yet.")]
    latest, first = health.get("latest") or {}, health.get("first") or {}
    histograms = []
    for kind, what in (("weights", "weights"), ("activations", "outputs")):
        frames = latest.get(kind) or {}
        starts = first.get(kind) or {}
        histograms.append([{"title": name, "spec": histogram_chart(name, frames[name], starts.get(name), what)}
                           for name in layers if name in frames and frames[name]["values"]])
    return lines, *histograms
