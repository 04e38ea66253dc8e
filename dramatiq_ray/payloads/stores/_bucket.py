"""What the two object stores (S3 and GCS) share: a bucket and prefix, the key layout, and refusing pointers
that name another bucket or prefix before any request is made."""

from __future__ import annotations

import copy

from ...errors import BlobNotFoundError, BlobWriteError, ConfigurationError, MissingDependencyError
from .._safe import describe_error
from ..pointers import Pointer, as_pointer, blob_name, object_pointer, parse_pointer
from ._payload import Payload, digest_parts, parts_of, size_of
from .base import CHILD_NAMES, SETTLE_ATTEMPTS, BlobStore, check_name

__all__ = ["BucketStore"]


class BucketStore(BlobStore):
    """Base class of stores that keep blobs as objects ``<scheme>://<bucket>/<prefix>/ab/cd/<digest>.<ext>``,
    named by what they hold (``.json``, ``.bin``, ``.npy``, ``.arrow``, ``.pkl``, then ``.zst``/``.gz``/``.xz``
    when compressed and ``.enc`` when encrypted).

    Raises:
      ConfigurationError: the bucket is empty, or the bucket or prefix cannot appear in a pointer (it is a
        ``ValueError``).
    """

    def __init__(self, bucket: str, prefix: str) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError(
                f"{type(self).__name__} needs a bucket name, got {bucket!r}: pass the name of an existing bucket."
            )
        if not isinstance(prefix, str):
            raise ConfigurationError(
                f"{type(self).__name__} prefix must be a string (it may be empty), got {prefix!r}."
            )
        key = "/".join(part for part in (prefix.strip("/"), blob_name("0" * 64)) if part)
        probe = object_pointer("s3", bucket, key, 0)
        try:
            parse_pointer(probe)
        except ValueError:
            raise ConfigurationError(
                f"Invalid bucket {bucket!r} or prefix {prefix!r}: use a lowercase bucket name and a prefix of "
                "letters, digits, '.', '_', '-' separated by '/'."
            ) from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def describe(self) -> str:
        return f"{type(self).__name__}(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def __repr__(self) -> str:
        return self.describe()

    def _key(self, digest: str, extension: str = "json") -> str:
        name = blob_name(digest, extension)
        return f"{self.prefix}/{name}" if self.prefix else name

    zero_copy = True

    def put(self, digest: str | None, data: Payload, *, extension: str = "json") -> str:
        parts = parts_of(data)
        key = self._key("0" * 64, extension)  # a valid extension, before anything is hashed or sent
        if digest is None:
            digest = digest_parts(parts)  # the one pass over the bytes before the upload: the key names it
        key = self._key(digest, extension)
        try:
            for _ in range(SETTLE_ATTEMPTS):
                if self._settle(key, digest, parts):
                    break
            else:
                raise BlobWriteError(
                    f"{self.describe()} could not write {key}: the object kept changing while being written "
                    f"({SETTLE_ATTEMPTS} attempts). Storing the result again retries."
                )
        except (MissingDependencyError, BlobWriteError):
            raise
        except Exception as error:
            raise BlobWriteError(f"{self.describe()} could not write {key}: {describe_error(error)}") from error
        return self._pointer(key, size_of(parts))

    def _settle(self, key: str, digest: str, parts: tuple[memoryview, ...]) -> bool:
        """Create the object, or refresh it when intact, or replace it when corrupt. Return False when it changed
        (or appeared, or vanished) between looking and writing: :meth:`put` looks again."""
        raise NotImplementedError

    # --- children: argument blobs live under <prefix>/args/ -------------------------------------------------

    def child(self, name: str) -> BucketStore:
        if name not in CHILD_NAMES:
            raise ConfigurationError(f"Unknown child store {name!r} (known: {', '.join(CHILD_NAMES)}).")
        child = copy.copy(self)  # the same settings, a deeper prefix
        child.prefix = "/".join(part for part in (self.prefix, name) if part)
        cached = {key: value for key, value in self.__dict__.items() if key.startswith("_cached")}
        child.__dict__.update(cached)  # and the same clients (copying drops them, as pickling does)
        return child

    def _outside_children(self, key: str) -> bool:
        """Whether a listed key is this store's own (not a child store's): list_blobs leaves children out."""
        return not any(
            key.startswith("/".join(part for part in (self.prefix, name) if part) + "/") for name in CHILD_NAMES
        )

    def _named_prefix(self, prefix: str) -> str:
        return self._named_key(prefix) + "/"

    def _named_key(self, name: str) -> str:
        return "/".join(part for part in (self.prefix, "named", check_name(name)) if part)

    def _pointer(self, key: str, size: int) -> str:
        return object_pointer(self.scheme, self.bucket, key, size)

    def _check_pointer(self, pointer: Pointer | str) -> Pointer:
        """Return ``pointer`` parsed; refuse, before any request, a pointer of another scheme, bucket or prefix.

        Raises:
          InvalidPointerError: it is not a pointer.
          ForeignPointerError: it names another scheme, bucket or prefix.
        """
        pointer = as_pointer(pointer)
        if pointer.scheme != self.scheme:
            raise self._refuse(pointer, f"its scheme is not {self.scheme}://")
        if pointer.bucket != self.bucket or pointer.prefix != self.prefix:
            raise self._refuse(pointer, f"it names bucket {pointer.bucket!r} and prefix {pointer.prefix!r}")
        return pointer

    @staticmethod
    def _not_found(pointer: Pointer) -> BlobNotFoundError:
        return BlobNotFoundError(
            f"The blob for {pointer.raw!r} does not exist: it was deleted (lifecycle or by hand).",
            pointer=pointer.raw,
        )
