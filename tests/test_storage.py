"""cnn.storage: the one atomic write, the free-space check and the sentences for a failed write."""
import errno
import os
import shutil

import pytest

from cnn import checkpoint
from cnn.storage import StorageError, atomic_write, ensure_free_space, free_bytes, write_problem


def test_atomic_write_replaces_the_file_whole_and_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write(path, lambda stream: stream.write(b"first"))
    atomic_write(path, lambda stream: stream.write(b"second"))
    assert path.read_bytes() == b"second"
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp's 0600 would hide it from the server's other users
    assert os.listdir(path.parent) == ["file.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def half_then_fail(stream):
        stream.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["file.bin"]


def test_two_writers_get_their_own_temp_files(tmp_path):
    """Each writer's temp file is its own: a writer inside another's write does not touch its file."""
    path = tmp_path / "file.bin"
    during = []

    def outer(stream):
        stream.write(b"outer")
        atomic_write(path, lambda inner: (inner.write(b"inner"), during.extend(os.listdir(tmp_path))))

    atomic_write(path, outer)
    assert len(during) == 2 and all(name.startswith("file.bin.") and name.endswith(".tmp") for name in during)
    assert path.read_bytes() == b"outer"  # the last rename wins, whole
    assert os.listdir(tmp_path) == ["file.bin"]


def test_checkpoint_still_offers_atomic_write():
    assert checkpoint.atomic_write is atomic_write


def test_free_space_check(tmp_path, monkeypatch):
    assert free_bytes(tmp_path / "not" / "made" / "yet") == shutil.disk_usage(tmp_path).free
    ensure_free_space(tmp_path, 1)  # this disk has a byte to spare
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: real._replace(free=3 * 2**20))
    ensure_free_space(tmp_path, 1 * 2**20, what="model.pt")  # 1 MB plus the margin fits in 3 MB
    with pytest.raises(StorageError) as refused:
        ensure_free_space(tmp_path, 5 * 2**20, what="model.pt")
    assert refused.value.errno == errno.ENOSPC
    assert str(refused.value.strerror) == "the disk is full: model.pt needs about 6.0 MB and only 3.0 MB is free"
    assert str(tmp_path) not in str(refused.value)


@pytest.mark.parametrize("error, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/srv/x/model.pt"), "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system", "/srv/x/model.pt"), "the disk is read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/x/model.pt"), "the server may not write in that folder"),
    (OSError(errno.EIO, "Input/output error", "/srv/x/model.pt"), "the disk refused the write"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1280 vs 1174"),
     "the file could not be written in full (is the disk full?)"),
])
def test_write_problem_is_our_clause_without_the_path(error, words):
    assert write_problem(error) == words
