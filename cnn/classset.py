"""The class's own handwriting: labelled 28x28 drawings saved as PNG files in a local folder."""
from __future__ import annotations

import io
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .train import evaluate


def default_class_dir() -> Path:
    return Path(os.environ.get("CNN_CLASS_DIR", "class_data"))


@dataclass(frozen=True)
class ClassSet:
    images: np.ndarray  # (N, 28, 28) uint8, white on black
    labels: np.ndarray  # (N,) int64
    files: list[Path]


def save_sample(folder: Path, image: np.ndarray, label: int) -> Path:
    """Save one (28, 28) uint8 drawing as <folder>/<label>/<time>-<random>.png; the name is never the user's."""
    if not 0 <= int(label) <= 9:
        raise ValueError("The label must be a digit from 0 to 9.")
    image = np.asarray(image)
    if image.shape != (28, 28) or image.dtype != np.uint8:
        raise ValueError("A class sample must be a 28x28 uint8 image.")
    target = Path(folder) / str(int(label))
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.png"
    tmp = path.with_suffix(".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def load_class_set(folder: Path) -> ClassSet:
    """Every readable sample under folder/0..9; unreadable or odd-sized files are skipped."""
    images, labels, files = [], [], []
    for label in range(10):
        for path in sorted((Path(folder) / str(label)).glob("*.png")):
            try:
                with Image.open(path) as image:
                    array = np.asarray(image.convert("L"), dtype=np.uint8)
            except (OSError, ValueError):
                continue
            if array.shape == (28, 28):
                images.append(array)
                labels.append(label)
                files.append(path)
    if not images:
        return ClassSet(np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.int64), [])
    return ClassSet(np.stack(images), np.array(labels, dtype=np.int64), files)


def score_class_set(model, samples: ClassSet) -> dict:
    """Accuracy of model on the class's drawings, and its mistakes as (index, label, predicted)."""
    if len(samples.labels) == 0:
        return {"n": 0, "accuracy": None, "mistakes": [], "counts": [0] * 10}
    result = evaluate(model, torch.from_numpy(samples.images), torch.from_numpy(samples.labels), batch_size=256)
    predicted = result["predictions"].numpy()
    mistakes = [(i, int(samples.labels[i]), int(predicted[i])) for i in np.nonzero(predicted != samples.labels)[0]]
    return {"n": len(samples.labels), "accuracy": result["accuracy"], "mistakes": mistakes,
            "counts": np.bincount(samples.labels, minlength=10).tolist()}


def class_set_npz(samples: ClassSet) -> bytes:
    """The class set as .npz bytes (images uint8 (N, 28, 28), labels int64), MNIST's layout, for download."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=samples.images, labels=samples.labels)
    return buffer.getvalue()
