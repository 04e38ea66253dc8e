"""The file operations of :class:`~dramatiq_ray.FilesystemStore`: writing a payload so that no reader ever sees a
torn file (a temporary file, hashed on the way and fsynced, then linked or atomically replaced), checking a file
already there, and keeping every path inside the store's root."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import uuid

from ._payload import write_hashing
from .base import HASH_CHUNK_BYTES
from .integrity import stored_blob_problem

__all__ = ["inside_root", "make_directory", "refresh", "replace", "write_temporary"]

#: The largest single write(2) of a payload (Linux writes at most about 2 GiB at once).
WRITE_CHUNK_BYTES = 64 * 1024 * 1024


def write_temporary(root: str, parts: tuple[memoryview, ...], *, fsync: bool) -> tuple[str, str]:
    """Write the payload to a new temporary file under ``root``, hashing it on the way (and fsync it when
    ``fsync``); return the file's path and the payload's SHA-256."""
    temporary = os.path.join(root, f"incoming.json.tmp-{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        try:
            digest = write_hashing(parts, lambda part: _write_all(fd, part), lambda: os.fsync(fd) if fsync else None)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary, digest


def refresh(final: str, digest: str, size: int) -> str | None:
    """Refresh the mtime of an existing blob, then say what is wrong with it (``None``: it is intact).

    Raises:
      FileNotFoundError: there is no blob (any more).
    """
    os.utime(final, follow_symlinks=False)
    status = os.lstat(final)
    if not stat.S_ISREG(status.st_mode):
        return "it is not a regular file"

    def hash_stored() -> str:
        hasher = hashlib.sha256()
        with open(os.open(final, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                hasher.update(chunk)
        return hasher.hexdigest()

    return stored_blob_problem(digest, size, status.st_size, hash_stored)


def replace(temporary: str, final: str, *, fsync: bool) -> None:
    """Replace a corrupt blob atomically with the temporary file: readers see the old file or the new one, never
    a mix."""
    os.replace(temporary, final)
    if fsync:
        directory = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash
        finally:
            os.close(directory)


def inside_root(root: str, path: str, rel: str) -> None:
    """Check that ``path`` (``rel`` under ``root``) exists and resolves inside ``root``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: it resolves outside the root (through a symlink), or is the root itself.
    """
    root = os.path.realpath(root)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or real == root:
        raise ValueError(f"{rel} resolves outside the store root (through a symlink)")


def make_directory(path: str) -> None:
    """Create ``path`` unless it is a directory already (a stat, cheaper than ``makedirs``'s failing mkdir)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)


def _write_all(fd: int, view: memoryview) -> None:
    offset = 0
    while offset < view.nbytes:
        offset += os.write(fd, view[offset : offset + WRITE_CHUNK_BYTES])
