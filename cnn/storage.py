"""Files on the server's disk: one atomic write for every file the app saves, a free-space check, our own sentences."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

# What a write costs beyond its own bytes (zip headers, file-system blocks, the card beside a checkpoint).
WRITE_MARGIN_BYTES = 1 * 1024 * 1024


class StorageError(OSError):
    """A file could not be written; the message is a sentence for the user that names no server path."""


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object], mode: int = 0o644) -> Path:
    """Call write(stream) on a new temp file beside path, fsync it, then rename it over path.

    The temp name is unique (two processes writing the same file never share one), so a crash or a
    failed write leaves the previous file intact and no temp file behind. Raises what write or the
    disk raised (OSError, or torch's RuntimeError); the caller turns it into a sentence.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; what the app saves is meant to be read by the server's other users
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def free_bytes(folder: Path | str) -> int:
    """Bytes free for this process in folder (or in its nearest existing parent, for a folder not made yet)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_free_space(folder: Path | str, needed_bytes: int, what: str = "the file") -> None:
    """StorageError (errno ENOSPC) unless folder's disk has needed_bytes plus a margin free.

    what names the file in the sentence ("model.pt"), never its server path.
    """
    needed = int(needed_bytes) + WRITE_MARGIN_BYTES
    try:
        free = free_bytes(folder)
    except OSError:
        return  # cannot measure (odd file system): let the write itself say whether it fits
    if free < needed:
        raise StorageError(errno.ENOSPC,
                           f"the disk is full: {what} needs about {_megabytes(needed)} and only "
                           f"{_megabytes(free)} is free")


def write_problem(exc: BaseException) -> str:
    """A short clause, without any path, for why a write failed: "the disk is full", "the folder is read-only", ..."""
    if isinstance(exc, StorageError):
        return exc.strerror or "the disk refused the write"
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if code == errno.EROFS:
        return "the disk is read-only"
    if code in (errno.EACCES, errno.EPERM):
        return "the server may not write in that folder"
    if isinstance(exc, OSError):
        return "the disk refused the write"
    # torch's zip writer reports a short write (a full disk, mostly) as RuntimeError("[enforce fail at ...]").
    return "the file could not be written in full (is the disk full?)"


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def read_json_record(path: Path | str, limit: int) -> object | None:
    """The JSON a small file of ours holds, or None when it is missing, larger than limit bytes (not ours), or not
    JSON (damaged, or nested past Python's recursion limit): the caller measures again rather than trusting it."""
    path = Path(path)
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def write_json_record(path: Path | str, record: object, what: str) -> bool:
    """Keep record as indented JSON at path (atomically); False when the folder is not writable (logged with what
    it was: the caller then measures again next time, which is slower but right)."""
    text = json.dumps(record, indent=1).encode()
    try:
        atomic_write(path, lambda stream: stream.write(text))
    except OSError as exc:
        logging.getLogger(__name__).info("Could not keep %s: %s", what, exc.strerror or exc)
        return False
    return True
