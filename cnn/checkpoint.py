"""Checkpoints: a state_dict plus a JSON card, saved atomically, loaded with weights_only=True and checked."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data import DATASETS
from .model import build_model, count_parameters
# atomic_write lives in cnn.storage; it stays importable from here for the callers that import it from here.
from .storage import atomic_write, ensure_free_space, write_problem

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = PACKAGE_ROOT / "models" / "article-cnn.pt"
BUNDLED_FASHION_MODEL = PACKAGE_ROOT / "models" / "fashion-cnn.pt"  # the article's network on Fashion-MNIST
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024  # ours are ~5.5 MB; refuse anything absurdly large
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: "abc\n" does not pass
BUNDLED_RUN = "bundled"  # the name the app gives the bundled model: no run on disk may take it
# The bundled models by the names the app gives them (no run on disk may take one): MNIST's first, the default.
BUNDLED_MODELS = {BUNDLED_RUN: BUNDLED_MODEL, "bundled-fashion": BUNDLED_FASHION_MODEL}
# Names Windows keeps for devices, with or without an extension ("nul.txt"), in any case.
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                              *(f"lpt{i}" for i in range(10))})


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved or loaded; the message is a sentence for the user."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("CNN_RUNS_DIR", "runs"))


def run_name_problem(name: object) -> str:
    """Why name cannot be a run folder's name ("" when it can): a sentence that starts with the name."""
    shown = (repr(name) if len(name) <= 70 else repr(name[:60]) + "...") if isinstance(name, str) else "That"
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or ".." in name:
        return (f"{shown} is not a valid run name: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, with no '/' and no '..'.")
    if name.endswith("."):
        return f"{shown} is not a valid run name: it may not end with '.'."
    if name.lower() in BUNDLED_MODELS:
        return f"{shown} is not a valid run name: the app uses it for a bundled model."
    if name.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        return f"{shown} is not a valid run name: Windows keeps it for a device; choose another."
    return ""


def validate_run_name(name: str) -> str:
    """The name itself if it is a safe folder name on any system, else ValueError with a sentence."""
    problem = run_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def run_dir(name: str, runs_dir: Path | None = None) -> Path:
    """runs/<name>, after validating name; the result is always inside runs_dir."""
    base = (runs_dir or default_runs_dir()).resolve()
    path = (base / validate_run_name(name)).resolve()
    if path.parent != base:
        raise ValueError(f"{name[:60]!r} is not a valid run name.")
    return path


def _command_line() -> str:
    program = "python -m cnn" if sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name
    return " ".join([program] + sys.argv[1:])


def make_card(config: TrainConfig, model: nn.Module, **fields) -> dict:
    """A checkpoint card: preset, hyperparameters and whatever the caller measured (accuracy, steps, ...)."""
    card = {
        "preset": config.name,
        "architecture": config.architecture,
        "network": config.architecture,  # the NETWORKS key, as the CLI's --network says it
        "dataset": config.dataset,
        "config": config.to_dict(),
        "seed": config.seed,
        "parameters": count_parameters(model),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "command": _command_line(),
    }
    card.update(fields)
    return card


def card_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape and bytes: detects a flipped bit anywhere in the weights."""
    sha = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        sha.update(tensor.numpy().tobytes())
    return sha.hexdigest()


def checkpoint_payload(model: nn.Module, card: dict) -> dict:
    """What a model.pt holds: {"state_dict": CPU tensors, "card": JSON text with the weights' SHA-256}."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return {"state_dict": state, "card": json.dumps(dict(card, weights_sha256=state_digest(state)))}


def checkpoint_bytes(model: nn.Module, card: dict) -> bytes:
    """A checked, loaded model as the bytes of a model.pt that load_model reads (for a download).

    Built from the validated model, not read from disk: what a student downloads is what the app checked,
    and its size is the network's (~5.5 MB), whatever file lies in runs/.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint_payload(model, card), buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path | str, model: nn.Module, card: dict) -> Path:
    """Save the state_dict with its card inside (model.pt) and the card beside it (model.json), atomically.

    Raises CheckpointError, naming the file but not the server's folder, when the disk is full or
    not writable; the previous model.pt and model.json are then intact and still load.
    """
    path = Path(path)
    payload = checkpoint_payload(model, card)
    state, card = payload["state_dict"], json.loads(payload["card"])
    card_bytes = json.dumps(card, indent=2).encode()
    try:
        # Refuse up front when it clearly cannot fit: a half-written temp file would only fill the disk further.
        ensure_free_space(path.parent, sum(t.numel() * t.element_size() for t in state.values()) + 2 * len(card_bytes),
                          what=path.name)
        atomic_write(path, lambda stream: torch.save(payload, stream))
        atomic_write(card_path(path), lambda stream: stream.write(card_bytes))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a short write as RuntimeError
        raise CheckpointError(
            f"Could not save {path.name}: {write_problem(exc)}. The previous checkpoint is unchanged.") from exc
    return path


_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
               OSError, AttributeError, TypeError, KeyError, IndexError)  # RuntimeError includes RecursionError


def read_checkpoint(path: Path | str) -> tuple[dict, dict]:
    """(state_dict, card) from a file, without running any code in it; CheckpointError with a sentence if bad.

    Every tensor is a dense (strided) float32 tensor and the card passes card_problem(); the sentences
    name the file, never the server's folder, and never repeat torch's own (misleading) advice.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint {path.name} was found.")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} is larger than {MAX_CHECKPOINT_BYTES // 2**20} MB; it is not one of this app's checkpoints.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as exc:  # the detail (torch's message) stays in the chain, for the server's log
        raise CheckpointError(
            f"{path.name} is not a readable checkpoint: it is corrupt, truncated, or was not made by this app.") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "card" not in payload:
        raise CheckpointError(f"{path.name} is not a checkpoint of this app (no state_dict and card inside).")
    try:
        card = json.loads(payload["card"])
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: a card nested thousands deep
        raise CheckpointError(f"{path.name} has an unreadable card.") from exc
    state = payload["state_dict"]
    if not isinstance(card, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path.name} is not a checkpoint of this app.")
    problem = tensors_problem(state) or card_problem(card)
    if problem:
        raise CheckpointError(f"{path.name} is not a checkpoint of this app: {problem}.")
    if card.get("weights_sha256") != state_digest(state):
        raise CheckpointError(f"{path.name} is damaged: its weights do not match the checksum on its card.")
    return state, card


def tensors_problem(state: dict) -> str:
    """Why state is not a state_dict this app writes ("" if it is): str names, dense float32 tensors only."""
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            return "it holds something other than named tensors"
        shown = name[:60]
        if tensor.layout != torch.strided:  # sparse, mkldnn, ...: not what the network's layers hold
            return f"{shown} is stored as a {str(tensor.layout).removeprefix('torch.')} tensor, not a dense one"
        if tensor.dtype != torch.float32:
            return f"{shown} holds {str(tensor.dtype).removeprefix('torch.')} numbers, not float32"
    return ""


# The card's known fields and the types they must have; a field not listed here is kept as it is.
_NUMBER = (int, float)
_CARD_FIELDS: dict[str, tuple[type, ...]] = {
    "preset": (str,), "architecture": (str,), "config": (dict,), "seed": (int,), "parameters": (int,),
    "date": (str,), "torch_version": (str,), "command": (str,), "epochs": (int,), "steps": (int,),
    "accuracy": _NUMBER, "per_class_accuracy": (list,), "data_source": (str,), "device": (str,),
    "wall_seconds": _NUMBER, "run": (str,), "status": (str,), "error": (str,), "save_errors": (list,),
    "weights_sha256": (str,), "network": (str,), "dataset": (str,), "precision": (str,),
}
CARD_STATUSES = ("running", "finished", "stopped", "failed")  # what RunRecorder writes on a run's card


def card_problem(card: dict) -> str:
    """Why a card cannot be shown or trusted ("" if it can): each known field has its type (None allowed), ...

    numbers are finite, epochs/steps/seconds not negative, accuracies in [0, 1], config fits TrainConfig,
    status is one of CARD_STATUSES. A clause for a sentence, e.g. "wall_seconds should be a number, not '12s'".
    """
    for key, kinds in _CARD_FIELDS.items():
        value = card.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"{key} should be {_kind_words(kinds)}, not {_shown(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} should be a finite number, not {value}"
        if key in ("epochs", "steps", "parameters", "wall_seconds") and value < 0:
            return f"{key} should not be negative"
        if key == "accuracy" and not 0 <= value <= 1:
            return f"accuracy should be between 0 and 1, not {value}"
    per_class = card.get("per_class_accuracy")
    if per_class is not None and not all(_is_number(v) and 0 <= v <= 1 for v in per_class):
        return "per_class_accuracy should be a list of numbers between 0 and 1"
    if card.get("save_errors") is not None and not all(isinstance(v, str) for v in card["save_errors"]):
        return "save_errors should be a list of sentences"
    if card.get("status") is not None and card["status"] not in CARD_STATUSES:
        return f"status should be one of {', '.join(CARD_STATUSES)}, not {_shown(card['status'])}"
    return config_problem(card.get("config") or {})


def config_problem(config: dict) -> str:
    """Why a card's config does not fit TrainConfig ("" if it does): each known field has its default's type."""
    for spec in dataclasses.fields(TrainConfig):
        if spec.name not in config:
            continue
        value, default = config[spec.name], spec.default
        kinds = _NUMBER if isinstance(default, float) else (type(default),)
        if isinstance(value, bool) or not isinstance(value, kinds) or (
                isinstance(value, float) and not math.isfinite(value)):
            return f"config's {spec.name} should be {_kind_words(kinds)}, not {_shown(value)}"
    return ""


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _kind_words(kinds: tuple[type, ...]) -> str:
    words = {int: "a whole number", float: "a number", str: "text", dict: "a table of settings", list: "a list"}
    return "a number" if kinds == _NUMBER else words.get(kinds[0], kinds[0].__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checkpoint_dataset(card: dict) -> str:
    """The DATASETS key a card's model was trained on (cards from before Fashion-MNIST: "mnist")."""
    config = card.get("config") if isinstance(card.get("config"), dict) else {}
    return card.get("dataset") or config.get("dataset") or "mnist"


def dataset_refusal(name: str, card: dict, dataset: str) -> str:
    """"" when the checkpoint name (a file name) reads dataset, else the sentence that says why it cannot."""
    trained_on = checkpoint_dataset(card)
    if trained_on == dataset:
        return ""
    have, want = DATASETS[trained_on], DATASETS[dataset]
    return (f"{name} was trained on {have.title} ({have.classes_word}: {', '.join(have.class_names[:3])}, ...), "
            f"not on {want.title}: it cannot read {want.classes_word}. Choose a {want.title} model.")


def load_checkpoint(path: Path | str, dataset: str | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode, card); checks every tensor's name and shape against the network, and for NaN.

    dataset: the DATASETS key the caller will feed it ("mnist", "fashion"); a checkpoint trained on another
    is refused with a sentence. None accepts either (the card says which: card["dataset"]).
    """
    path = Path(path)
    state, card = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(dict(card.get("config") or {}, dataset=checkpoint_dataset(card)))
        if config.problem():
            raise ValueError(config.problem())
        model = build_model(config)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path.name} has a card this app does not understand.") from exc
    card = dict(card, dataset=config.dataset, network=config.architecture)
    if dataset is not None:
        if dataset not in DATASETS:
            raise CheckpointError(f"There is no dataset called {str(dataset)[:40]!r}: choose one of {', '.join(DATASETS)}.")
        refusal = dataset_refusal(path.name, card, dataset)
        if refusal:
            raise CheckpointError(refusal)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise CheckpointError(
            f"{path.name} does not fit the {config.architecture} network: "
            f"missing {_names(missing)}, unexpected {_names(extra)}.")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{path.name} does not fit the network: {name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[name].shape)}.")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path.name} is damaged: {name} holds NaN or infinite values.")
    model.load_state_dict(state)
    model.eval()
    return model, card


def _names(names: list[str]) -> str:
    """At most three layer names for a sentence (a foreign file can hold thousands)."""
    if not names:
        return "none"
    shown = ", ".join(name[:40] for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_model(path: Path | str | None = None, dataset: str | None = None) -> tuple[nn.Module, dict]:
    """Public API: (model in eval mode, card). path=None loads the bundled ARTICLE model.

    card["dataset"] and card["network"] say what it reads and what it is. The model takes (N, 1, 28, 28) float32
    in [0, 1] (white on black, as MNIST and Fashion-MNIST) and returns logits (N, 10). dataset: refuse a checkpoint
    trained on another dataset (CheckpointError with a sentence); None accepts either.
    """
    return load_checkpoint(BUNDLED_MODEL if path is None else path, dataset)
