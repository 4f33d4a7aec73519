"""A run on disk: runs/<name>/ with model.pt + model.json, epoch-K.pt, metrics.jsonl and conv1 filter snapshots."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import (BUNDLED_MODELS, CheckpointError, atomic_write, card_path, card_problem,
                         make_card, read_checkpoint, run_name_problem, save_checkpoint)
from .config import TrainConfig
from .model import build_model, has_stage
from .train import Callback, EpochEvent, EvalEvent, StepEvent, TrainResult, run_precision

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
FILTERS_FILE = "filters.npz"
PREDICTIONS_FILE = "predictions.npy"  # model.pt's test-set predictions; predictions-epoch-K.npy for epoch-K.pt
MAX_PREDICTIONS_BYTES = 8 << 20  # a million int64 predictions: far more than any test set here


class RunRecorder(Callback):
    """Writes a run to its folder as it trains: metrics lines, per-epoch checkpoints, filter snapshots.

    model.pt is always the last completed epoch, so a stop or a crash keeps it. A failed save is
    recorded in ``save_errors`` and training goes on; the previous checkpoint stays intact.
    """

    def __init__(self, folder: Path, config: TrainConfig, data_source: str = "", device: str = "cpu",
                 keep_epoch_checkpoints: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.data_source = data_source
        self.device = device
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.precision = run_precision(config, device)  # what it trains in here: bf16 only where native
        self.elapsed = 0.0  # the training's time at its last step or epoch (pauses not counted): a card's default time
        self.save_errors: list[str] = []
        self.filter_steps: list[int] = []
        self.filter_snapshots: list[np.ndarray] = []
        # Its own generator: building the card's model never touches the RNG of a training in another thread.
        self._card_model = build_model(config, generator=torch.Generator())
        self._metrics = open(self.folder / METRICS_FILE, "w", buffering=1 << 16)
        self._write_card(status="running")

    # --- callbacks
    def on_start(self, model: nn.Module) -> None:
        """Snapshot conv1's random start as step 0, saved at once: the filter replay begins from noise."""
        self._snapshot_filters(0, model)
        self._save_filters()

    def on_step(self, event: StepEvent) -> None:
        self.elapsed = event.elapsed_seconds
        self._metrics.write(json.dumps({"kind": "step", "step": event.step, "epoch": event.epoch,
                                        "loss": round(event.loss, 6), "batch_accuracy": event.batch_accuracy,
                                        "images_per_second": round(event.images_per_second, 1),
                                        "learning_rate": event.learning_rate,
                                        "elapsed_seconds": round(event.elapsed_seconds, 3)}) + "\n")

    def on_eval(self, event: EvalEvent, model: nn.Module) -> None:
        self._metrics.write(json.dumps({"kind": "eval", "step": event.step, "epoch": event.epoch,
                                        "accuracy": event.accuracy, "n": event.n, "full": event.full}) + "\n")
        self._metrics.flush()
        self._snapshot_filters(event.step, model)

    def _snapshot_filters(self, step: int, model: nn.Module) -> None:
        if has_stage(model, "conv1"):  # the softmax baseline has no filters
            self.filter_steps.append(step)
            self.filter_snapshots.append(model.conv1.weight.detach().cpu().numpy()[:, 0].copy())  # (32, 3, 3)

    def on_epoch_end(self, event: EpochEvent, model: nn.Module) -> None:
        self.elapsed = event.elapsed_seconds
        self._metrics.write(json.dumps({"kind": "epoch", "step": event.step, "epoch": event.epoch,
                                        "test_accuracy": event.test_accuracy,
                                        "per_class_accuracy": event.per_class_accuracy,
                                        "elapsed_seconds": round(event.elapsed_seconds, 3)}) + "\n")
        self._metrics.flush()
        # Its time is the training's at this epoch (self.elapsed, pauses not counted), as the finished card's and the Run
        # history's are; the time since the recorder started also counted the setup and any pause.
        card = self.card(status="running", epochs=event.epoch, steps=event.step, accuracy=event.test_accuracy,
                         per_class_accuracy=event.per_class_accuracy)
        try:
            if self.keep_epoch_checkpoints:
                save_checkpoint(self.folder / f"epoch-{event.epoch}.pt", model, card)
                self.save_predictions(event.predictions, epoch=event.epoch)
            save_checkpoint(self.folder / MODEL_FILE, model, card)
            # Only after model.pt is saved: predictions.npy always belongs to the model.pt beside it.
            self.save_predictions(event.predictions)
        except CheckpointError as exc:
            self.save_errors.append(str(exc))
        self._save_filters()

    def save_predictions(self, predictions: torch.Tensor | None, epoch: int | None = None) -> None:
        """Keep a checkpoint's test-set predictions ((N,) int64) beside it, atomically, for the confusion matrix.

        epoch K: predictions-epoch-K.npy (beside epoch-K.pt); None: predictions.npy (beside model.pt).
        """
        if predictions is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, predictions.detach().cpu().numpy().astype(np.int64), allow_pickle=False)
        try:
            atomic_write(self.folder / predictions_file(epoch), lambda stream: stream.write(buffer.getvalue()))
        except OSError as exc:
            self.save_errors.append(f"Could not save the test predictions of {predictions_file(epoch)}: "
                                    f"{exc.strerror or exc.__class__.__name__}.")

    # --- the end
    def finish(self, result: TrainResult | None, status: str, error: str = "") -> dict:
        """Close the metrics file and write the final card (status: finished, stopped or failed)."""
        self._metrics.close()
        self._save_filters()
        fields = {"status": status}
        if error:
            fields["error"] = error
        if result is not None:
            fields.update(device=result.device, wall_seconds=round(result.wall_seconds, 1))
        card = self._write_card(**fields)
        checkpoint = self.folder / MODEL_FILE
        if checkpoint.is_file():
            # Put the final card inside model.pt too, so load_model() reports the run's end state.
            try:
                state, _ = read_checkpoint(checkpoint)
                save_checkpoint(checkpoint, _StateOnly(state), card)
            except CheckpointError as exc:
                self.save_errors.append(str(exc))
        return card

    def _save_filters(self) -> None:
        if not self.filter_snapshots:
            return
        buffer = io.BytesIO()
        np.savez(buffer, steps=np.array(self.filter_steps), filters=np.stack(self.filter_snapshots))
        try:
            atomic_write(self.folder / FILTERS_FILE, lambda stream: stream.write(buffer.getvalue()))
        except OSError as exc:
            self.save_errors.append(f"Could not save filter snapshots: {exc}")

    def card(self, **fields) -> dict:
        """The card this run would have now, with fields (status, accuracy, ...) filled in."""
        previous = read_card(self.folder / MODEL_FILE) or {}
        base = {k: previous[k] for k in ("epochs", "steps", "accuracy", "per_class_accuracy") if k in previous}
        base.update(data_source=self.data_source, device=self.device, precision=self.precision,
                    wall_seconds=round(self.elapsed, 1), run=self.folder.name)
        base.update(fields)
        return make_card(self.config, self._card_model, **base)

    def _write_card(self, **fields) -> dict:
        card = self.card(**fields)
        if self.save_errors:
            card["save_errors"] = self.save_errors[-3:]
        try:
            atomic_write(card_path(self.folder / MODEL_FILE), lambda s: s.write(json.dumps(card, indent=2).encode()))
        except OSError as exc:
            self.save_errors.append(f"Could not write the card: {exc}")
        return card


class _StateOnly(nn.Module):
    """Wraps a ready state_dict so save_checkpoint can write it again."""

    def __init__(self, state: dict):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return self._state


MAX_CARD_BYTES = 1024 * 1024  # a card is ~2 KB; a larger model.json is not ours


def read_card(checkpoint: Path) -> dict | None:
    """The JSON card beside a checkpoint, or None if it is missing, unreadable or fails card_problem()."""
    return read_card_checked(checkpoint)[0]


def read_card_checked(checkpoint: Path) -> tuple[dict | None, str]:
    """(card, "") when the card beside checkpoint is readable and well-formed, else (None, why) as a clause."""
    path = card_path(checkpoint)
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            return None, f"its card ({path.name}) is too large to be one of this app's cards"
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"its card ({path.name}) is missing"
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"its card ({path.name}) is not readable JSON"
    if not isinstance(card, dict):
        return None, f"its card ({path.name}) is not a table of fields"
    problem = card_problem(card)
    if problem:
        return None, f"its card ({path.name}) is not valid: {problem}"
    return card, ""


@dataclass(frozen=True)
class RunInfo:
    name: str
    folder: Path
    checkpoint: Path | None  # model.pt when it exists
    card: dict | None  # None when the card cannot be read or is not valid
    problem: str = ""  # a sentence when the run is unreadable: what is wrong, never the server's path

    @property
    def status(self) -> str:
        if self.card is None:
            return "unreadable"
        return self.card.get("status", "finished")


def list_runs(runs_dir: Path, include_bundled: bool = True) -> list[RunInfo]:
    """Every run on disk, newest first, then the bundled models whose files exist (MNIST's, then Fashion-MNIST's);
    a broken entry is listed as unreadable.

    Folders whose names are not valid run names ("my run", "café", "bundled", "nul"), symbolic links and
    hidden folders are not runs and are left out: unlisted_folders() says why, for the teacher.
    """
    runs: list[RunInfo] = []
    for folder in _run_folders(runs_dir):
        checkpoint = folder / MODEL_FILE
        card, problem = read_card_checked(checkpoint)
        sentence = f"Run {folder.name!r} cannot be shown: {problem}." if problem else ""
        runs.append(RunInfo(folder.name, folder, checkpoint if checkpoint.is_file() else None, card, sentence))
    for name, path in BUNDLED_MODELS.items() if include_bundled else ():
        if path.is_file():  # the Fashion-MNIST model is listed once its file is there
            card, problem = read_card_checked(path)
            runs.append(RunInfo(name, path.parent, path, card,
                                f"The bundled model {name!r} cannot be shown: {problem}." if problem else ""))
    return runs


def run_name_stem(preset: str, network: str, dataset: str) -> str:
    """The start of a run's default name: the preset, led by the dataset and the network when they are not the
    preset's own on MNIST ("fast", "softmax", "fashion-mlp-fast", "softmax-article"): the tutorial's runs keep
    their short names. The CLI's default names and the Train page's both start with it."""
    from .config import PRESETS

    own = PRESETS[preset].architecture if preset in PRESETS else "cnn"
    parts = [dataset] if dataset != "mnist" else []
    return "-".join(parts + ([network] if network != own else []) + [preset])


def unlisted_folders(runs_dir: Path) -> list[str]:
    """A sentence for each entry of runs_dir that list_runs leaves out (odd names, links), for the teacher."""
    sentences = []
    for entry in _entries(runs_dir):
        if entry.name.startswith(".") or not _is_folder(entry):
            continue
        if entry.is_symlink():
            sentences.append(f"{entry.name!r} in the runs folder is a link, not a run folder; it is not listed.")
        elif run_name_problem(entry.name):
            sentences.append(f"The folder {entry.name!r} is not listed: {run_name_problem(entry.name)} "
                             "Rename it to list it.")
    return sentences


def _run_folders(runs_dir: Path) -> list[Path]:
    """The folders of runs_dir that can be runs (valid names, not links), newest first."""
    folders = [entry for entry in _entries(runs_dir)
               if not entry.is_symlink() and _is_folder(entry) and not run_name_problem(entry.name)]
    return sorted(folders, key=_modified, reverse=True)


def _entries(runs_dir: Path) -> list[Path]:
    try:
        return list(Path(runs_dir).iterdir())
    except OSError:  # missing or unreadable runs folder: no runs
        return []


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed while listing
        return 0.0


def read_metrics(folder: Path) -> list[dict]:
    """The metrics lines of a run; a torn last line (a crash mid-write) is skipped."""
    rows = []
    try:
        with open(Path(folder) / METRICS_FILE) as handle:
            for line in handle:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return rows


def read_filter_snapshots(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps (K,), conv1 filters (K, 32, 3, 3)) saved during training, or None."""
    try:
        with np.load(Path(folder) / FILTERS_FILE, allow_pickle=False) as npz:
            return npz["steps"], npz["filters"]
    except (OSError, ValueError, KeyError):
        return None


def predictions_file(epoch: int | None = None) -> str:
    """The file name of epoch K's test predictions, or model.pt's for None."""
    return PREDICTIONS_FILE if epoch is None else f"predictions-epoch-{int(epoch)}.npy"


def read_predictions(folder: Path, epoch: int | None = None) -> np.ndarray | None:
    """The test-set predictions (N,) int64 in 0..9 that training kept for epoch K's checkpoint (model.pt's for None).

    None when the run has none (older runs, the bundled model's epochs) or the file is not a valid one.
    """
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1):
        return None
    path = Path(folder) / predictions_file(epoch)
    try:
        if path.stat().st_size > MAX_PREDICTIONS_BYTES:
            return None
        predictions = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if (not isinstance(predictions, np.ndarray) or predictions.ndim != 1
            or not np.issubdtype(predictions.dtype, np.integer)):
        return None
    if predictions.size and (predictions.min() < 0 or predictions.max() > 9):
        return None
    return predictions.astype(np.int64, copy=False)


def epoch_checkpoints(folder: Path) -> dict[int, Path]:
    """{epoch: path} of the per-epoch checkpoints of a run."""
    found = {}
    for path in Path(folder).glob("epoch-*.pt"):
        try:
            found[int(path.stem.split("-", 1)[1])] = path
        except ValueError:
            continue
    return dict(sorted(found.items()))
