"""A store on a local or shared filesystem (NFS, a mounted volume), content-addressed under one root."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator

from ...errors import BlobNotFoundError, BlobReadError, BlobWriteError
from ..pointers import Pointer, blob_name, resultfs_pointer
from .base import BlobInfo, BlobStore, check_name

__all__ = ["FilesystemStore"]

#: Where named objects live under the root (apart from the content-addressed ``ab/cd/`` tree).
NAMED_DIR = "named"
_BLOB_FILE = re.compile(r"[0-9a-f]{64}\.json")


class FilesystemStore(BlobStore):
    """Write oversized results as files ``<root>/ab/cd/<digest>.json``.

    Pointers look like ``resultfs://sha256/<digest>?rel=ab/cd/<digest>.json&bytes=<n>``: they carry no root,
    so every host that mounts the same volume (at any path) reads them. Files are created atomically (written
    to a temporary name, then hard-linked into place, which fails if the name exists), so readers never see
    a torn file and a blob is never overwritten. A pointer can never resolve outside the root: the grammar
    allows no ``..`` nor absolute path, and symlinks leading out of the root are refused.

    Parameters:
      path: The root directory; created on first write.
    """

    scheme = "resultfs"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def describe(self) -> str:
        return f"FilesystemStore({self.path!r})"

    def __repr__(self) -> str:
        return self.describe()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilesystemStore) and other.path == self.path

    def __hash__(self) -> int:
        return hash((FilesystemStore, self.path))

    # --- writing ---------------------------------------------------------------------------------------------

    def put(self, digest: str, data: bytes) -> str:
        rel = blob_name(digest)
        final = os.path.join(self.path, rel)
        try:
            directory = os.path.dirname(final)
            os.makedirs(directory, exist_ok=True)
            self._inside_root(directory, rel)
            for _ in range(3):
                if self._touch(final, len(data)):
                    break
                if self._create(final, data):
                    break
        except (OSError, ValueError) as error:
            raise BlobWriteError(f"{self.describe()} could not write {rel}: {error}") from error
        return resultfs_pointer(digest, len(data))

    def put_named(self, name: str, data: bytes) -> None:
        final = os.path.join(self.path, NAMED_DIR, check_name(name))
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            staging = f"{final}.{uuid.uuid4().hex}.tmp"
            with open(staging, "wb") as file:
                file.write(data)
            os.replace(staging, final)
        except OSError as error:
            raise BlobWriteError(f"{self.describe()} could not write {name}: {error}") from error

    def get_named(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, NAMED_DIR, check_name(name)), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BlobReadError(f"{self.describe()} could not read {name}: {error}", pointer=name) from error

    @staticmethod
    def _touch(final: str, size: int) -> bool:
        try:
            os.utime(final)
            if os.lstat(final).st_size == size:
                return True
        except FileNotFoundError:
            return False
        # A file of the wrong size at a content address is provably corrupt (truncated by a crash or by hand):
        # it is the one case where a blob is replaced, atomically.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final)
        return False

    @staticmethod
    def _create(final: str, data: bytes) -> bool:
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, final)
                return True
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    # --- reading ---------------------------------------------------------------------------------------------

    def get(self, pointer: Pointer) -> bytes:
        if pointer.scheme != "resultfs":
            raise self._refuse(pointer, "it is not a resultfs:// pointer")
        final = os.path.join(self.path, pointer.location)
        try:
            self._inside_root(final, pointer.location)
        except ValueError as error:
            raise self._refuse(pointer, str(error)) from None
        except FileNotFoundError:
            raise BlobNotFoundError(
                f"The blob for {pointer.raw!r} does not exist in {self.describe()}: it was deleted (lifecycle "
                "or by hand) or the volume is not mounted here.",
                pointer=pointer.raw,
            ) from None
        except OSError as error:
            raise BlobReadError(
                f"{self.describe()} could not read {pointer.raw!r}: {error}", pointer=pointer.raw
            ) from error
        try:
            fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                # Never more than the file holds: a hostile bytes= must not size the read buffer.
                return handle.read(min(pointer.size, os.fstat(fd).st_size) + 1)
        except OSError as error:
            raise BlobReadError(
                f"{self.describe()} could not read {pointer.raw!r}: {error}. Reading again once the volume is "
                "available returns the value.",
                pointer=pointer.raw,
            ) from error

    def _inside_root(self, path: str, rel: str) -> None:
        root = os.path.realpath(self.path)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            raise ValueError(f"{rel} resolves outside the store root (through a symlink)")

    # --- lifecycle -------------------------------------------------------------------------------------------

    def list_blobs(self) -> Iterator[BlobInfo]:
        for directory, subdirectories, files in os.walk(self.path):
            subdirectories.sort()
            for name in sorted(files):
                if _BLOB_FILE.fullmatch(name) or ".json.tmp-" in name:
                    path = os.path.join(directory, name)
                    with contextlib.suppress(FileNotFoundError):
                        stat = os.lstat(path)
                        yield BlobInfo(os.path.relpath(path, self.path), stat.st_size, stat.st_mtime)

    def delete_blob(self, info: BlobInfo, *, cutoff: float) -> bool:
        path = os.path.join(self.path, info.name)
        if ".json.tmp-" in info.name:  # a writer that died mid-write left this
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    return True
            return False
        # Move it aside first, then look again: a writer that refreshed it meanwhile wins and it goes back.
        aside = f"{path}.gc-{uuid.uuid4().hex}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            if os.lstat(aside).st_mtime >= cutoff:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                return False
            return True
        finally:
            os.unlink(aside)
