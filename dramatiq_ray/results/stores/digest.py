"""A store that keeps nothing: an oversized result is replaced by its digest and size."""

from __future__ import annotations

from ...errors import ForeignPointerError
from ..pointers import Pointer, digest_pointer
from .base import BlobStore

__all__ = ["DigestStore"]


class DigestStore(BlobStore):
    """Keep only ``oversize://sha256/<digest>?bytes=<n>`` for oversized results.

    Reading such a result raises ``DigestOnlyResultError``, which carries the digest and the size. Use it when
    callers only need to know that a large result was produced (or to cap result sizes in the backend).
    """

    persistent = False
    scheme = "oversize"

    def put(self, digest: str, data: bytes) -> str:
        return digest_pointer(digest, len(data))

    def get(self, pointer: Pointer) -> bytes:
        raise ForeignPointerError(f"{pointer.raw!r} cannot be read: a DigestStore keeps no payloads.")

    def __eq__(self, other: object) -> bool:
        return type(other) is DigestStore

    def __hash__(self) -> int:
        return hash(DigestStore)

    def __repr__(self) -> str:
        return "DigestStore()"
