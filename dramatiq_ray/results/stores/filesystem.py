"""A store on a local or shared filesystem (NFS, a mounted volume), content-addressed under one root."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Iterator

from ...errors import BlobNotFoundError, BlobReadError, BlobWriteError, ConfigurationError
from ..pointers import Pointer, blob_name, resultfs_pointer
from .base import (
    HASH_CHUNK_BYTES,
    SETTLE_ATTEMPTS,
    BlobInfo,
    BlobStore,
    check_name,
    log_repair,
    stored_blob_problem,
)

__all__ = ["FilesystemStore"]

#: Where named objects live under the root (apart from the content-addressed ``ab/cd/`` tree).
NAMED_DIR = "named"
_BLOB_FILE = re.compile(r"[0-9a-f]{64}\.json")


class FilesystemStore(BlobStore):
    """Write oversized results as files ``<root>/ab/cd/<digest>.json``.

    Pointers look like ``resultfs://sha256/<digest>?rel=ab/cd/<digest>.json&bytes=<n>``: they carry no root,
    so every host that mounts the same volume (at any path) reads them. Files are created atomically (written
    to a temporary name, fsynced, then hard-linked into place, which fails if the name exists), so readers never
    see a torn file and an intact blob is never overwritten. Writing a payload that is already stored refreshes
    the file's mtime after checking it: a file of the wrong size, or of the right size whose SHA-256 is not its
    name, is corrupt and is replaced atomically (a temporary file in the same directory, fsynced, then
    ``os.replace``), with a WARNING. A pointer can never resolve outside the root: the grammar allows no ``..``
    nor absolute path, and symlinks leading out of the root are refused.

    Parameters:
      path: The root directory, as an absolute path; created on first write.

    Raises:
      ConfigurationError: ``path`` is empty or relative.
    """

    scheme = "resultfs"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        root = os.fspath(path) if isinstance(path, str | os.PathLike) else path
        if not isinstance(root, str) or not os.path.isabs(root):
            raise ConfigurationError(
                f"FilesystemStore needs an absolute path, got {path!r}: pass an absolute path such as "
                "'/var/lib/dramatiq-ray/results'. A relative path would name another directory in every process "
                "whose working directory differs (Ray workers, job drivers), so it is refused, not resolved."
            )
        self.path = root

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
            for _ in range(SETTLE_ATTEMPTS):
                try:
                    problem = self._refresh(final, digest, len(data))
                except FileNotFoundError:
                    if self._create(final, data):
                        break
                    continue  # another writer created it meanwhile: check theirs
                if problem is not None:
                    self._replace(final, data)
                    log_repair(self, rel, problem)
                break
            else:
                raise BlobWriteError(
                    f"{self.describe()} could not write {rel}: it kept appearing and disappearing while being "
                    f"written ({SETTLE_ATTEMPTS} attempts). Storing the result again retries."
                )
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

    def delete_named(self, name: str) -> None:
        final = os.path.join(self.path, NAMED_DIR, check_name(name))
        try:
            os.remove(final)
        except FileNotFoundError:
            return
        except OSError as error:
            raise BlobWriteError(f"{self.describe()} could not delete {name}: {error}") from error
        with contextlib.suppress(OSError):  # the job's directory, once empty
            os.rmdir(os.path.dirname(final))

    def get_named(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, NAMED_DIR, check_name(name)), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BlobReadError(f"{self.describe()} could not read {name}: {error}", pointer=name) from error

    @staticmethod
    def _refresh(final: str, digest: str, size: int) -> str | None:
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

    @staticmethod
    def _write_temporary(final: str, data: bytes) -> str:
        """Write ``data`` to a new temporary file beside ``final``, fsynced; return its path."""
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return temporary

    @classmethod
    def _create(cls, final: str, data: bytes) -> bool:
        """Create the blob unless it exists; return whether this call created it."""
        temporary = cls._write_temporary(final, data)
        try:
            os.link(temporary, final)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    @classmethod
    def _replace(cls, final: str, data: bytes) -> None:
        """Replace a corrupt blob atomically: readers see the old file or the new one, never a mix."""
        temporary = cls._write_temporary(final, data)
        try:
            os.replace(temporary, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        directory = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash
        finally:
            os.close(directory)

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
        named = os.path.join(self.path, NAMED_DIR)
        for directory, subdirectories, files in os.walk(self.path):
            subdirectories.sort()
            in_named = directory == named or directory.startswith(named + os.sep)
            for name in sorted(files):
                # Blobs, a dead writer's leftovers, and named objects (ray_job outcomes): all collected by age.
                if in_named or _BLOB_FILE.fullmatch(name) or ".json.tmp-" in name:
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
