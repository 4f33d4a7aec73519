"""The class's own handwriting: labelled 28x28 drawings saved as PNG files in a local folder.

The set holds digits (folders 0-9), so it is for MNIST models only (CLASS_SET_DATASET): a Fashion-MNIST model is
neither taught by it nor scored on it, and the Draw page says so (class_set_note). One set keeps one place for the
teacher to look at and delete what students saved.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .drawing import LruCache  # importing cnn.drawing also lowers Pillow's pixel limit for the PNGs read here
from .data import dataset_spec
from .explain import model_spec, with_article
from .settings import ServerSettings, server_settings
from .storage import atomic_write
from .train import evaluate

CLASS_SET_DATASET = "mnist"  # whose classes the folders 0-9 are: the set's labels are digits
_LABELS = range(dataset_spec(CLASS_SET_DATASET).num_classes)  # the folders 0-9
_SIDE = dataset_spec(CLASS_SET_DATASET).side  # every sample is _SIDE x _SIDE
SAMPLE_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}\.png")  # the names save_sample makes; nothing else is ours
_SAVE_LOCK = threading.Lock()  # count-then-write is one step, or two sessions could both take the last place
_SCORED = LruCache(4)  # (folder, its version, model key) -> (ClassSet, score)
_PREDICTED = LruCache(8)  # model key -> {sample file: predicted digit}
_SCORE_LOCK = threading.Lock()


def default_class_dir() -> Path:
    return Path(os.environ.get("CNN_CLASS_DIR", "class_data"))


class ClassSetError(ValueError):
    """A save or removal that cannot be done; the message is a sentence for the user."""


def class_set_note(dataset: str) -> str | None:
    """None when the class set is for models of dataset (a DATASETS key); else the sentence saying why it is not."""
    if dataset == CLASS_SET_DATASET:
        return None
    return (f"The class's handwriting set holds digits, so it is for {dataset_spec(CLASS_SET_DATASET).title} models: "
            f"this {dataset_spec(dataset).title} model is not scored on it, and drawings here are not added to it. "
            "Choose an MNIST model on the Train page to add to it.")


def check_class_set_model(model) -> None:
    """ValueError unless model reads the class set's dataset: a clothes model's answers on digits mean nothing."""
    if model_spec(model).name != CLASS_SET_DATASET:
        raise ValueError(class_set_note(model_spec(model).name))


@dataclass(frozen=True)
class ClassSet:
    images: np.ndarray  # (N, 28, 28) uint8, white on black
    labels: np.ndarray  # (N,) int64
    files: list[Path]


def save_sample(folder: Path, image: np.ndarray, label: int, saved_by_session: int = 0,
                settings: ServerSettings | None = None) -> Path:
    """Save one (28, 28) uint8 drawing as <folder>/<label>/<time>-<random>.png; the name is never the user's.

    saved_by_session: how many this session saved before. ClassSetError with a sentence once that reaches
    settings.class_samples_per_session, or the folder holds settings.class_samples_total drawings.
    """
    if not 0 <= int(label) <= 9:
        raise ValueError("The label must be a digit from 0 to 9.")
    image = np.asarray(image)
    if image.shape != (_SIDE, _SIDE) or image.dtype != np.uint8:
        raise ValueError("A class sample must be a 28x28 uint8 image.")
    settings = settings or server_settings()
    if saved_by_session >= settings.class_samples_per_session:
        raise ClassSetError(f"You have saved {saved_by_session} drawings, the most one student may save "
                            f"({settings.class_samples_per_session}). Thank you! Ask your teacher if you want to add more.")
    path = Path(folder) / str(int(label)) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.png"
    with _SAVE_LOCK:
        if len(sample_files(folder)) >= settings.class_samples_total:
            raise ClassSetError(f"The class set is full ({settings.class_samples_total} drawings). "
                                "Ask your teacher to remove some before saving more.")
        atomic_write(path, lambda stream: Image.fromarray(image).save(stream, format="PNG"))
    return path


def drawing_hash(image: np.ndarray) -> str:
    """A (28, 28) uint8 drawing's content hash: the same pixels, the same drawing (a double click, a redraw)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()


def label_drawing(folder: Path, image: np.ndarray, label: int | None, saves: dict[str, dict],
                  settings: ServerSettings | None = None) -> str | None:
    """A student's label for one drawing, as this session's one sample of it; returns a sentence, or None.

    saves: this session's samples, {drawing_hash: {"label": digit, "file": sample file name}}, oldest first; updated
    here. The same drawing labelled again is not saved twice (a double click); another label replaces the sample;
    label None takes it back. The per-session cap counts the samples the session has in the set now.
    ClassSetError with a sentence when the set or the session is full.
    """
    key = drawing_hash(image)
    saved = saves.get(key)
    if label is None:
        return _take_back(folder, saves, key) if saved else None
    if saved and saved["label"] == int(label):
        return None  # the same drawing with the same label: already in the set
    if saved:
        _take_back(folder, saves, key)
    path = save_sample(folder, image, label, saved_by_session=len(saves), settings=settings)
    saves[key] = {"label": int(label), "file": path.name}
    return (f"Saved as {with_article(label)} to the class's handwriting set"
            + (f" (instead of {with_article(saved['label'])})." if saved else "."))


def undo_last_save(folder: Path, saves: dict[str, dict]) -> str | None:
    """Delete this session's most recent sample (see label_drawing); a sentence, or None when there is none."""
    return _take_back(folder, saves, next(reversed(saves))) if saves else None


def _take_back(folder: Path, saves: dict[str, dict], key: str) -> str:
    saved = saves.pop(key)
    try:
        remove_sample(folder, saved["file"])
    except ClassSetError:
        pass  # the teacher removed it already: it is gone either way
    return f"Took back your {saved['label']}: it is no longer in the class's handwriting set."


def sample_files(folder: Path) -> list[Path]:
    """Every sample of ours under folder/0..9 (names save_sample made), sorted by label then name."""
    files = []
    for label in _LABELS:
        files += sorted(p for p in (Path(folder) / str(label)).glob("*.png") if SAMPLE_NAME.fullmatch(p.name))
    return files


def remove_sample(folder: Path, file_name: str) -> None:
    """Delete one sample by its file name (as ClassSet.files shows it); ClassSetError unless it is one of ours.

    file_name is checked against the names save_sample makes, so no path from a user reaches the disk.
    """
    if not isinstance(file_name, str) or not SAMPLE_NAME.fullmatch(file_name):
        raise ClassSetError("That is not the name of a saved class drawing.")
    for label in _LABELS:
        path = Path(folder) / str(label) / file_name
        if path.is_file():
            path.unlink()
            return
    raise ClassSetError("That drawing is not in the class set (someone may have removed it already).")


def reset_class_set(folder: Path) -> int:
    """Delete every sample of ours (other files are left alone); returns how many were deleted."""
    removed = 0
    for path in sample_files(folder):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # removed meanwhile by another session
    return removed


def class_set_version(folder: Path) -> tuple:
    """Changes whenever a sample is added or removed: each label folder's modification time and entry count.

    Ten stat calls and directory listings, far cheaper than reading every sample (20k samples took 5.9 s).
    """
    version = []
    for label in _LABELS:
        path = Path(folder) / str(label)
        try:
            version.append((label, path.stat().st_mtime_ns, len(os.listdir(path))))
        except OSError:
            version.append((label, None, 0))
    return tuple(version)


def _read_sample(path: Path) -> np.ndarray | None:
    """One saved sample as (28, 28) uint8, or None when it is unreadable or of another size."""
    try:
        with Image.open(path, formats=["PNG"]) as image:
            if image.size != (_SIDE, _SIDE):
                return None  # checked before decoding: a big file dropped here costs nothing
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class _DecodedSamples:
    """Decoded samples by file path, shared by every session: a new version of the folder decodes only its new
    files (a save near the 5,000 cap made every session's next rerun read all of them again: 8 s).

    Files are never rewritten (each save makes a new, unique name), so the path is the key; entries of files
    that are gone are dropped at each read, so this holds at most what the folder holds (~800 bytes each).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._arrays: dict[str, np.ndarray | None] = {}

    def read(self, paths: list[Path]) -> list[np.ndarray | None]:
        keys = [str(path) for path in paths]
        with self._lock:
            known = {key: self._arrays[key] for key in keys if key in self._arrays}
        fresh = {key: _read_sample(Path(key)) for key in keys if key not in known}  # decoded outside the lock
        with self._lock:
            self._arrays = {**known, **fresh}
        return [known[key] if key in known else fresh[key] for key in keys]


_DECODED = _DecodedSamples()


def load_class_set(folder: Path) -> ClassSet:
    """Every readable sample under folder/0..9; unreadable or odd-sized files are skipped."""
    paths = [path for label in _LABELS for path in sorted((Path(folder) / str(label)).glob("*.png"))]
    images, labels, files = [], [], []
    for path, array in zip(paths, _DECODED.read(paths)):
        if array is not None:
            images.append(array)
            labels.append(int(path.parent.name))
            files.append(path)
    if not images:
        return ClassSet(np.zeros((0, _SIDE, _SIDE), np.uint8), np.zeros((0,), np.int64), [])
    return ClassSet(np.stack(images), np.array(labels, dtype=np.int64), files)


def score_class_set(model, samples: ClassSet, known: dict[str, int] | None = None) -> dict:
    """Accuracy of model on the class's drawings, and its mistakes as (index, label, predicted).

    known: {file path: predicted digit} already computed by this model; only the other samples are run, and the
    dict is filled in (scored_class_set keeps one per model, so a new drawing costs one prediction, not 5,000).
    """
    check_class_set_model(model)
    if len(samples.labels) == 0:
        return {"n": 0, "accuracy": None, "mistakes": [], "counts": [0] * 10}
    known = {} if known is None else known
    keys = [str(path) for path in samples.files] if samples.files else [str(i) for i in range(len(samples.labels))]
    todo = [i for i, key in enumerate(keys) if key not in known]
    if todo:
        result = evaluate(model, torch.from_numpy(samples.images[todo]), torch.from_numpy(samples.labels[todo]),
                          batch_size=256)
        known.update(zip((keys[i] for i in todo), result["predictions"].tolist()))
    predicted = np.array([known[key] for key in keys], dtype=np.int64)
    wrong = predicted != samples.labels
    mistakes = [(int(i), int(samples.labels[i]), int(predicted[i])) for i in np.nonzero(wrong)[0]]
    return {"n": len(samples.labels), "accuracy": float(1.0 - wrong.mean()), "mistakes": mistakes,
            "counts": np.bincount(samples.labels, minlength=10).tolist()}


def scored_class_set(folder: Path, model, model_key: tuple) -> tuple[ClassSet, dict]:
    """(load_class_set, score_class_set) of folder, read and scored again only when the folder or the model changed,
    and then only for the drawings that are new.

    model_key names the model's version, e.g. (checkpoint path, its mtime). The result is shared by every
    session: its arrays are read-only.
    """
    key = (str(Path(folder).resolve()), class_set_version(folder), model_key)
    found, value = _SCORED.get(key)
    if not found:
        samples = load_class_set(folder)
        found, known = _PREDICTED.get(model_key)
        if not found:
            known = {}
            _PREDICTED.put(model_key, known)
        with _SCORE_LOCK:  # the dict of one model's predictions is filled in by one session at a time
            score = score_class_set(model, samples, known)
            for gone in set(known) - {str(path) for path in samples.files}:
                del known[gone]
        value = (samples, score)
        samples.images.flags.writeable = False
        samples.labels.flags.writeable = False
        _SCORED.put(key, value)
    return value


def class_set_npz(samples: ClassSet) -> bytes:
    """The class set as .npz bytes (images uint8 (N, 28, 28), labels int64), MNIST's layout, for download."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=samples.images, labels=samples.labels)
    return buffer.getvalue()
