"""A store that keeps nothing: an oversized result is replaced by its digest and size."""

from __future__ import annotations

from ...errors import ForeignPointerError
from ..pointers import Pointer, as_pointer, digest_pointer
from ._payload import Payload, digest_parts, parts_of, size_of
from .base import BlobStore

__all__ = ["DigestStore"]


class DigestStore(BlobStore):
    """Keep only ``oversize://sha256/<digest>?bytes=<n>`` for oversized results.

    Reading such a result raises ``DigestOnlyResultError``, which carries the digest and the size. Use it when
    callers only need to know that a large result was produced (or to cap result sizes in the backend).
    """

    persistent = False
    scheme = "oversize"
    zero_copy = True

    def put(self, digest: str | None, data: Payload, *, extension: str = "json") -> str:
        parts = parts_of(data)
        return digest_pointer(digest if digest is not None else digest_parts(parts), size_of(parts))

    def get(self, pointer: Pointer, *, writable: bool = False) -> bytes:
        pointer = as_pointer(pointer)
        raise ForeignPointerError(f"{pointer.raw!r} cannot be read: a DigestStore keeps no payloads.")

    def presign(self, pointer: Pointer | str, expires_in: int = 3600) -> str:
        """Always raises: a DigestStore keeps no payload to download.

        Raises:
          PresignError: always; the message says what to configure instead.
        """
        from ...errors import PresignError

        as_pointer(pointer)
        raise PresignError(
            "A DigestStore keeps only the digest of large results, so there is nothing to download: configure an "
            "S3Store or GCSStore to hand large results out by URL."
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is DigestStore

    def __hash__(self) -> int:
        return hash(DigestStore)

    def __repr__(self) -> str:
        return "DigestStore()"
