"""Finished runs side by side: accuracy, size, training time, per-class accuracy, and accuracy on shifted test images.

The shift curve is the classic argument for convolution and pooling: move every test image a few pixels and see
whose accuracy falls. A network that flattens the pixels first (softmax regression, the MLP) has learned weights
for each pixel, so a moved edge lands on other weights; a convolution finds its pattern wherever it is, and
pooling keeps the strongest response of a neighbourhood, so the features above change less.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import BUNDLED_MODELS, PACKAGE_ROOT, checkpoint_dataset
from .data import DATASETS
from .model import NETWORKS, count_parameters
from .runs import RunInfo, read_card
from .storage import read_json_record, write_json_record
from .train import evaluate
from .views import PALETTE, accuracy_text, capitalised, card_model, card_preset, format_seconds, network_title, plural

SHIFTS = tuple(range(0, 7))  # pixels: 0 (the test images as they are) to 6, a quarter of a 28-pixel image
SHIFT_IMAGES = 1000  # the first 1,000 test images: 7 shifts x 4 directions x 1,000 forwards per model
DIRECTIONS = (("right", 1, 0), ("left", -1, 0), ("down", 0, 1), ("up", 0, -1))  # (name, dx, dy) of one pixel
MODELS_DIR = PACKAGE_ROOT / "models"
COMPARE_DIR = MODELS_DIR / "compare"
# The bundled 1-epoch comparison on MNIST (seed 0, made with `python -m cnn train`; each card's "command" says how).
# The article's CNN after 1 epoch is the 10-epoch ARTICLE run's first checkpoint, models/epoch-1.pt.
# {name: (network, checkpoint)}; all four learned MNIST.
BUNDLED_COMPARISON: dict[str, tuple[str, Path]] = {
    "softmax-1epoch": ("softmax", COMPARE_DIR / "softmax-1epoch.pt"),
    "mlp-1epoch": ("mlp", COMPARE_DIR / "mlp-1epoch.pt"),
    "lenet-1epoch": ("lenet", COMPARE_DIR / "lenet-1epoch.pt"),  # FAST's recipe: LeNet's default (cnn.config)
    "one-conv-1epoch": ("one-conv", COMPARE_DIR / "one-conv-1epoch.pt"),
    "cnn-1epoch": ("cnn", MODELS_DIR / "epoch-1.pt"),
}
BUNDLED_COMPARISON_DATASET = "mnist"
BUNDLED_PREFIX = "compare:"  # the Compare page's key of a bundled 1-epoch model: ":" is in no run name
MAX_CURVE_BYTES = 64 * 1024  # a curve file is ~300 bytes; a larger one is not ours

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


@dataclass(frozen=True)
class ComparedRun:
    """One run to compare: its name in the list, its loaded model (eval mode, never mutated) and its card."""

    name: str
    model: nn.Module
    card: dict


def _network_title(card: dict | None) -> str:
    """The title of the network a card names ("the article's CNN"; cards from before networks were named: the CNN)."""
    return network_title(card_model(card)[0])


# ---------------------------------------------------------------- shifted images


def shift_images(images, dx: int, dy: int):
    """(N, H, W) uint8 (torch or numpy) -> the same images moved dx pixels right (negative: left) and dy down
    (negative: up). What comes in at the border is black (0); nothing wraps around, nothing is changed in place."""
    for value in (dx, dy):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"A shift is a whole number of pixels, not {value!r}.")
    moved = torch.zeros_like(images) if isinstance(images, torch.Tensor) else np.zeros_like(images)
    height, width = images.shape[-2:]
    if abs(dx) >= width or abs(dy) >= height:
        return moved  # moved out of the frame entirely
    # Target rows/columns [max(d, 0), size + min(d, 0)) receive source rows/columns [max(-d, 0), size + min(-d, 0)).
    moved[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return moved


def shift_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, shifts=SHIFTS,
                progress: Progress | None = None) -> list[dict]:
    """[{"shift": d, "accuracy": a}] for each d in shifts: the accuracy on images moved d pixels, averaged over the
    four directions (right, left, down, up). images (N, H, W) uint8, labels (N,); accuracy by cnn.train.evaluate.

    d = 0 is the images as they are (all four directions are the same, so it is evaluated once).
    """
    shifts = [int(d) for d in shifts]
    rows = []
    for index, d in enumerate(shifts):
        if progress is not None:
            progress(index / len(shifts), f"Moving the test images by {d} pixel{'' if d == 1 else 's'}...")
        moves = [(0, 0)] if d == 0 else [(dx * d, dy * d) for _, dx, dy in DIRECTIONS]
        accuracies = [evaluate(model, shift_images(images, dx, dy), labels)["accuracy"] for dx, dy in moves]
        rows.append({"shift": d, "accuracy": sum(accuracies) / len(accuracies)})
    if progress is not None:
        progress(1.0, "Done.")
    return rows


# ---------------------------------------------------------------- a shift curve kept on disk


def curve_path(checkpoint: Path | str) -> Path:
    """Where a checkpoint's shift curve is kept: a bundled model's (in models/) in models/compare/STEM.shift.json,
    a run's beside its checkpoint (runs/NAME/model.shift.json)."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.resolve() in (MODELS_DIR.resolve(), COMPARE_DIR.resolve()):
        return COMPARE_DIR / f"{checkpoint.stem}.shift.json"
    return checkpoint.with_suffix(".shift.json")


def curve_record(card: dict, curve: list[dict], images: int = SHIFT_IMAGES) -> dict:
    """What a curve file holds: the weights it belongs to, the test images it was measured on, the accuracies."""
    return {"weights_sha256": card.get("weights_sha256"), "dataset": checkpoint_dataset(card),
            "images": images, "shifts": [row["shift"] for row in curve],
            "accuracy": [row["accuracy"] for row in curve]}


def curve_from_record(record: object, card: dict, images: int = SHIFT_IMAGES) -> list[dict] | None:
    """The curve in a record if it is for this card's weights, dataset and images, with a number in [0, 1] for
    each of SHIFTS; None otherwise (a stale, foreign or damaged record is measured again, never shown)."""
    if not isinstance(record, dict) or not card.get("weights_sha256"):
        return None
    expected = {"weights_sha256": card["weights_sha256"], "dataset": checkpoint_dataset(card), "images": images,
                "shifts": list(SHIFTS)}
    if any(record.get(key) != value for key, value in expected.items()):
        return None
    accuracy = record.get("accuracy")
    if not isinstance(accuracy, list) or len(accuracy) != len(SHIFTS) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and 0 <= a <= 1
            for a in accuracy):
        return None
    return [{"shift": d, "accuracy": float(a)} for d, a in zip(SHIFTS, accuracy)]


def read_curve(checkpoint: Path | str, card: dict) -> list[dict] | None:
    """The shift curve kept for these weights, or None when none fits (see curve_from_record)."""
    return curve_from_record(read_json_record(curve_path(checkpoint), MAX_CURVE_BYTES), card)


def save_curve(checkpoint: Path | str, card: dict, curve: list[dict]) -> bool:
    """Keep a measured curve for next time (atomically); False when the folder is not writable (it is then measured
    again on the next view, which is slower but right)."""
    return write_json_record(curve_path(checkpoint), curve_record(card, curve),
                             f"the shift curve of {Path(checkpoint).name}")


def measured_curve(checkpoint: Path | str, model: nn.Module, card: dict, images: torch.Tensor, labels: torch.Tensor,
                   progress: Progress | None = None) -> list[dict]:
    """The checkpoint's shift curve on the first SHIFT_IMAGES of images: read back when kept for these weights,
    else measured (progress says how far) and kept. Measured once per checkpoint version, not per view."""
    curve = read_curve(checkpoint, card)
    if curve is None:
        curve = shift_curve(model, images[:SHIFT_IMAGES], labels[:SHIFT_IMAGES], progress=progress)
        save_curve(checkpoint, card, curve)
    return curve


# ---------------------------------------------------------------- the table


def datasets_problem(runs: list[ComparedRun]) -> str:
    """"" when every run learned the same dataset, else a sentence: a comparison only means something within one."""
    unknown = [run.name for run in runs if checkpoint_dataset(run.card) not in DATASETS]
    titles = sorted({DATASETS[checkpoint_dataset(run.card)].title for run in runs if run.name not in unknown})
    if unknown:
        return f"Run {unknown[0]!r} learned a dataset this app does not know, so it cannot be compared."
    if len(titles) > 1:
        return (f"These runs learned different datasets ({' and '.join(titles)}): their accuracies cannot be "
                "compared. Choose one dataset and compare the runs that learned it.")
    return ""


def run_labels(runs: list[ComparedRun]) -> dict[str, str]:
    """{run name: its legend label}: the network's title, with the run's name only where two share a network."""
    titles = {run.name: _network_title(run.card) for run in runs}
    shared = {title for title in titles.values() if list(titles.values()).count(title) > 1}
    return {name: f"{title} ({shown_name(name)})" if title in shared else title
            for name, title in titles.items()}


def comparison_rows(runs: list[ComparedRun], test_data=None) -> list[dict]:
    """One row per run: run, label, network (title), dataset (title), epochs, accuracy, parameters, seconds and
    per_class ({class name: accuracy}). ValueError with a sentence when the runs learned different datasets.

    Accuracy and per-class accuracy come from the card (the full test set, measured when the run ended); a card
    without them is evaluated on test_data ((images, labels) of its dataset) when given, else left None.
    """
    problem = datasets_problem(runs)
    if problem:
        raise ValueError(problem)
    labels = run_labels(runs)
    rows = []
    for run in runs:
        spec = DATASETS[checkpoint_dataset(run.card)]
        accuracy, per_class = run.card.get("accuracy"), run.card.get("per_class_accuracy")
        if (accuracy is None or not per_class) and test_data is not None:
            measured = evaluate(run.model, *test_data)
            accuracy, per_class = measured["accuracy"], measured["per_class_accuracy"]
        epochs = run.card.get("epochs")
        rows.append({
            "run": run.name, "label": labels[run.name], "network": _network_title(run.card),
            "dataset": spec.title,
            "recipe": card_preset(run.card),  # the preset it was trained with: article, fast, "fast, changed", ...
            "epochs": epochs if isinstance(epochs, int) else None,
            "accuracy": accuracy,
            "parameters": count_parameters(run.model),
            "seconds": run.card.get("wall_seconds"),
            "per_class": ({spec.class_name(label): value for label, value in enumerate(per_class)}
                          if per_class and len(per_class) == spec.num_classes else {}),
        })
    return rows


RECIPE_WORDS = {"article": "ARTICLE", "fast": "FAST", "softmax": "softmax baseline"}  # the Train page's names


def recipe_words(label: str) -> str:
    """A card_preset label in the Train page's names: "fast, changed" -> "FAST, changed"; "-" for none known."""
    name, _, changed = str(label).partition(", ")
    return RECIPE_WORDS[name] + (", changed" if changed else "") if name in RECIPE_WORDS else "-"


def offered_once(chosen: object, offered: dict) -> list[str]:
    """The keys of chosen that are offered, each once, in the order chosen; anything else (a forged list of
    repeats, paths, non-strings, not a list at all) is dropped."""
    if not isinstance(chosen, (list, tuple)):
        return []
    return list(dict.fromkeys(key for key in chosen if isinstance(key, str) and key in offered))


def shown_name(key: str) -> str:
    """A run's name as the table and the legend show it: "mlp-1epoch" for the bundled set's "compare:mlp-1epoch"."""
    return key.removeprefix(BUNDLED_PREFIX)


def table_rows(rows: list[dict]) -> list[dict]:
    """comparison_rows as the page's table shows them: words and formatted numbers, one row per run."""
    return [{"network": row["label"], "run": shown_name(row["run"]), "recipe": recipe_words(row["recipe"]),
             "trained": trained_words(row["epochs"], row["seconds"]), "accuracy": accuracy_text(row["accuracy"]),
             "weights": f"{row['parameters']:,}"} for row in rows]  # short headers: 6 columns fit 1024 px (7 did not)


def trained_words(epochs: int | None, seconds: float | None) -> str:
    """The table's "trained" cell: "1 epoch, 45 s", "3 epochs" (a card with no time), "-" for neither."""
    parts = ([plural(epochs, "epoch")] if epochs is not None else []) + (
        [format_seconds(seconds)] if seconds is not None and math.isfinite(seconds) else [])
    return ", ".join(parts) or "-"


def per_class_values(rows: list[dict]) -> list[dict]:
    """Long-form rows for the per-class chart: {"network": label, "class": name, "accuracy": a} per run and class."""
    return [{"network": row["label"], "class": name, "accuracy": value}
            for row in rows for name, value in row["per_class"].items()
            if isinstance(value, (int, float)) and math.isfinite(value)]


def shift_values(curves: dict[str, list[dict]], labels: dict[str, str]) -> list[dict]:
    """Long-form rows for the shift chart: {"network": label, "shift": d, "accuracy": a}; curves: {run: curve}."""
    return [{"network": labels[run], "shift": point["shift"], "accuracy": point["accuracy"]}
            for run, curve in curves.items() for point in curve]


# ---------------------------------------------------------------- what to see, from the numbers


def _at(curve: list[dict], shift: int) -> float:
    return next(point["accuracy"] for point in curve if point["shift"] == shift)


def _convolves(model: nn.Module) -> bool:
    return any(stage.kind == "conv" for stage in getattr(model, "stages", ()))


def _why(model: nn.Module) -> str:
    """Why a network keeps or loses accuracy when the image moves, read from its declared stages."""
    kinds = [stage.kind for stage in getattr(model, "stages", ())]
    if "conv" not in kinds:
        return ("it weighs each pixel on its own and never saw which pixels are neighbours, so a moved edge lands on "
                "other weights")
    pools = kinds.count("pool")
    return (f"its convolutions find a pattern wherever it is, and its {pools} pooling "
            f"step{'' if pools == 1 else 's'} keep the strongest response of each 2x2 neighbourhood, so a small move "
            "changes its features less")


def shift_sentences(runs: list[ComparedRun], curves: dict[str, list[dict]], shift: int = 4) -> list[str]:
    """One or two sentences on what the shift chart shows, derived from the measured curves (not assumed):
    which network falls most by `shift` pixels and which keeps the most, and why, from each one's stages."""
    measured = [run for run in runs if run.name in curves]
    if len(measured) < 2:
        return []
    labels = run_labels(measured)
    drop = {run.name: _at(curves[run.name], 0) - _at(curves[run.name], shift) for run in measured}
    falls = max(measured, key=lambda run: drop[run.name])
    keeps = max(measured, key=lambda run: _at(curves[run.name], shift))
    # A reason is given only where it explains what was measured: pixels for the one that falls, patterns for the
    # one that keeps; numbers that go the other way are said without one.
    sentences = [f"Moved by {shift} pixels, {labels[falls.name]} falls most, from {_at(curves[falls.name], 0):.1%} to "
                 f"{_at(curves[falls.name], shift):.1%}"
                 + (f": {_why(falls.model)}." if not _convolves(falls.model) else ".")]
    lowest = min(measured, key=lambda run: _at(curves[run.name], shift))
    if lowest.name != falls.name:  # the biggest fall need not end lowest: say both, or the chart seems to disagree
        sentences[0] += (f" {capitalised(labels[lowest.name])}, which started lower, "
                         f"ends lowest, at {_at(curves[lowest.name], shift):.1%}.")
    if keeps.name != falls.name:
        sentences.append(f"{capitalised(labels[keeps.name])} keeps the most, "
                         f"{_at(curves[keeps.name], shift):.1%} (from {_at(curves[keeps.name], 0):.1%})"
                         + (f": {_why(keeps.model)}." if _convolves(keeps.model) else "."))
    return sentences


# ---------------------------------------------------------------- what can be compared


@dataclass(frozen=True)
class Candidate:
    """A model the Compare page offers: the bundled 1-epoch set, the bundled models, and finished runs."""

    key: str  # the choice's value: "compare:mlp-1epoch" (":" is in no run name), "bundled", or a run's name
    label: str  # how the list names it
    checkpoint: Path
    dataset: str  # the DATASETS key its card names (checked again when it is loaded)
    run: str = ""  # the name pages.shared.loaded_checkpoint knows it by ("" for the bundled 1-epoch set)


def candidates(runs: list[RunInfo], bundled_models: dict[str, Path] | None = None) -> list[Candidate]:
    """The bundled 1-epoch set first (those on disk), then the bundled models and every run of runs (RunInfo, as
    cnn.runs.list_runs gives them) that finished or stopped with at least one epoch and a readable card."""
    found = [Candidate(BUNDLED_PREFIX + name, f"{NETWORKS[network].title}, 1 epoch (bundled)", path,
                       BUNDLED_COMPARISON_DATASET) for name, (network, path) in BUNDLED_COMPARISON.items()
             if path.is_file()]
    bundled_models = BUNDLED_MODELS if bundled_models is None else bundled_models
    listed = {run.name for run in runs}
    for name, path in bundled_models.items():
        if name not in listed and path.is_file():
            card = read_card(path)
            if card is not None:
                found.append(Candidate(name, f"{name}: {_network_title(card)} (bundled)", path,
                                       checkpoint_dataset(card), run=name))
    for run in runs:
        card = run.card
        if (card is None or run.checkpoint is None or card.get("status", "finished") not in ("finished", "stopped")
                or not card.get("epochs")):
            continue
        words = "bundled" if run.name in bundled_models else plural(card["epochs"], "epoch")
        found.append(Candidate(run.name, f"{run.name}: {_network_title(card)} ({words})", run.checkpoint,
                               checkpoint_dataset(card), run=run.name))
    return found


def default_choice(offered: list[Candidate]) -> list[str]:
    """What the page compares before anyone chooses: the bundled 1-epoch set where it is offered, else the first
    four offered."""
    bundled = [c.key for c in offered if c.key.startswith(BUNDLED_PREFIX)]
    return bundled or [c.key for c in offered[:4]]


def color_scale(labels: list[str]) -> dict:
    """The Vega-Lite colour scale of the charts: one colour per run, in the table's order, the same in both charts."""
    return {"domain": list(labels), "range": [PALETTE[i % len(PALETTE)] for i in range(len(labels))]}
