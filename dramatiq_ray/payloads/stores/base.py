"""The blob store protocol. Stores know nothing of Dramatiq: they write bytes under a content address and read
them back by pointer.

Stores are shipped into Ray tasks, so they must pickle: they keep only configuration in attributes, build their
clients lazily and drop cached clients when pickled.
"""

from __future__ import annotations

import abc
import functools
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError, ForeignPointerError
from ..options import require_blob_store
from ..pointers import Pointer, as_pointer
from ._payload import Payload, digest_parts, join_parts, parts_of

__all__ = ["BlobInfo", "BlobStore", "check_expires_in", "check_name", "payload_digest", "put_payload"]

#: How many times a store looks at a blob again when it changed between looking and writing.
SETTLE_ATTEMPTS = 5
#: The children a store may have (see :meth:`BlobStore.child`): argument blobs live in ``args``. A store's own
#: listing leaves them out; each child lists and collects its own.
ARGS_CHILD = "args"
CHILD_NAMES = (ARGS_CHILD,)
#: The size of the pieces a stored blob is read in to hash it.
HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob, as listed for garbage collection. ``modified`` is a POSIX timestamp (seconds)."""

    name: str
    size: int
    modified: float


class BlobStore(abc.ABC):
    """Base class of blob stores.

    ``put`` is create-only, idempotent and self-healing: writing a payload that is already stored intact leaves
    the blob as it is and only refreshes its timestamp, which is what garbage collection reads (see
    :func:`dramatiq_ray.gc_blobs`). A stored blob whose size or SHA-256 does not match its content address is
    corrupt: ``put`` replaces it atomically with the payload and logs a WARNING naming the store and the blob.
    """

    #: False for stores that keep nothing (``DigestStore``); results spilled there cannot be read back.
    persistent: bool = True
    #: The pointer scheme this store writes.
    scheme: str = ""
    #: True when ``put`` also takes ``digest=None`` and a sequence of parts, and ``get`` takes ``writable=``
    #: (every store shipped with dramatiq-ray). A store of your own that leaves it False is always called as
    #: ``put(digest, data)`` with one bytes-like object, and as ``get(pointer)``.
    zero_copy: bool = False

    @abc.abstractmethod
    def put(self, digest: str | None, data: Payload) -> str:
        """Store ``data`` (whose SHA-256 is ``digest``) and return its pointer string. The stores shipped with
        dramatiq-ray also take ``extension=`` (default ``"json"``), the end of the blob's name, which says what it
        holds (see :func:`~dramatiq_ray.payloads.pointers.blob_extension`); a store whose ``put`` does not take it
        is called without it.

        ``data`` is a bytes-like object (``bytes``, ``bytearray``, ``memoryview``), or, for stores with
        :attr:`zero_copy`, a sequence of them stored back to back; it is not copied. With :attr:`zero_copy`,
        ``digest`` may be ``None``: the store computes it (the filesystem store while writing).

        When the blob exists, its size is compared with the payload's and, only when equal, its bytes are read
        and hashed: an intact blob has its timestamp refreshed, a corrupt one is replaced.

        Raises:
          BlobWriteError: the store could not be written, or (filesystem) the payload's SHA-256 is not
            ``digest``.
        """

    @abc.abstractmethod
    def get(self, pointer: Pointer) -> bytes | bytearray:
        """Return the bytes a pointer names, unverified (see
        :func:`~dramatiq_ray.payloads.stores.integrity.verify_blob`). Stores with :attr:`zero_copy` take
        ``writable=True`` and then return a ``bytearray`` the caller owns (an array can then use it as its memory).

        Raises:
          ForeignPointerError: the pointer names another store, bucket, prefix or root; nothing was requested.
          BlobNotFoundError: the blob does not exist.
          BlobReadError: the store could not be read.
        """

    def put_named(self, name: str, data: bytes) -> None:
        """Write (or overwrite) ``data`` under a well-known ``name`` (letters, digits, ``._-`` and ``/``), beside
        the content-addressed blobs. Used by the ``ray_job`` runner for a job's input and outcome. Garbage
        collection skips them on a filesystem; on S3 and GCS it removes them once older than its cutoff.

        Raises:
          ConfigurationError: this store cannot hold named objects (``DigestStore``), or the name is invalid.
          BlobWriteError: the store could not be written.
        """
        raise ConfigurationError(
            f"{self.describe()} cannot hold named objects: use FilesystemStore, S3Store or GCSStore."
        )

    def get_named(self, name: str) -> bytes | None:
        """Return what :meth:`put_named` wrote under ``name``, or ``None`` when nothing was.

        Raises:
          ConfigurationError: this store cannot hold named objects, or the name is invalid.
          BlobReadError: the store could not be read.
        """
        raise ConfigurationError(
            f"{self.describe()} cannot hold named objects: use FilesystemStore, S3Store or GCSStore."
        )

    def delete_named(self, name: str) -> None:
        """Delete what :meth:`put_named` wrote under ``name``; nothing happens when nothing was.

        Raises:
          ConfigurationError: this store cannot hold named objects, or the name is invalid.
          BlobWriteError: the store could not delete it.
        """
        raise ConfigurationError(
            f"{self.describe()} cannot hold named objects: use FilesystemStore, S3Store or GCSStore."
        )

    def list_blobs(self) -> Iterator[BlobInfo]:
        """Every blob this store holds under its root or prefix."""
        return iter(())

    def delete_blob(self, info: BlobInfo, *, cutoff: float) -> bool:
        """Delete a listed blob unless it was written or refreshed at or after ``cutoff`` (a POSIX timestamp).

        Returns whether it was deleted.
        """
        return False

    # --- children: stores beside this one (argument blobs) ------------------------------------------------------

    def child(self, name: str) -> BlobStore:
        """A store of the same kind and location, under the sub-directory or key prefix ``name``: its blobs and
        named objects are apart from this store's (argument blobs live in ``child("args")``).

        Raises:
          ConfigurationError: this store keeps nothing (``DigestStore``), or the name is invalid.
        """
        require_blob_store(self, "Argument blobs live in a child store")
        raise NotImplementedError(f"{type(self).__name__} keeps blobs but defines no child stores.")

    def list_named(self, prefix: str) -> list[str]:
        """The names written by :meth:`put_named` that start with ``prefix/``, sorted.

        Raises:
          ConfigurationError: this store cannot hold named objects, or the prefix is invalid.
          BlobReadError: the store could not be listed.
        """
        raise ConfigurationError(
            f"{self.describe()} cannot hold named objects: use FilesystemStore, S3Store or GCSStore."
        )

    def describe(self) -> str:
        """A short description for logs (never credentials)."""
        return type(self).__name__

    def _refuse(self, pointer: Pointer, why: str) -> ForeignPointerError:
        return ForeignPointerError(
            f"Refusing pointer {pointer.raw!r}: {why}. {self.describe()} only reads its own blobs; configure the "
            "store that wrote this result to read it."
        )

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if not key.startswith("_cached")}

    # --- presigned download URLs ------------------------------------------------------------------------------

    def presign(self, pointer: Pointer | str, expires_in: int = 3600) -> str:
        """A URL from which anyone holding it can download the blob a pointer names, without credentials, for
        ``expires_in`` seconds. It downloads the bytes as stored: check them against the pointer's size and
        SHA-256, then decrypt, decompress and decode them as the pointer's ``codec``, ``z`` and ``k`` say.

        Raises:
          PresignError: this store cannot make such URLs (only ``S3Store`` and ``GCSStore`` can), or its
            credentials cannot sign.
          ForeignPointerError: the pointer names another store, bucket or prefix.
          InvalidPointerError: the pointer is malformed.
          ConfigurationError: ``expires_in`` is not a whole number of seconds in the store's range.
        """
        from ...errors import PresignError

        as_pointer(pointer)
        raise PresignError(
            f"{self.describe()} cannot make download URLs: use S3Store or GCSStore to hand results out by URL, or "
            "read the value with message.get_result()."
        )


def check_expires_in(expires_in: object, maximum: int, where: str) -> int:
    """Return ``expires_in`` when it is a whole number of seconds from 1 to ``maximum``.

    Raises:
      ConfigurationError: it is not.
    """
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 1 <= expires_in <= maximum:
        raise ConfigurationError(
            f"{where}: expires_in must be a whole number of seconds from 1 to {maximum}, got {expires_in!r}."
        )
    return expires_in


_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def check_name(name: str) -> str:
    """Return ``name`` when it is a valid name for :meth:`BlobStore.put_named`.

    Raises:
      ConfigurationError: it is not (empty, absolute, ``..``, or other characters).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise ConfigurationError(f"Invalid blob name {name!r}: use letters, digits, '.', '_', '-' separated by '/'.")
    return name


def put_payload(store: BlobStore, payload: Payload, digest: str | None = None, *, extension: str = "json") -> str:
    """Store a payload (a bytes-like object or a sequence of them) with ``store.put`` and return the pointer: as
    it is to a store with :attr:`~BlobStore.zero_copy` (with ``digest`` when the caller already knows it, else
    none: the store hashes while it writes, or hashes once); as ``bytes`` and with its digest to any other store,
    as before stores took buffers. A store whose ``put`` takes ``extension=`` names the blob with it (what it
    holds, see :func:`~dramatiq_ray.payloads.pointers.blob_extension`).

    Raises:
      Exception: whatever ``store.put`` raised.
    """
    named = {"extension": extension} if _takes_extension(type(store)) else {}
    if store.zero_copy:
        return store.put(digest, payload, **named)  # type: ignore[call-arg]
    parts = parts_of(payload)
    data = join_parts(parts)
    return store.put(digest or digest_parts(parts), data if isinstance(data, bytes) else bytes(data), **named)  # type: ignore[call-arg]


@functools.lru_cache(maxsize=64)
def _takes_extension(store_type: type[BlobStore]) -> bool:
    """Whether a store class's ``put`` takes ``extension=``: a subclass overriding ``put`` the way stores did
    before blobs were named by what they hold (``put(digest, data)``) is called that way."""
    parameters = inspect.signature(store_type.put).parameters
    return "extension" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def payload_digest(payload: Payload) -> str:
    """The SHA-256 (hex) of a payload, parts back to back."""
    return digest_parts(parts_of(payload))
