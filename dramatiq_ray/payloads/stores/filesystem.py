"""A store on a local or shared filesystem (NFS, a mounted volume), content-addressed under one root."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator

from ...errors import BlobNotFoundError, BlobReadError, BlobWriteError, ConfigurationError
from .._safe import describe_error
from ..pointers import EXTENSION_PATTERN, Pointer, as_pointer, blob_name, resultfs_pointer
from ._files import inside_root, make_directory, refresh, replace, write_temporary
from ._payload import Payload, parts_of, read_into, size_of
from .base import CHILD_NAMES, SETTLE_ATTEMPTS, BlobInfo, BlobStore, check_name
from .integrity import log_repair

__all__ = ["FilesystemStore"]

#: Where named objects live under the root (apart from the content-addressed ``ab/cd/`` tree).
NAMED_DIR = "named"
_BLOB_FILE = re.compile(rf"[0-9a-f]{{64}}\.(?:{EXTENSION_PATTERN.pattern})")
#: The largest single read(2) into a caller's buffer.
READ_CHUNK_BYTES = 64 * 1024 * 1024


class FilesystemStore(BlobStore):
    """Write oversized results as files ``<root>/ab/cd/<digest>.<ext>``, named by what they hold (``.json``,
    ``.bin``, ``.npy``, ``.arrow``, ``.pkl``, then ``.zst``/``.gz``/``.xz`` when compressed and ``.enc`` when
    encrypted; blobs written by earlier versions are all ``.json``).

    Pointers look like ``resultfs://sha256/<digest>?rel=ab/cd/<digest>.npy&bytes=<n>&codec=npy``: they carry no root,
    so every host that mounts the same volume (at any path) reads them. A payload is written once: to a
    temporary file under the root while its SHA-256 is computed (in a helper thread for payloads of 1 MiB and
    more), fsynced, then hard-linked to its content address, which fails if the name exists. So readers never see
    a torn file and an intact blob is never overwritten. Writing a payload that is already stored refreshes the
    file's mtime after checking it: a file of the wrong size, or of the right size whose SHA-256 is not its name,
    is corrupt and is replaced atomically by the temporary file (``os.replace``, then an fsync of the directory),
    with a WARNING. A pointer can never resolve outside the root: the grammar allows no ``..`` nor absolute path,
    and symlinks leading out of the root are refused.

    Parameters:
      path: The root directory, as an absolute path; created on first write.
      fsync: Whether each new blob is flushed to the disk (``fsync``) before its pointer is returned, so that a
        result reported as stored survives a power loss or a kernel crash (default). ``False`` leaves the
        flushing to the kernel (within seconds): writes then run at memory speed instead of disk speed, and a
        crash can lose the blobs of the last seconds; reading one of those raises ``BlobNotFoundError`` or
        ``BlobIntegrityError``, never wrong data.

    Raises:
      ConfigurationError: ``path`` is empty or relative, or ``fsync`` is not a bool.
    """

    scheme = "resultfs"

    zero_copy = True

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        root = os.fspath(path) if isinstance(path, str | os.PathLike) else path
        if not isinstance(root, str) or not os.path.isabs(root):
            raise ConfigurationError(
                f"FilesystemStore needs an absolute path, got {path!r}: pass an absolute path such as "
                "'/var/lib/dramatiq-ray/results'. A relative path would name another directory in every process "
                "whose working directory differs (Ray workers, job drivers), so it is refused, not resolved."
            )
        if not isinstance(fsync, bool):
            raise ConfigurationError(f"FilesystemStore fsync must be True or False, got {fsync!r}.")
        self.path = root
        self.fsync = fsync

    def describe(self) -> str:
        return f"FilesystemStore({self.path!r})"

    def __repr__(self) -> str:
        return self.describe()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilesystemStore) and other.path == self.path

    def __hash__(self) -> int:
        return hash((FilesystemStore, self.path))

    def presign(self, pointer: Pointer | str, expires_in: int = 3600) -> str:
        """Always raises: a directory has no download URLs.

        Raises:
          PresignError: always; the message says what to do instead.
        """
        from ...errors import PresignError

        as_pointer(pointer)
        raise PresignError(
            f"{self.describe()} cannot make download URLs: files have no signed URLs. Serve the directory yourself "
            "(read-only, by pointer), use S3Store or GCSStore to hand results out by URL, or read the value with "
            "message.get_result()."
        )

    # --- writing ---------------------------------------------------------------------------------------------

    def put(self, digest: str | None, data: Payload, *, extension: str = "json") -> str:
        parts = parts_of(data)
        size = size_of(parts)
        rel = "a blob"
        temporary = None
        blob_name("0" * 64, extension)  # a valid extension, before anything is written
        try:
            make_directory(self.path)
            temporary, found = write_temporary(self.path, parts, fsync=self.fsync)
            if digest is not None and found != digest:
                raise BlobWriteError(
                    f"{self.describe()} refused a {size}-byte payload: its SHA-256 is {found}, not the digest "
                    f"{digest} it was stored under, so it changed while being stored or the digest is wrong. "
                    "Nothing was stored; store the payload again, unchanged, or without a digest."
                )
            rel = blob_name(found, extension)
            final = os.path.join(self.path, rel)
            directory = os.path.dirname(final)
            make_directory(directory)
            inside_root(self.path, directory, rel)
            for _ in range(SETTLE_ATTEMPTS):
                try:
                    problem = refresh(final, found, size)
                except FileNotFoundError:
                    try:
                        os.link(temporary, final)
                    except FileExistsError:
                        continue  # another writer created it meanwhile: check theirs
                    break
                if problem is not None:
                    replace(temporary, final, fsync=self.fsync)
                    log_repair(self, rel, problem)
                break
            else:
                raise BlobWriteError(
                    f"{self.describe()} could not write {rel}: it kept appearing and disappearing while being "
                    f"written ({SETTLE_ATTEMPTS} attempts). Storing the result again retries."
                )
        except (OSError, ValueError) as error:
            raise BlobWriteError(f"{self.describe()} could not write {rel}: {describe_error(error)}") from error
        finally:
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
        return resultfs_pointer(found, size, extension)

    def put_named(self, name: str, data: bytes) -> None:
        final = os.path.join(self.path, NAMED_DIR, check_name(name))
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            staging = f"{final}.{uuid.uuid4().hex}.tmp"
            with open(staging, "wb") as file:
                file.write(data)
            os.replace(staging, final)
        except OSError as error:
            raise BlobWriteError(f"{self.describe()} could not write {name}: {describe_error(error)}") from error

    def delete_named(self, name: str) -> None:
        final = os.path.join(self.path, NAMED_DIR, check_name(name))
        try:
            os.remove(final)
        except FileNotFoundError:
            return
        except OSError as error:
            raise BlobWriteError(f"{self.describe()} could not delete {name}: {describe_error(error)}") from error
        with contextlib.suppress(OSError):  # the job's directory, once empty
            os.rmdir(os.path.dirname(final))

    def get_named(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, NAMED_DIR, check_name(name)), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BlobReadError(
                f"{self.describe()} could not read {name}: {describe_error(error)}", pointer=name
            ) from error

    # --- reading ---------------------------------------------------------------------------------------------

    def get(self, pointer: Pointer, *, writable: bool = False) -> bytes | bytearray:
        pointer = as_pointer(pointer)
        if pointer.scheme != "resultfs":
            raise self._refuse(pointer, "it is not a resultfs:// pointer")
        final = os.path.join(self.path, pointer.location)
        try:
            inside_root(self.path, final, pointer.location)
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
                f"{self.describe()} could not read {pointer.raw!r}: {describe_error(error)}", pointer=pointer.raw
            ) from error
        try:
            fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                # Never more than the file holds: a hostile bytes= must not size the read buffer.
                limit = min(pointer.size, os.fstat(fd).st_size) + 1
                return read_into(handle.readinto, limit, READ_CHUNK_BYTES) if writable else handle.read(limit)
        except OSError as error:
            raise BlobReadError(
                f"{self.describe()} could not read {pointer.raw!r}: {describe_error(error)}. Reading again once "
                "the volume is available returns the value.",
                pointer=pointer.raw,
            ) from error

    # --- children and listing named objects ------------------------------------------------------------------

    def child(self, name: str) -> FilesystemStore:
        if name not in CHILD_NAMES:
            raise ConfigurationError(f"Unknown child store {name!r} (known: {', '.join(CHILD_NAMES)}).")
        return FilesystemStore(os.path.join(self.path, name), fsync=self.fsync)

    def list_named(self, prefix: str) -> list[str]:
        top = os.path.join(self.path, NAMED_DIR, check_name(prefix))
        found: list[str] = []
        try:
            for directory, _, files in os.walk(top):
                rel = os.path.relpath(directory, os.path.join(self.path, NAMED_DIR))
                found.extend(f"{rel}/{name}" for name in files if not name.endswith(".tmp"))
        except OSError as error:
            raise BlobReadError(
                f"{self.describe()} could not list {prefix}: {describe_error(error)}", pointer=prefix
            ) from error
        return sorted(found)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def list_blobs(self) -> Iterator[BlobInfo]:
        named = os.path.join(self.path, NAMED_DIR)
        for directory, subdirectories, files in os.walk(self.path):
            subdirectories.sort()
            if directory == self.path:  # a child store (argument blobs) lists and collects its own
                subdirectories[:] = [name for name in subdirectories if name not in CHILD_NAMES]
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
