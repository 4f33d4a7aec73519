"""Checkpoints: a state_dict plus a JSON card, saved atomically, loaded with weights_only=True and checked."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .model import build_model, count_parameters

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = PACKAGE_ROOT / "models" / "article-cnn.pt"
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024  # ours are ~5.5 MB; refuse anything absurdly large
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved or loaded; the message is a sentence for the user."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("CNN_RUNS_DIR", "runs"))


def validate_run_name(name: str) -> str:
    """The name itself if it is a safe folder name (letters, digits, '.', '_', '-'; no '..'), else ValueError."""
    if not isinstance(name, str) or not _RUN_NAME.match(name) or ".." in name:
        raise ValueError(
            f"{name!r} is not a valid run name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, with no '/' and no '..'.")
    return name


def run_dir(name: str, runs_dir: Path | None = None) -> Path:
    """runs/<name>, after validating name; the result is always inside runs_dir."""
    base = (runs_dir or default_runs_dir()).resolve()
    path = (base / validate_run_name(name)).resolve()
    if path.parent != base:
        raise ValueError(f"{name!r} is not a valid run name.")
    return path


def _command_line() -> str:
    program = "python -m cnn" if sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name
    return " ".join([program] + sys.argv[1:])


def make_card(config: TrainConfig, model: nn.Module, **fields) -> dict:
    """A checkpoint card: preset, hyperparameters and whatever the caller measured (accuracy, steps, ...)."""
    card = {
        "preset": config.name,
        "architecture": config.architecture,
        "config": config.to_dict(),
        "seed": config.seed,
        "parameters": count_parameters(model),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "command": _command_line(),
    }
    card.update(fields)
    return card


def atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same folder, fsync, then rename: a crash leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are meant to be shared read-only
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def save_checkpoint(path: Path | str, model: nn.Module, card: dict) -> Path:
    """Save the state_dict with its card inside (model.pt) and the card beside it (model.json), atomically.

    Raises CheckpointError (the previous files intact) when the disk is full or not writable.
    """
    path = Path(path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    card = dict(card, weights_sha256=state_digest(state))
    payload = {"state_dict": state, "card": json.dumps(card)}
    try:
        atomic_write(path, lambda stream: torch.save(payload, stream))
        atomic_write(card_path(path), lambda stream: stream.write(json.dumps(card, indent=2).encode()))
    except OSError as exc:
        raise CheckpointError(
            f"Could not save the checkpoint {path} ({exc.strerror or exc}); the previous checkpoint is unchanged.") from exc
    return path


def read_checkpoint(path: Path | str) -> tuple[dict, dict]:
    """(state_dict, card) from a file, without running any code in it; CheckpointError with a sentence if bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} is larger than {MAX_CHECKPOINT_BYTES // 2**20} MB; it is not one of this app's checkpoints.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
            OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(
            f"{path.name} is not a readable checkpoint (corrupt, truncated, or not made by this app): {first_line}") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "card" not in payload:
        raise CheckpointError(f"{path.name} is not a checkpoint of this app (no state_dict and card inside).")
    try:
        card = json.loads(payload["card"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name} has an unreadable card.") from exc
    state = payload["state_dict"]
    if not isinstance(card, dict) or not isinstance(state, dict) or not all(
            isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{path.name} is not a checkpoint of this app.")
    if card.get("weights_sha256") != state_digest(state):
        raise CheckpointError(f"{path.name} is damaged: its weights do not match the checksum on its card.")
    return state, card


def load_checkpoint(path: Path | str) -> tuple[nn.Module, dict]:
    """(model in eval mode, card); checks every tensor's name and shape against the architecture."""
    path = Path(path)
    state, card = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(card.get("config", {}))
        model = build_model(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name} has a card this app does not understand: {exc}") from exc
    expected = model.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(
            f"{path.name} does not fit the {config.architecture} network: its layers are {sorted(state)}.")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape) or not tensor.is_floating_point():
            raise CheckpointError(
                f"{path.name} does not fit the network: {name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[name].shape)}.")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path.name} is damaged: {name} holds NaN or infinite values.")
    model.load_state_dict(state)
    model.eval()
    return model, card


def load_model(path: Path | str | None = None) -> tuple[nn.Module, dict]:
    """Public API: (model in eval mode, card). path=None loads the bundled ARTICLE model.

    The model takes (N, 1, 28, 28) float32 in [0, 1] (white digit on black, as MNIST) and returns logits (N, 10).
    """
    return load_checkpoint(BUNDLED_MODEL if path is None else path)
